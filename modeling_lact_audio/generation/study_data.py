"""The generation study's data: mel-RVQ codes of the corpus' sessions, grouped into one sequence per voice.

The corpus has no 5-minute recordings (its sessions last 1-4.5 minutes), so every sequence here is the
concatenation, in uid order, of the sessions of one voice: the speaker name up to its ``@`` (a
``engine:voice@r<rate>p<pitch>`` name keeps the voice and drops the rate and pitch setting that differs between
its sessions). Training reads the concatenations of ``sessions_train``; the held-out sequences are those of
``sessions_test_unseen`` (voices never trained on), three of which pass 5 minutes.

Codes: the mel-RVQ ``LaCTAudioTokenizer`` fitted and applied by ``ablations.lm_data.token_folder`` (K=8
codebooks of 256 by default: the best-sounding mel-RVQ of ``eval/results/audio_tokenizer/``; 62.5 frames per
second). Conditioning: each session's Resemblyzer embedding (``audio_quality.speaker_embedding``, ``[256]``),
computed once and kept next to the codes as ``speaker_embeddings.safetensors``; a sequence's vector is the
duration-weighted mean of its sessions', renormalised.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..ablations.lm_data import META, token_folder
from ..audio_quality import speaker_embedding
from ..data import load_split, read_audio
from ..processors import LaCTAudioTokenizer

EMBEDDINGS = "speaker_embeddings.safetensors"
CONDITION_DIM = 256


def data_settings(
    corpus: str = "data/corpus",
    num_codebooks: int = 8,
    codebook_size: int = 256,
    fit_frames: int = 100000,
    train_split: str = "sessions_train",
    test_split: str = "sessions_test_unseen",
) -> dict:
    """The ``data`` dict that ``ablations.lm_data.token_folder`` keys its cache on."""
    return {
        "corpus": corpus,
        "train_split": train_split,
        "test_split": test_split,
        "num_codebooks": num_codebooks,
        "codebook_size": codebook_size,
        "fit_frames": fit_frames,
    }


def voice_of(speaker: str) -> str:
    """The voice of a corpus speaker name: the part before ``@`` (``"piper:joe@r1.12p1.10"`` -> ``"piper:joe"``)."""
    return speaker.split("@", 1)[0]


@dataclass
class VoiceSequence:
    """One voice's sessions of a split, concatenated in uid order.

    ``codes [K, T]`` int16; ``uids`` and ``frames`` (per session, summing to T); ``condition [256]`` float32:
    the sessions' duration-weighted mean Resemblyzer embedding, unit norm.
    """

    voice: str
    split: str
    uids: list[str]
    frames: list[int]
    codes: np.ndarray
    condition: np.ndarray


@dataclass
class GenerationData:
    """Everything the study reads: ``train`` and ``heldout`` voice sequences, ``frame_rate`` (code frames per
    second), the token cache ``folder`` (with ``audio_tokenizer/``) and its ``meta``."""

    train: list[VoiceSequence]
    heldout: list[VoiceSequence]
    frame_rate: float
    folder: Path
    meta: dict
    corpus: str = ""
    hop_length: int = 256
    _tokenizer: LaCTAudioTokenizer | None = field(default=None, repr=False)

    def tokenizer(self) -> LaCTAudioTokenizer:
        """The fitted mel-RVQ tokenizer of the cached codes (loaded once)."""
        if self._tokenizer is None:
            self._tokenizer = LaCTAudioTokenizer.from_pretrained(str(self.folder / "audio_tokenizer"))
        return self._tokenizer

    def decode(self, codes) -> np.ndarray:
        """16 kHz float32 audio ``[(T - 1) * hop_length]`` of codes ``[K, T]`` (the tokenizer's Griffin-Lim decoder)."""
        ids = torch.as_tensor(np.asarray(codes, dtype=np.int64))[None]
        return self.tokenizer().decode(ids)[0].detach().float().numpy().reshape(-1)

    def audio(self, sequence: VoiceSequence, start: int, stop: int) -> np.ndarray:
        """The original 16 kHz audio ``[(stop - start) * hop_length]`` float32 under frames ``[start, stop)`` of
        ``sequence`` (each session's audio cut or zero-padded to its frames x hop_length samples)."""
        rows = load_split(self.corpus, sequence.split)
        index = {uid: i for i, uid in enumerate(rows["uid"])}
        pieces, offset = [], 0
        for uid, n in zip(sequence.uids, sequence.frames):
            if offset + n > start and offset < stop:
                wave = read_audio(rows[index[uid]]["audio"])[: n * self.hop_length]
                wave = np.pad(wave, (0, n * self.hop_length - len(wave)))
                lo, hi = max(start - offset, 0), min(stop - offset, n)
                pieces.append(wave[lo * self.hop_length : hi * self.hop_length])
            offset += n
        return np.concatenate(pieces).astype(np.float32)


def session_embeddings(folder: Path, data: dict, log=print) -> dict[str, np.ndarray]:
    """``{"<split>/<uid>": [256] float32}``: the Resemblyzer embedding of every session of the cache's splits,
    computed once into ``folder / speaker_embeddings.safetensors`` (written under a temporary name)."""
    path = Path(folder) / EMBEDDINGS
    if not path.exists():
        tensors = {}
        for split in (data["train_split"], data["test_split"]):
            rows = load_split(data["corpus"], split)
            log(f"speaker embeddings of {len(rows)} sessions of {split}")
            for uid, cell in tqdm(list(zip(rows["uid"], rows["audio"])), desc=f"embeddings {split}"):
                tensors[f"{split}/{uid}"] = torch.from_numpy(speaker_embedding(read_audio(cell)).astype(np.float32))
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        save_file(tensors, tmp)
        os.replace(tmp, path)
    return {k: v.numpy() for k, v in load_file(path).items()}


def voice_sequences(corpus: str, split: str, tensors: dict, embeddings: dict, uids: list[str]) -> list[VoiceSequence]:
    """One :class:`VoiceSequence` per voice of ``split`` (voices in order of first appearance), from the cached
    codes ``tensors["<split>/<uid>"] [K, T]`` and the session ``embeddings``."""
    rows = load_split(corpus, split)
    speaker = dict(zip(rows["uid"], rows["speaker"]))
    groups: dict[str, list[str]] = {}
    for uid in sorted(uids):
        groups.setdefault(voice_of(speaker[uid]), []).append(uid)
    out = []
    for voice, members in groups.items():
        codes = [tensors[f"{split}/{u}"].numpy() for u in members]
        frames = [c.shape[1] for c in codes]
        mean = sum(n * embeddings[f"{split}/{u}"] for u, n in zip(members, frames)).astype(np.float32)
        mean /= max(float(np.linalg.norm(mean)), 1e-8)
        out.append(VoiceSequence(voice, split, members, frames, np.concatenate(codes, axis=1), mean))
    return out


def load_generation_data(data: dict, tokens_root: str = "cache/generation_tokens", log=print) -> GenerationData:
    """The study's voice sequences of ``data`` (:func:`data_settings`), the codes and embeddings cached under
    ``tokens_root`` (built there first when missing)."""
    folder = token_folder(data, tokens_root, log)
    meta = json.loads((folder / META).read_text())
    embeddings = session_embeddings(folder, data, log)
    tensors = load_file(folder / "tokens.safetensors")
    train_split, test_split = data["train_split"], data["test_split"]
    train = voice_sequences(data["corpus"], train_split, tensors, embeddings, meta["splits"][train_split]["uids"])
    heldout = voice_sequences(data["corpus"], test_split, tensors, embeddings, meta["splits"][test_split]["uids"])
    return GenerationData(
        train, heldout, meta["frame_rate"], folder, meta, corpus=data["corpus"], hop_length=meta["hop_length"]
    )
