"""Run a frozen Whisper encoder once over a corpus split and keep its states on disk.

A training step of the recogniser then costs only the layers on top of the encoder. The cache of one
split is a ``datasets.Dataset`` saved with ``save_to_disk``: the split's metadata columns plus
``states`` (float16 ``[T', d_model]``, the encoder frames of the real audio only, 50 per second).
"""

import json
import math
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
    window = feature_extractor.n_samples
    pieces, owner = [], []
    for i, a in enumerate(audio):
        for start in range(0, max(len(a), 1), window):
            pieces.append(a[start : start + window])
            owner.append(i)
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
            what produced it (encoder, rows), so a cache of another encoder or size is never reused.
        encoder, feature_extractor: from :func:`load_whisper_encoder`.
        batch_size: waveforms per encoder call.
        encoder_id: a name of the encoder recorded in ``cache_info.json``.
    """
    target = Path(output) / split
    info = {"corpus": str(Path(corpus).resolve()), "split": split, "max_rows": max_rows, "encoder": encoder_id}
    info_file = target / "cache_info.json"
    if info_file.exists() and json.loads(info_file.read_text()) == info:
        return datasets.load_from_disk(str(target))
    rows = load_split(corpus, split, max_rows=max_rows, shuffle_seed=0 if max_rows else None)
    kept = [c for c in KEPT_COLUMNS if c in rows.column_names]
    d_model = encoder.config.d_model
    features = datasets.Features(
        {**{c: rows.features[c] for c in kept}, "states": datasets.Array2D(shape=(None, d_model), dtype="float16")}
    )

    def batches():
        for start in tqdm(
            range(0, len(rows), batch_size), desc=f"encoding {split}", total=math.ceil(len(rows) / batch_size)
        ):
            chunk = rows[start : start + batch_size]
            states = encode_waveforms(encoder, feature_extractor, [read_audio(cell) for cell in chunk["audio"]])
            for i, s in enumerate(states):
                yield {**{c: chunk[c][i] for c in kept}, "states": s.astype(np.float16)}

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:  # a fresh builder cache: never a stale one
        dataset = datasets.Dataset.from_generator(batches, features=features, cache_dir=scratch)
        dataset.save_to_disk(str(target))
    info_file.write_text(json.dumps(info, indent=1))
    return datasets.load_from_disk(str(target))
