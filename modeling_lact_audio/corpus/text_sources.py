"""Sentences from packaged text, one domain per whole source, spelled out for the voices and deduplicated."""

import gzip
import re
from pathlib import Path

import numpy as np

from .tts_text import spell_out_for_tts

FORTUNE_DIR = Path("/usr/share/games/fortunes")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
# Poetry and literature quotes are a different register from the jokes and sayings of the other files.
HELD_OUT_FORTUNES = ("literature", "songs-poems")
# Pictures, program code and the file meant for translators are not speakable English sentences.
SKIPPED_FORTUNES = ("ascii-art", "perl", "translate-me")
TRAIN_DOMAINS = ("fortunes", "numbers")
TEST_DOMAIN = "poetry"
MIN_WORDS, MAX_WORDS = 4, 24

_ACRONYM = re.compile(r"\b[A-Z]{2,4}\b")
_UNSPEAKABLE = re.compile(r"[{}<>|\\_^~*\[\]]|\S\s{3,}\S|[0-9a-f]{6,}")
_VOWEL = re.compile(r"[aeiouy]")
# A full stop after a title ("Mr.", "St.") does not end the sentence.
_SENTENCE_END = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bSr\.)(?<=[.!?;])\s+")


def _fortune_sentences(name: str) -> list[str]:
    raw = (FORTUNE_DIR / name).read_text(encoding="utf-8", errors="ignore")
    sentences = []
    for entry in raw.split("\n%\n"):
        # Attribution lines ("-- Mark Twain") are not part of what is said.
        lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
        sentences += _SENTENCE_END.split(" ".join(ln.strip() for ln in lines))
    return sentences


def _speakable(raw: str) -> str | None:
    if _UNSPEAKABLE.search(raw) or _ACRONYM.search(raw.replace("OK", "")):
        # Acronyms are spelled out by a voice but written as one word: audio and text would disagree.
        return None
    text = spell_out_for_tts(raw)
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(not _VOWEL.search(w) for w in words):
        return None
    return text


def _clean(raw_sentences: list[str]) -> list[str]:
    return sorted({t for t in map(_speakable, raw_sentences) if t})


def fortune_names() -> list[str]:
    """Fortune files used as text. Returns: file names in sorted order."""
    names = [p.name for p in FORTUNE_DIR.iterdir() if p.is_file() and "." not in p.name]
    return sorted(n for n in names if n not in SKIPPED_FORTUNES)


def number_sentences(count: int, seed: int) -> list[str]:
    """Spoken numbers, money, times and dates from templates.

    Takes: how many templates to fill (``count``) and a ``seed``. Returns: spelled-out, distinct,
    sorted sentences (duplicates removed, so possibly fewer than ``count``).
    """
    rng = np.random.default_rng([seed, 7])
    months = "january february march april may june july august september october november december".split()
    things = "apples tickets boxes chairs letters birds pages cars files coins stamps lamps".split()
    cities = "paris denver oslo boston cairo lima tokyo dublin chicago madrid".split()

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    r = rng.integers
    templates = [
        lambda: f"The meeting moved to {pick(months)} {r(1, 29)}th, {r(1950, 2040)}.",
        lambda: f"Please call 0{r(100, 999)} {r(100, 999)} {r(1000, 9999)}.",
        lambda: f"The total comes to ${r(1, 5000)}.{r(10, 99)} including tax.",
        lambda: f"Flight {r(10, 999)} to {pick(cities)} leaves at {r(1, 12)}:{r(10, 59)}.",
        lambda: f"We counted {r(2, 100000)} {pick(things)} in the warehouse.",
        lambda: f"Room {r(100, 999)} is on the {r(2, 40)}th floor.",
        lambda: f"The temperature dropped to {r(2, 40)} degrees on {pick(months)} {r(1, 29)}th.",
        lambda: f"Chapter {r(1, 60)} starts on page {r(2, 900)}.",
        lambda: f"The train at {r(1, 12)}:0{r(1, 9)} was {r(2, 59)} minutes late.",
        lambda: f"Prices rose {r(2, 60)}.{r(1, 9)}% since {r(1950, 2025)}.",
        lambda: f"She was born in {pick(cities)} in {r(1900, 2020)} and moved {r(2, 30)} times.",
        lambda: f"Order {r(10000, 999999)} ships {pick(months)} {r(1, 29)}th"
        f" with {r(2, 500)} {pick(things)}.",
        lambda: f"The population of {pick(cities)} reached {r(1000, 9000000):,} last year.",
        lambda: f"Add {r(2, 1000)} and {r(2, 1000)} to get the answer.",
    ]
    raw = [templates[int(rng.integers(len(templates)))]() for _ in range(count)]
    return _clean(raw)


def load_domains(seed: int, number_count: int = 4000) -> dict[str, list[str]]:
    """All text domains.

    Takes: the build ``seed`` and how many number sentences to generate. Returns: domain name ->
    sorted spelled-out sentences; ``fortunes`` and ``numbers`` may be trained on, ``poetry`` never.
    A sentence found in two domains is kept only in the held-out one, so domains never share text.
    """
    poetry = _clean([s for n in HELD_OUT_FORTUNES for s in _fortune_sentences(n)])
    held = set(poetry)
    fortunes = [
        s
        for s in _clean(
            [s for n in fortune_names() if n not in HELD_OUT_FORTUNES for s in _fortune_sentences(n)]
        )
        if s not in held
    ]
    taken = held | set(fortunes)
    numbers = [s for s in number_sentences(number_count, seed) if s not in taken]
    return {"fortunes": fortunes, "numbers": numbers, TEST_DOMAIN: poetry}


def asterisk_transcripts() -> dict[str, str]:
    """Raw Asterisk prompt transcripts. Returns: prompt name (e.g. ``digits/5``) -> transcript text."""
    out = {}
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="ignore") as f:
        for line in f:
            name, sep, text = line.partition(":")
            if sep and not line.startswith(";") and text.strip():
                out[name.strip()] = text.strip()
    return out
