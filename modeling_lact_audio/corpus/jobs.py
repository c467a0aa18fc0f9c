"""One build job (a few utterances or one session) turned into rows, saved atomically as a shard."""

import io
import os
import zlib

import numpy as np
import soundfile as sf

from ..data import SAMPLING_RATE
from .dataset import shard_path, write_shard
from .engines import read_resampled, synthesize
from .noise import (
    TEST_RECORDINGS,
    TRAIN_RECORDINGS,
    babble_bank,
    babble_noise,
    colored_noise,
    measure_snr,
    mix_at_snr,
    recorded_noise,
)
from .sessions import build_session
from .voices import speaker_from_id

ROW_KEYS = (
    "uid",
    "text",
    "speaker",
    "engine",
    "accent",
    "condition",
    "snr_db",
    "domain",
    "session_id",
    "utterance_index",
)


def item_rng(seed: int, uid: str) -> np.random.Generator:
    """The random stream of one example. Takes: the build ``seed`` and the ``uid``. Returns: a Generator."""
    return np.random.default_rng([seed, zlib.crc32(uid.encode())])


def quantize(audio: np.ndarray) -> np.ndarray:
    """16-bit PCM as stored. Takes: float32 [T] in [-1, 1]. Returns: int16 [T]."""
    return np.round(np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


def encode_flac(pcm: np.ndarray) -> bytes:
    """Takes: int16 [T] at 16 kHz. Returns: the FLAC file as bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, pcm, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def make_noise(condition: str, split: str, length: int, rng: np.random.Generator, plan: dict) -> np.ndarray:
    """Noise of one condition. Takes: condition name, the split, ``length``, a generator and the plan
    (for babble). Returns: float32 [length]."""
    if condition in ("white", "pink", "brown"):
        return colored_noise(condition, length, rng)
    if condition == "real":
        return recorded_noise(TEST_RECORDINGS if split.startswith("test") else TRAIN_RECORDINGS, length, rng)
    if condition == "babble":
        return babble_noise(
            babble_bank(plan["babble_text"], plan["seed"], plan["sizes"]["babble_clips"]), length, rng
        )
    raise ValueError(f"unknown noise condition {condition!r}")


def _row(item: dict, pcm: np.ndarray, starts, ends, texts, measured) -> dict:
    row = {k: item[k] for k in ROW_KEYS}
    row.update(
        audio={"bytes": encode_flac(pcm), "path": f"{item['uid']}.flac"},
        duration=len(pcm) / SAMPLING_RATE,
        segment_starts=starts,
        segment_ends=ends,
        segment_texts=texts,
        snr_measured_db=measured,
    )
    return row


def _utterance_rows(job: dict, plan: dict) -> list[dict]:
    items = job["items"]
    clean = synthesize([(speaker_from_id(it["speaker"]), it["text"]) for it in items])
    rows = []
    for item, speech in zip(items, clean):
        audio, measured = speech, None
        if item["condition"] != "clean":
            noise = make_noise(
                item["condition"], job["split"], len(speech), item_rng(plan["seed"], item["uid"]), plan
            )
            audio = mix_at_snr(speech, noise, item["snr_db"])
        pcm = quantize(audio)
        if item["condition"] != "clean":
            # Measured on the stored 16-bit samples, so quantisation and clipping protection are included.
            measured = measure_snr(pcm / 32767.0, speech)
        dur = len(pcm) / SAMPLING_RATE
        rows.append(_row(item, pcm, [0.0], [dur], [item["text"]], measured))
    return rows


def _real_rows(job: dict) -> list[dict]:
    rows = []
    for item in job["items"]:
        pcm = quantize(read_resampled(item["path"]))
        rows.append(_row(item, pcm, [0.0], [len(pcm) / SAMPLING_RATE], [item["text"]], None))
    return rows


def _session_rows(job: dict, plan: dict) -> list[dict]:
    audio, texts, starts, ends = build_session(
        speaker_from_id(job["speaker"]),
        job["candidates"],
        job["target_s"],
        item_rng(plan["seed"], job["job_id"]),
    )
    item = dict(
        uid=job["job_id"],
        text=" ".join(texts),
        speaker=job["speaker"],
        engine=job["engine"],
        accent=job["accent"],
        condition="clean",
        snr_db=None,
        domain=job["domain"],
        session_id=job["job_id"],
        utterance_index=0,
    )
    return [_row(item, quantize(audio), starts, ends, texts, None)]


def run_job(job: dict, plan: dict, shard_dir: str) -> str:
    """Build one job and save its rows as a shard.

    Takes: the ``job`` (from the plan), the ``plan`` and the shard folder. Returns: the job id. The shard
    appears under its final name only when complete (written to a temporary name, then renamed), so an
    interrupted build leaves either the whole shard or none of it.
    """
    if job["kind"] == "utterances":
        rows = _utterance_rows(job, plan)
    elif job["kind"] == "real":
        rows = _real_rows(job)
    else:
        rows = _session_rows(job, plan)
    final = shard_path(shard_dir, job["job_id"])
    partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
    write_shard(rows, partial)
    with open(partial, "rb") as f:
        os.fsync(f.fileno())
    os.replace(partial, final)
    return job["job_id"]
