"""Corpus rows to model batches: length-bucketed batch plans, data loaders, one collator per model family.

Every ``--model`` sees the same utterances in the same batches: a batch plan depends only on the
seed, the epoch and the utterance durations (counted in 10 ms frames), never on the model.
Collators decode the audio and extract features, so they run in the ``DataLoader``'s workers, off
the training step.
"""

import datasets
import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Sampler

from ..asr import whisper_char_features
from ..data import SAMPLING_RATE, read_audio

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


class LengthBucketBatchSampler(Sampler[list[int]]):
    """The micro-batches of one process for one epoch (a ``batch_sampler`` for ``DataLoader``).

    The epoch's plan is :func:`plan_batches`, the same on every process. Optimizer step ``s`` uses
    plan batches ``[s * A * W, (s + 1) * A * W)`` (``A`` accumulation steps, ``W`` processes); process
    ``r`` takes every ``W``-th of them starting at ``r``, so the processes' batches are disjoint. The
    tail of an epoch that cannot fill a whole optimizer step is dropped. Call ``set_epoch`` before
    iterating, as with ``DistributedSampler``.

    Args:
        lengths: ``[N]`` utterance lengths in frames.
        max_frames: padded frames per micro-batch (``rows * longest``) at most.
        max_batch: rows per micro-batch at most.
        seed: the run's seed.
        window_batches: rows are sorted by length within windows of this many batches.
        accumulation: micro-batches per optimizer step on each process.
        num_replicas, rank: the processes and this one.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        max_frames: int,
        max_batch: int,
        seed: int = 0,
        window_batches: int = 50,
        accumulation: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} processes")
        self.lengths, self.max_frames, self.max_batch = np.asarray(lengths), max_frames, max_batch
        self.seed, self.window_batches = seed, window_batches
        self.accumulation, self.num_replicas, self.rank = accumulation, num_replicas, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Plan the batches of ``epoch``."""
        self.epoch = epoch
        self.plan = plan_batches(
            self.lengths, self.max_frames, self.max_batch, self.seed, epoch, self.window_batches
        )

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps the current epoch's plan fills."""
        return len(self.plan) // (self.accumulation * self.num_replicas)

    def micro_batch(self, i: int) -> list[int]:
        """Row indices of this process's ``i``-th micro-batch of the epoch."""
        return self.plan[i * self.num_replicas + self.rank]

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation

    def __iter__(self):
        return (self.micro_batch(i) for i in range(len(self)))


class DataState:
    """Where the run is in its data: ``epoch``, ``step_in_epoch`` (optimizer steps into that epoch's plan),
    ``completed_steps`` and the best validation score so far.

    Saved as JSON beside Accelerate's state in every checkpoint (``checkpoint_files.write_training_state``).
    """

    def __init__(self):
        self.epoch, self.step_in_epoch, self.completed_steps = 0, 0, 0
        self.best_metric: float | None = None

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def decode_rows(rows: list[dict]) -> tuple[list[np.ndarray], list[str]]:
    """Corpus rows (undecoded ``audio`` cells and ``text``) -> 16 kHz waveforms ``[L_i]`` and their texts."""
    return [read_audio(row["audio"]) for row in rows], [row["text"] for row in rows]


def _pad_labels(ids: list[list[int]]) -> torch.Tensor:
    longest = max(1, max(len(x) for x in ids))
    out = torch.full((len(ids), longest), -100, dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
    return out


class CTCCollator:
    """Rows -> ``input_features [B, T, n_mels]`` or ``input_values [B, L]``, ``attention_mask [B, T]`` and
    ``labels [B, S]`` (-100 = padding), for the LaCT models, their attention baselines and Wav2Vec2ForCTC."""

    def __init__(self, feature_extractor, tokenizer):
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        audio, texts = decode_rows(rows)
        batch = self.feature_extractor(
            audio, sampling_rate=SAMPLING_RATE, return_tensors="pt", return_attention_mask=True
        )
        batch["attention_mask"] = batch["attention_mask"].long()
        batch["labels"] = _pad_labels(self.tokenizer(texts)["input_ids"])
        return dict(batch)


class WhisperCollator:
    """Rows -> ``input_features [B, n_mels, num_frames]`` (the CTC models' log-mel at Whisper's fixed length)
    and ``labels [B, S + 1]``: character ids then end of text. The model builds its decoder inputs by
    shifting the labels right behind ``decoder_start_token_id``."""

    def __init__(self, feature_extractor, tokenizer, num_frames: int, eos_token_id: int):
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        self.num_frames, self.eos_token_id = num_frames, eos_token_id

    def __call__(self, rows: list[dict]) -> dict:
        audio, texts = decode_rows(rows)
        ids = [x + [self.eos_token_id] for x in self.tokenizer(texts)["input_ids"]]
        features = whisper_char_features(self.feature_extractor, audio, self.num_frames)
        return {"input_features": features, "labels": _pad_labels(ids)}


class PretrainedWhisperCollator:
    """Rows -> a converted Whisper's own ``input_features [B, 80, 3000]`` and its BPE labels (the decoder
    start token removed, since the model prepends it when shifting)."""

    def __init__(self, processor, decoder_start_token_id: int):
        self.processor, self.decoder_start_token_id = processor, decoder_start_token_id

    def __call__(self, rows: list[dict]) -> dict:
        audio, texts = decode_rows(rows)
        features = self.processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        ids = self.processor.tokenizer([" " + t for t in texts])["input_ids"]
        ids = [x[1:] if x and x[0] == self.decoder_start_token_id else x for x in ids]
        return {"input_features": features["input_features"], "labels": _pad_labels(ids)}


class AudioTokenCollator:
    """Rows -> ``input_ids [B * K, T]`` (mel_rvq codes, rows ``b * K + k``), ``attention_mask [B, T]`` and
    ``labels`` (the codes, -100 on padding; the LM loss shifts them)."""

    def __init__(self, audio_tokenizer):
        self.audio_tokenizer = audio_tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        audio, _ = decode_rows(rows)
        codes = self.audio_tokenizer.encode([torch.from_numpy(a) for a in audio], sampling_rate=SAMPLING_RATE)
        B, K, T = codes.shape
        frames = torch.tensor([self.audio_tokenizer.num_frames(len(a)) for a in audio])
        mask = torch.arange(T)[None, :] < frames[:, None]  # [B, T]
        return {
            "input_ids": codes.masked_fill(~mask[:, None, :], 0).reshape(B * K, T),
            "attention_mask": mask.long(),
            "labels": codes.masked_fill(~mask[:, None, :], -100).reshape(B * K, T),
        }


def make_loader(rows: datasets.Dataset, batch_sampler, collator, num_workers: int, seed: int = 0) -> DataLoader:
    """A ``DataLoader`` of collated batches over ``rows`` (only ``audio`` and ``text`` are read).

    Its own generator seeds the workers, so iterating never draws from the global RNG that dropout
    uses (a resumed run starts a loader at another step than the straight run did).
    """
    return DataLoader(
        rows.select_columns(["audio", "text"]),
        batch_sampler=batch_sampler,
        collate_fn=collator,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Evaluation batches of similar lengths (longest first), in a fixed order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def seconds_to_frames(seconds: np.ndarray) -> np.ndarray:
    """Durations ``[N]`` in seconds -> ``[N]`` int64 counts of 10 ms frames (rounded up)."""
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
    """Free accelerator memory, or the host's available memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available
