"""Pauses in the audio of cached rows, found by Silero VAD and kept on disk as a column of the study's data.

Why Silero VAD (PyPI ``silero-vad``, its model shipped inside the wheel, offline): it is a maintained,
trained speech detector that holds up in the noisy splits, where a plain energy threshold (librosa's
``effects.split``, relative to the loudest frame) marks loud noise as speech and finds no pause. The cached
encoder states do not keep the audio; the corpus rows they came from are found again from the cache's own
``cache_info.json`` (corpus, split, rows subset; session segments cut at their bounds).

A pause is a gap between two detected speech segments at least ``min_pause_ms`` long; its frame is the
gap's middle on the encoder's 50 frames per second.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
import numpy as np

from ..data import SAMPLING_RATE, load_split, read_audio

ENCODER_FRAME_RATE = 50  # Whisper's encoder: 100 log-mel frames per second, conv stride 2


def silero_detector(threshold: float = 0.5, min_pause_ms: int = 150):
    """``detect(audio float32 [L] at 16 kHz) -> [(start, end), ...]`` speech segments in seconds (Silero VAD).

    Raises ImportError naming the package when ``silero-vad`` is not installed.
    """
    try:
        import torch
        from silero_vad import get_speech_timestamps, load_silero_vad
    except ImportError as error:
        raise ImportError(
            "pause-based chunk boundaries need the silero-vad package (pip install silero-vad; its model ships in "
            "the wheel)"
        ) from error
    model = load_silero_vad()

    def detect(audio: np.ndarray) -> list[tuple[float, float]]:
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            model,
            threshold=threshold,
            sampling_rate=SAMPLING_RATE,
            min_silence_duration_ms=min_pause_ms,
        )
        return [(s["start"] / SAMPLING_RATE, s["end"] / SAMPLING_RATE) for s in stamps]

    return detect


def pause_frames(speech: list[tuple[float, float]], num_frames: int, min_pause_s: float) -> list[int]:
    """Encoder frames ``[P]`` of the middles of the gaps of at least ``min_pause_s`` between speech segments.

    ``speech``: ``(start, end)`` seconds, in order; frames are clipped to ``[0, num_frames - 1]`` and unique.
    """
    out = []
    for (_, end), (start, _) in zip(speech, speech[1:]):
        if start - end >= min_pause_s:
            out.append(min(num_frames - 1, max(0, int(round((start + end) / 2 * ENCODER_FRAME_RATE)))))
    return sorted(set(out))


def cached_rows_audio(cache: str, split: str, wanted: set | None = None):
    """``(uid, audio float32 [L])`` of the rows of a cached split (those in ``wanted``, or all), found again in
    the corpus it came from.

    Reads ``cache/split/cache_info.json`` (``encoder_cache``): an utterance split is reloaded with the same
    rows subset (seed 0); a session-segment split (``"segments": true``) has each segment cut at its bounds.
    """
    info_file = Path(cache) / split / "cache_info.json"
    if not info_file.is_file():
        raise FileNotFoundError(f"{info_file} not found: pauses need the cache's record of the corpus it came from")
    info = json.loads(info_file.read_text())
    if info.get("segments"):
        rows = load_split(info["corpus"], split, info["max_sessions"], 0 if info["max_sessions"] else None)
        for row in rows:
            uids = [f"{row['uid']}/{k}" for k in range(len(row["segment_starts"]))]
            if wanted is not None and not set(uids) & wanted:
                continue
            audio = read_audio(row["audio"])
            for uid, start, end in zip(uids, row["segment_starts"], row["segment_ends"]):
                a, b = max(0, round(start * SAMPLING_RATE)), min(len(audio), round(end * SAMPLING_RATE))
                yield uid, audio[a:b]
        return
    rows = load_split(info["corpus"], split, info["max_rows"], 0 if info["max_rows"] else None)
    for index, uid in enumerate(rows["uid"]):
        if wanted is None or uid in wanted:
            yield uid, read_audio(rows[index]["audio"])


def load_pauses(
    cache: str, split: str, folder: str, uids: list[str], num_frames: list[int], settings: dict, detector=None
) -> dict[str, list[int]]:
    """uid -> pause frames of ``uids`` of a cached split, computed once and kept in ``folder/split``.

    Args:
        cache, split: the cached split (:func:`cached_rows_audio` finds its audio).
        folder: where the column lives (a ``datasets`` folder of ``uid``, ``pause_frames``, with ``info.json``
            recording the settings: other settings compute it again).
        uids, num_frames: the rows needed and their encoder frames.
        settings: ``{"min_pause_ms", "threshold"}``.
        detector: ``detect(audio) -> [(start, end) s]``; None: :func:`silero_detector` with ``settings``.
    """
    target = Path(folder) / split
    info = {"cache": str(Path(cache).resolve()), "split": split, **settings}
    if not (target / "info.json").is_file() or json.loads((target / "info.json").read_text()) != info:
        detect = detector or silero_detector(settings["threshold"], settings["min_pause_ms"])
        frames_of = dict(zip(uids, num_frames))
        found = {}
        for uid, audio in cached_rows_audio(cache, split, set(uids)):
            if uid in frames_of:
                found[uid] = pause_frames(detect(audio), frames_of[uid], settings["min_pause_ms"] / 1000)
        missing = [u for u in uids if u not in found]
        if missing:
            raise ValueError(f"{split}: {len(missing)} cached rows not found in the corpus (e.g. {missing[:3]})")
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{split}-"))
        datasets.Dataset.from_dict({"uid": list(found), "pause_frames": list(found.values())}).save_to_disk(scratch)
        (scratch / "info.json").write_text(json.dumps(info, indent=1))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(scratch, target)
        except OSError:  # another process wrote the same column meanwhile
            shutil.rmtree(scratch, ignore_errors=True)
    table = datasets.load_from_disk(str(target)).to_dict()
    column = dict(zip(table["uid"], table["pause_frames"]))
    missing = [u for u in uids if u not in column]
    if missing:
        raise ValueError(f"{target} lacks {len(missing)} rows (e.g. {missing[:3]}): delete it to compute it again")
    return {u: column[u] for u in uids}
