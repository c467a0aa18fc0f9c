"""Corpus rows to model batches: audio decoding, length-bucketed batch plans, one collator per model family.

Every ``--model`` sees the same utterances in the same batches: a batch plan depends only on the
seed, the epoch and the utterance durations (counted in 10 ms frames), never on the model.
"""

import math
from dataclasses import dataclass

import datasets
import numpy as np
import torch

from modeling_lact_audio.data import SAMPLING_RATE, durations, load_split, read_audio  # noqa: F401  (re-exported)

FRAMES_PER_SECOND = 100  # the budget unit of max_frames_per_batch: 10 ms log-mel frames


def plan_batches(
    lengths: np.ndarray, max_frames: int, max_batch: int, seed: int, epoch: int, window_batches: int = 50
) -> list[list[int]]:
    """Length-bucketed batches of one epoch: ``lengths [N]`` in frames -> lists of row indices.

    Rows are shuffled with ``(seed, epoch)``, sorted by length inside windows of ``window_batches *
    max_batch`` rows, packed while ``rows * longest <= max_frames`` and ``rows <= max_batch``, and the
    batches are shuffled again. A pure function: a resumed run rebuilds exactly the same plan.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = max(1, window_batches * max_batch)
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batch, longest = [], 0
        for i in chunk:
            new_longest = max(longest, lengths[i])
            if batch and ((len(batch) + 1) * new_longest > max_frames or len(batch) >= max_batch):
                batches.append(batch)
                batch, new_longest = [], lengths[i]
            batch.append(int(i))
            longest = new_longest
        if batch:
            batches.append(batch)
    return [batches[i] for i in rng.permutation(len(batches))]


class DataState:
    """Where the run is in its data: ``epoch`` and ``step_in_epoch`` (optimizer steps into that epoch's plan).

    Registered with ``accelerator.register_for_checkpointing``, so ``save_state`` / ``load_state`` carry it.
    """

    def __init__(self):
        self.epoch, self.step_in_epoch, self.completed_steps = 0, 0, 0
        self.best_metric: float | None = None

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class BatchStream:
    """Micro-batches of row indices for one process: ``next_step()`` -> ``gradient_accumulation_steps`` lists.

    Optimizer step ``s`` of an epoch uses plan batches ``[s * A * W, (s + 1) * A * W)`` (``A``
    accumulation steps, ``W`` processes); process ``r`` takes every ``W``-th one from ``r``. The tail of
    an epoch that cannot fill a whole step is dropped.
    """

    def __init__(self, lengths, max_frames, max_batch, seed, window_batches, accumulation, world, rank, state):
        self.lengths, self.max_frames, self.max_batch = lengths, max_frames, max_batch
        self.seed, self.window_batches = seed, window_batches
        self.accumulation, self.world, self.rank, self.state = accumulation, world, rank, state
        self._plan_epoch, self._plan = None, None

    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        if self._plan_epoch != epoch:
            self._plan = plan_batches(
                self.lengths, self.max_frames, self.max_batch, self.seed, epoch, self.window_batches
            )
            self._plan_epoch = epoch
        return self._plan

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self._epoch_plan(epoch)) // (self.accumulation * self.world)

    def next_step(self) -> list[list[int]]:
        """Advance ``state`` by one optimizer step and return this process's micro-batches for it."""
        state = self.state
        if self.steps_in_epoch(state.epoch) == 0:
            raise ValueError(
                f"one epoch makes {len(self._epoch_plan(state.epoch))} batches, fewer than one optimizer step needs "
                f"(gradient_accumulation_steps={self.accumulation} x {self.world} processes): lower "
                "max_frames_per_batch / max_batch_size or use more training rows"
            )
        while state.step_in_epoch >= self.steps_in_epoch(state.epoch):
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
        plan = self._epoch_plan(state.epoch)
        first = state.step_in_epoch * self.accumulation * self.world
        micro = [plan[first + a * self.world + self.rank] for a in range(self.accumulation)]
        state.step_in_epoch += 1
        return micro


def _pad_labels(ids: list[list[int]]) -> torch.Tensor:
    longest = max(1, max(len(x) for x in ids))
    out = torch.full((len(ids), longest), -100, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return out


@dataclass
class CTCCollator:
    """Rows -> ``input_features [B, T, n_mels]`` or ``input_values [B, L]``, ``attention_mask``, ``labels [B, S]``
    (-100 = padding), for the LaCT models, their attention baselines and Wav2Vec2ForCTC."""

    feature_extractor: object
    tokenizer: object

    def __call__(self, audio: list[np.ndarray], texts: list[str]) -> dict:
        batch = self.feature_extractor(
            audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", return_attention_mask=True
        )
        batch["attention_mask"] = batch["attention_mask"].long()
        batch["labels"] = _pad_labels(self.tokenizer(texts)["input_ids"])
        return dict(batch)


@dataclass
class WhisperCollator:
    """Rows -> ``input_features [B, n_mels, 2 * max_source_positions]`` (Whisper's fixed length; the same
    log-mel as the CTC models, zero-padded) and ``labels [B, S + 1]``: character ids then end of text.
    The model builds its decoder inputs by shifting the labels right behind ``decoder_start_token_id``."""

    feature_extractor: object
    tokenizer: object
    num_frames: int
    eos_token_id: int

    def __call__(self, audio: list[np.ndarray], texts: list[str]) -> dict:
        features = self.feature_extractor(
            audio,
            sampling_rate=SAMPLING_RATE,
            return_tensors="pt",
            padding="max_length",
            max_length=self.num_frames,
            truncation=True,
        )["input_features"]
        ids = [x + [self.eos_token_id] for x in self.tokenizer(texts)["input_ids"]]
        return {"input_features": features.transpose(1, 2).contiguous(), "labels": _pad_labels(ids)}


@dataclass
class PretrainedWhisperCollator:
    """Rows -> a converted Whisper's own ``input_features [B, 80, 3000]`` and its BPE labels (the decoder
    start token removed, since the model prepends it when shifting)."""

    processor: object
    decoder_start_token_id: int

    def __call__(self, audio: list[np.ndarray], texts: list[str]) -> dict:
        features = self.processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        ids = self.processor.tokenizer([" " + t for t in texts])["input_ids"]
        ids = [x[1:] if x and x[0] == self.decoder_start_token_id else x for x in ids]
        return {"input_features": features["input_features"], "labels": _pad_labels(ids)}


@dataclass
class AudioTokenCollator:
    """Rows -> ``input_ids [B * K, T]`` (mel_rvq codes, rows ``b * K + k``), ``attention_mask [B, T]`` and
    ``labels`` (the codes, -100 on padding; the LM loss shifts them)."""

    audio_tokenizer: object

    def __call__(self, audio: list[np.ndarray], texts: list[str]) -> dict:
        codes = self.audio_tokenizer.encode([torch.from_numpy(a) for a in audio], sampling_rate=SAMPLING_RATE)
        B, K, T = codes.shape
        frames = torch.tensor([self.audio_tokenizer.num_frames(len(a)) for a in audio])
        mask = torch.arange(T)[None, :] < frames[:, None]  # [B, T]
        labels = codes.masked_fill(~mask[:, None, :], -100)
        return {
            "input_ids": codes.masked_fill(~mask[:, None, :], 0).reshape(B * K, T),
            "attention_mask": mask.long(),
            "labels": labels.reshape(B * K, T),
        }


def rows_to_batch(rows: datasets.Dataset, indices: list[int], collator) -> tuple[dict, list[str]]:
    """Decode the audio of ``indices`` and collate it; returns the batch and the reference texts."""
    picked = rows[indices]
    audio = [read_audio(cell) for cell in picked["audio"]]
    return collator(audio, picked["text"]), picked["text"]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches of similar lengths (longest first), in a fixed order."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def seconds_to_frames(seconds: np.ndarray) -> np.ndarray:
    return np.ceil(np.asarray(seconds) * FRAMES_PER_SECOND).astype(np.int64)


def check_batch_fits(max_frames: int, lengths: np.ndarray, max_seconds: float) -> None:
    """Fail early when one kept training utterance is longer than a whole batch budget."""
    longest = int(lengths.max()) if len(lengths) else 0
    if longest > max_frames:
        raise ValueError(
            f"the longest training utterance has {longest} frames ({longest / FRAMES_PER_SECOND:.1f} s), more than "
            f"max_frames_per_batch={max_frames}: raise max_frames_per_batch to at least {longest} or lower "
            f"max_seconds below {max_frames / FRAMES_PER_SECOND:.1f} (now {max_seconds:g})"
        )


def memory_available_bytes(device: torch.device) -> int:
    """Free accelerator memory, or MemAvailable of the host for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return math.inf
