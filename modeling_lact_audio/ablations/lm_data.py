"""The generation study's data: audio-token sequences of the corpus' long session recordings, computed once.

The mel-RVQ ``LaCTAudioTokenizer`` (the one ``--task lm`` training fits, ``training/trainer.py``) is fitted on
the training sessions (k-means on up to ``fit_frames`` log-mel frames drawn with seed 0), then every session
of the training and the test split is tokenised whole: ``sampling_rate / hop_length`` code frames per second
(62.5 at 16 kHz and hop 256). Both are kept in ``<output>/data/tokens/<key>/`` (``audio_tokenizer/``,
``tokens.safetensors``: one ``[K, T]`` int16 tensor per session named ``<split>/<uid>``, ``meta.json``), where
``key`` hashes the settings, so every run and every process of a study reads the same codes.

One process builds the folder (it holds ``<key>.lock/claim``; a claim whose process is gone is taken over),
the others wait for it; it is written under a temporary name and renamed into place.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..data import SAMPLING_RATE, load_split, read_audio
from ..processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig
from .runner import _claim

META = "meta.json"


@dataclass
class TokenData:
    """What every run of a generation study reads.

    ``train``: ``[K, T_i]`` int16 codes per training session; ``windows``: the held-out windows ``[K,
    eval_frames]``, named in ``window_ids`` (``<uid>@<first frame>``); ``frame_rate``: code frames per second;
    ``meta``: the cache's ``meta.json``.
    """

    train: list[np.ndarray]
    windows: list[np.ndarray]
    window_ids: list[str]
    frame_rate: float
    meta: dict


def token_settings(data: dict) -> dict:
    """What the cached codes depend on (the grid's ``data`` less the cutting of windows)."""
    return {
        "corpus": str(Path(data["corpus"]).resolve()),
        "train_split": data["train_split"],
        "test_split": data["test_split"],
        "num_codebooks": data["num_codebooks"],
        "codebook_size": data["codebook_size"],
        "fit_frames": data["fit_frames"],
    }


def _build(settings: dict, folder: Path, log=print) -> None:
    start = time.time()
    config = LaCTAudioTokenizerConfig(
        backend="mel_rvq", num_codebooks=settings["num_codebooks"], codebook_size=settings["codebook_size"]
    )
    tokenizer = LaCTAudioTokenizer(config)
    train = load_split(settings["corpus"], settings["train_split"])
    log(f"fitting the mel-RVQ tokenizer (K={config.num_codebooks}, C={config.codebook_size}) on {len(train)} sessions")
    tokenizer.fit(
        (read_audio(cell) for cell in train["audio"]),
        sampling_rate=SAMPLING_RATE,
        max_frames=settings["fit_frames"],
        seed=0,
    )
    tensors, splits = {}, {}
    for split in (settings["train_split"], settings["test_split"]):
        rows = load_split(settings["corpus"], split)
        log(f"tokenising {len(rows)} sessions of {split}")
        uids, frames = [], []
        for uid, cell in zip(rows["uid"], rows["audio"]):
            codes = tokenizer.encode(torch.from_numpy(read_audio(cell)), sampling_rate=SAMPLING_RATE)[0]  # [K, T]
            tensors[f"{split}/{uid}"] = codes.to(torch.int16).contiguous()
            uids.append(uid)
            frames.append(codes.shape[1])
        splits[split] = {"uids": uids, "frames": frames}
    frame_rate = config.sampling_rate / config.hop_length
    for entry in splits.values():
        entry["seconds"] = sum(entry["frames"]) / frame_rate
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer.save_pretrained(tmp / "audio_tokenizer")
    save_file(tensors, tmp / "tokens.safetensors")
    meta = {
        "settings": settings,
        "frame_rate": frame_rate,
        "sampling_rate": config.sampling_rate,
        "hop_length": config.hop_length,
        "splits": splits,
        "build_seconds": time.time() - start,
    }
    (tmp / META).write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder)


def token_folder(data: dict, tokens_root: str, log=print, poll: float = 2.0) -> Path:
    """The cache folder of the grid's ``data`` under ``tokens_root``, built first if it is not there yet."""
    settings = token_settings(data)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(tokens_root) / key
    lock = Path(tokens_root) / f"{key}.lock"
    while not (folder / META).exists():
        if _claim(lock):
            try:
                if not (folder / META).exists():
                    _build(settings, folder, log)
            finally:
                (lock / "claim").unlink(missing_ok=True)
        else:
            time.sleep(poll)  # another process is building it
    return folder


def load_token_data(data: dict, tokens_root: str, log=print) -> TokenData:
    """The training sequences and the held-out windows of a generation grid's ``data``.

    Windows: every whole, non-overlapping window of ``eval_frames`` from the start of each test session, at
    most ``eval_windows_per_session`` of them per session (None: all).
    """
    folder = token_folder(data, tokens_root, log)
    meta = json.loads((folder / META).read_text())
    tensors = load_file(folder / "tokens.safetensors")
    train_split, test_split = data["train_split"], data["test_split"]
    train = [tensors[f"{train_split}/{u}"].numpy() for u in meta["splits"][train_split]["uids"]]
    frames, limit = data["eval_frames"], data["eval_windows_per_session"]
    windows, ids = [], []
    for uid in meta["splits"][test_split]["uids"]:
        codes = tensors[f"{test_split}/{uid}"].numpy()
        count = codes.shape[1] // frames if limit is None else min(limit, codes.shape[1] // frames)
        for i in range(count):
            windows.append(codes[:, i * frames : (i + 1) * frames])
            ids.append(f"{uid}@{i * frames}")
    if not windows:
        longest = max(meta["splits"][test_split]["frames"])
        raise ValueError(
            f"no {test_split} session holds eval_frames={frames} code frames (the longest has {longest}): "
            "lower eval_frames"
        )
    if not any(s.shape[1] >= data["train_frames"] for s in train):
        raise ValueError(f"no {train_split} session holds train_frames={data['train_frames']}: lower it")
    return TokenData(train, windows, ids, meta["frame_rate"], meta)
