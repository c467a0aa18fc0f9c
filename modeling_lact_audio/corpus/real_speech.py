"""Recorded human speech with transcripts: Asterisk's prompts and pocketsphinx's test recordings."""

import re
from pathlib import Path

from .text_sources import asterisk_transcripts
from .tts_text import spell_out_for_tts

ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")


def _asterisk(limit: int | None) -> list[dict]:
    items = []
    for name, raw in sorted(asterisk_transcripts().items()):
        path = ASTERISK_DIR / f"{name}.wav"
        # Bracketed transcripts describe tones, not words; an ellipsis or quote is not a word either.
        if "[" in raw or not path.exists():
            continue
        text = spell_out_for_tts(raw)
        if text:
            items.append(dict(path=str(path), text=text, speaker="asterisk:allison", domain="telephony"))
    return items[:limit]


def _pocketsphinx(limit: int | None) -> list[dict]:
    items = []
    for folder, listing, domain in (
        ("librivox", "transcription", "audiobook"),
        ("cards", "cards.transcription", "cards"),
    ):
        for line in (POCKETSPHINX_DIR / folder / listing).read_text().splitlines():
            match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((\S+)\)\s*$", line)
            if match:
                text = spell_out_for_tts(match.group(1))
                path = POCKETSPHINX_DIR / folder / f"{match.group(2)}.wav"
                items.append(dict(path=str(path), text=text, speaker=f"pocketsphinx:{folder}", domain=domain))
    return items[: None if limit is None else max(1, limit // 2)]


def real_utterances(limit: int | None) -> list[dict]:
    """Items for ``test_real``.

    Takes: at most ``limit`` Asterisk prompts (None: all). Returns: dicts with uid, path, text (spelled out),
    speaker, engine ("human"), accent, domain, condition ("clean") and snr_db (None).
    """
    items = _asterisk(limit) + _pocketsphinx(limit)
    for i, item in enumerate(items):
        item.update(uid=f"test_real-{i:06d}", engine="human", accent="en-us", condition="clean", snr_db=None)
    return items
