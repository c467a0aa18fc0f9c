"""Run a frozen Whisper encoder once over a corpus split and keep its states on disk.

A training step of the recogniser then costs only the layers on top of the encoder. The cache of one
split is a ``datasets.Dataset`` saved with ``save_to_disk``: the split's metadata columns plus
``states`` (float16 ``[T', d_model]``, the encoder frames of the real audio only, 50 per second).
A session split (one long recording per row) can instead be cached one row per utterance segment
(:func:`cache_session_segments`), so that a session is evaluated utterance by utterance with a carried state.
"""

import json
import math
import shutil
import tempfile
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..data import SAMPLING_RATE, load_split, read_audio

KEPT_COLUMNS = (
    "uid",
    "text",
    "speaker",
    "condition",
    "snr_db",
    "domain",
    "engine",
    "accent",
    "duration",
    "session_id",
    "utterance_index",
)


def encoder_output_lengths(mel_frames):
    """Encoder frames for ``mel_frames`` log-mel frames (int or LongTensor): Whisper's second conv has stride 2."""
    return (mel_frames - 1) // 2 + 1


@torch.inference_mode()
def encode_waveforms(
    encoder: WhisperEncoder, feature_extractor: WhisperFeatureExtractor, audio: list[np.ndarray]
) -> list[np.ndarray]:
    """Encoder states of each waveform, the padding of Whisper's 30 s window cut off.

    Args:
        encoder: a pretrained ``WhisperEncoder`` in eval mode.
        feature_extractor: Whisper's feature extractor (log-mel ``[B, 80, 3000]``, zero-padded to 30 s).
        audio: 16 kHz float32 waveforms. One longer than the window is encoded in consecutive
            windows whose states are concatenated (the encoder never sees more than 30 s at once).

    Returns:
        one float32 array ``[T'_i, d_model]`` per waveform, 50 frames per second of audio.
    """
    from ..asr import split_windows

    pieces, owner = split_windows(audio, feature_extractor.n_samples)
    features = feature_extractor(pieces, sampling_rate=SAMPLING_RATE, return_tensors="pt", return_attention_mask=True)
    states = encoder(features["input_features"].to(encoder.dtype)).last_hidden_state.float()
    lengths = encoder_output_lengths(features["attention_mask"].sum(-1))
    out = [[] for _ in audio]
    for i, s, n in zip(owner, states, lengths):
        out[i].append(s[: int(n)].numpy())
    return [np.concatenate(parts) for parts in out]


def load_whisper_encoder(folder: str) -> tuple[WhisperEncoder, WhisperFeatureExtractor]:
    """The encoder (eval mode, float32) and feature extractor of a transformers Whisper folder."""
    from ..asr import load_whisper

    return load_whisper(folder).get_encoder().eval(), WhisperFeatureExtractor.from_pretrained(folder)


def cache_split(
    corpus: str,
    split: str,
    output: str,
    encoder: WhisperEncoder,
    feature_extractor: WhisperFeatureExtractor,
    max_rows: int | None = None,
    batch_size: int = 8,
    encoder_id: str = "",
) -> datasets.Dataset:
    """Encode one split and save it to ``output/split`` (returns it; reuses a complete cache already there).

    Args:
        corpus, split, max_rows: passed to :func:`modeling_lact_audio.data.load_split` (a subset is a
            fixed random one, seed 0).
        output: the cache folder; ``output/split`` holds the dataset, ``output/split/cache_info.json``
            what produced it (encoder, rows), so a cache of another encoder or size is never reused;
            a cache of a smaller ``max_rows`` subset of the same split is grown: only the new rows are encoded;
            a cache of the whole split serves any ``max_rows`` at or above the split's size.
        encoder, feature_extractor: from :func:`load_whisper_encoder`.
        batch_size: waveforms per encoder call.
        encoder_id: a name of the encoder recorded in ``cache_info.json``.
    """
    target = Path(output) / split
    info = {"corpus": str(Path(corpus).resolve()), "split": split, "max_rows": max_rows, "encoder": encoder_id}
    info_file = target / "cache_info.json"
    old = json.loads(info_file.read_text()) if info_file.exists() else None
    if old == info:
        return datasets.load_from_disk(str(target))
    rows = load_split(corpus, split, max_rows=max_rows, shuffle_seed=0 if max_rows else None)
    if old is not None:  # e.g. the whole split asked for with max_rows >= its size: the same rows, in order
        size = len(load_split(corpus, split))
        if _as_whole_split(old, size) == _as_whole_split(info, size):
            return datasets.load_from_disk(str(target))
    kept_rows = _reusable_rows(old, info, len(rows))
    previous = datasets.load_from_disk(str(target)) if kept_rows else None
    if previous is not None and previous["uid"] != rows.select(range(kept_rows))["uid"]:
        previous, kept_rows = None, 0  # the corpus changed under the cache: encode everything again
    kept = [c for c in KEPT_COLUMNS if c in rows.column_names]
    d_model = encoder.config.d_model
    features = datasets.Features(
        {**{c: rows.features[c] for c in kept}, "states": datasets.Array2D(shape=(None, d_model), dtype="float16")}
    )

    def batches():
        if previous is not None:
            yield from previous.with_format("numpy", columns=["states"], output_all_columns=True)
        for start in tqdm(
            range(kept_rows, len(rows), batch_size),
            desc=f"encoding {split}",
            total=math.ceil((len(rows) - kept_rows) / batch_size),
        ):
            chunk = rows[start : start + batch_size]
            states = encode_waveforms(encoder, feature_extractor, [read_audio(cell) for cell in chunk["audio"]])
            for i, s in enumerate(states):
                yield {**{c: chunk[c][i] for c in kept}, "states": s.astype(np.float16)}

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:  # a fresh builder cache: never a stale one
        dataset = datasets.Dataset.from_generator(batches, features=features, cache_dir=scratch)
        staged = Path(scratch) / "staged"
        dataset.save_to_disk(str(staged))  # the old cache is read until here: replace it only now
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staged), str(target))
    info_file.write_text(json.dumps(info, indent=1))
    return datasets.load_from_disk(str(target))


def _as_whole_split(info: dict, split_size: int) -> dict:
    """``cache_info`` with ``max_rows`` at or above the split's size written as None: ``load_split`` then
    returns the whole split in its own order, the same rows as no ``max_rows`` at all."""
    max_rows = info.get("max_rows")
    return {**info, "max_rows": None if max_rows is None or max_rows >= split_size else max_rows}


def _reusable_rows(old: dict | None, new: dict, rows: int) -> int:
    """Rows of an existing cache (``cache_info.json`` ``old``) that a cache ``new`` of ``rows`` rows starts with.

    A fixed random subset of ``max_rows`` rows (seed 0) begins with every smaller one of the same split, so a
    cache grown from 2500 to 5000 rows encodes only the 2500 new ones; anything else is encoded again.
    """
    if old is None or old.get("max_rows") is None:
        return 0
    same_source = {k: v for k, v in old.items() if k != "max_rows"} == {k: v for k, v in new.items() if k != "max_rows"}
    return old["max_rows"] if same_source and old["max_rows"] < rows else 0


SESSION_COLUMNS = ("uid", "audio", "segment_starts", "segment_ends", "segment_texts")


def _check_segments(sessions: datasets.Dataset) -> None:
    """Refuse, before anything is encoded, a session whose segment lists disagree in length or whose segment
    is empty or lies outside the recording (by the ``duration`` column, when the split has one)."""
    columns = ["uid", "segment_starts", "segment_ends", "segment_texts"]
    columns += ["duration"] if "duration" in sessions.column_names else []
    for row in sessions.select_columns(columns):
        starts, ends, texts = row["segment_starts"], row["segment_ends"], row["segment_texts"]
        if not len(starts) == len(ends) == len(texts):
            raise ValueError(
                f"session {row['uid']!r}: segment_starts, segment_ends and segment_texts must have one entry per "
                f"segment, got {len(starts)}, {len(ends)}, {len(texts)}"
            )
        duration = row.get("duration")
        for k, (start, end) in enumerate(zip(starts, ends)):
            if not (0 <= start < end and (duration is None or end <= duration + 1 / SAMPLING_RATE)):
                raise ValueError(
                    f"session {row['uid']!r}, segment {k}: [{start}, {end}] s is not a segment of the {duration} s "
                    "recording (a segment needs 0 <= start < end <= duration)"
                )


def _segment_bounds(row: dict, n_samples: int) -> list[tuple[int, int]]:
    """Sample ranges ``[a, b)`` of a session row's segments (seconds rounded to samples, clipped to the audio)."""
    bounds = []
    for k, (start, end) in enumerate(zip(row["segment_starts"], row["segment_ends"])):
        a, b = max(0, round(start * SAMPLING_RATE)), min(n_samples, round(end * SAMPLING_RATE))
        if not b > a:
            raise ValueError(
                f"session {row['uid']!r}, segment {k}: [{start}, {end}] s holds no audio of the "
                f"{n_samples / SAMPLING_RATE:.3f} s recording (its duration column is wrong)"
            )
        bounds.append((a, b))
    return bounds


def cache_session_segments(
    corpus: str,
    split: str,
    output: str,
    encoder: WhisperEncoder,
    feature_extractor: WhisperFeatureExtractor,
    max_sessions: int | None = None,
    batch_size: int = 8,
    encoder_id: str = "",
) -> datasets.Dataset:
    """Encode a session split one utterance segment at a time and save it to ``output/split``.

    Each session row (a long recording with ``segment_starts``, ``segment_ends`` in seconds and
    ``segment_texts``) becomes one row per segment: its audio cut at ``[start, end)`` and encoded alone
    (:func:`encode_waveforms`), so the rows read like an utterance split's cache and a session can be
    replayed utterance by utterance with a carried ``LaCTCache``. Rows come in session order (the split's,
    or the fixed random subset's), then segment order.

    Columns: ``uid`` (``"{session uid}/{k}"``), ``text`` (the segment's), ``duration`` (the segment's, s),
    ``session_id`` (the session's ``uid``), ``utterance_index`` (``k``), the session's ``speaker``,
    ``condition``, ``snr_db``, ``domain``, ``engine``, ``accent`` (those the split has) and ``states``
    (float16 ``[T'_k, d_model]``).

    Args:
        corpus, split: passed to :func:`modeling_lact_audio.data.load_split` (e.g. ``"sessions_test_seen"``).
        output: the cache folder; ``output/split/cache_info.json`` records what produced it, with
            ``"segments": true``, so neither this cache nor a :func:`cache_split` cache of the same split
            (one row per whole recording) is ever reused for the other.
        max_sessions: a fixed random subset of sessions (seed 0), as ``max_rows`` of :func:`cache_split`.
        encoder, feature_extractor: from :func:`load_whisper_encoder`.
        batch_size: segments per encoder call.
        encoder_id: a name of the encoder recorded in ``cache_info.json``.

    Returns:
        the saved dataset (a complete cache already there with the same ``cache_info.json`` is reused).

    Raises:
        ValueError: the split lacks a session column (``uid``, ``audio``, ``segment_*``), or a session's
            segment lists disagree in length or a segment lies outside its recording.
    """
    target = Path(output) / split
    info = {
        "corpus": str(Path(corpus).resolve()),
        "split": split,
        "max_sessions": max_sessions,
        "encoder": encoder_id,
        "segments": True,
    }
    info_file = target / "cache_info.json"
    if info_file.exists() and json.loads(info_file.read_text()) == info:
        return datasets.load_from_disk(str(target))
    rows = load_split(corpus, split, max_rows=max_sessions, shuffle_seed=0 if max_sessions else None)
    missing = [c for c in SESSION_COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(
            f"split {split!r} of {corpus!r} is not a session split: it lacks {missing} (session splits are the "
            "sessions_* ones; cache utterance splits with cache_split)"
        )
    _check_segments(rows)
    derived = ("uid", "text", "duration", "session_id", "utterance_index")
    copied = [c for c in KEPT_COLUMNS if c not in derived and c in rows.column_names]
    d_model = encoder.config.d_model
    features = datasets.Features(
        {
            "uid": datasets.Value("string"),
            "text": datasets.Value("string"),
            **{c: rows.features[c] for c in copied},
            "duration": datasets.Value("float64"),
            "session_id": datasets.Value("string"),
            "utterance_index": datasets.Value("int32"),
            "states": datasets.Array2D(shape=(None, d_model), dtype="float16"),
        }
    )
    sessions = rows.select_columns(list(SESSION_COLUMNS) + copied)

    def segments():
        for index in tqdm(range(len(sessions)), desc=f"encoding {split} segments"):
            row = sessions[index]
            audio = read_audio(row["audio"])
            bounds = _segment_bounds(row, len(audio))
            for first in range(0, len(bounds), batch_size):
                batch = bounds[first : first + batch_size]
                states = encode_waveforms(encoder, feature_extractor, [audio[a:b] for a, b in batch])
                for k, (a, b), s in zip(range(first, first + len(batch)), batch, states):
                    yield {
                        "uid": f"{row['uid']}/{k}",
                        "text": row["segment_texts"][k],
                        **{c: row[c] for c in copied},
                        "duration": (b - a) / SAMPLING_RATE,
                        "session_id": row["uid"],
                        "utterance_index": k,
                        "states": s.astype(np.float16),
                    }

    target.mkdir(parents=True, exist_ok=True)
    info_file.unlink(missing_ok=True)  # an interrupted run must not leave an old record over new rows
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:  # a fresh builder cache: never a stale one
        dataset = datasets.Dataset.from_generator(segments, features=features, cache_dir=scratch)
        dataset.save_to_disk(str(target))
    info_file.write_text(json.dumps(info, indent=1))
    return datasets.load_from_disk(str(target))
