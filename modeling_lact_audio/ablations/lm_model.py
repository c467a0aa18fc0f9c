"""The generation study's model side: a small audio-token LM per variant, its training and its held-out NLL.

``build_lm`` makes a ``LaCTAudioForCausalLM`` (``task="lm"``: ``apply_update`` order, causal attention) or one
of its parameter-matched attention baselines (``BaselineAudioTransformer``: sliding window or full attention);
``train_lm`` trains it on training sequences cut at random offsets; ``score_lm`` measures the next-code
negative log-likelihood of held-out windows by target position.
"""

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from transformers import get_cosine_schedule_with_warmup

from ..baselines import BaselineAudioTransformer
from ..configuration_lact_audio import LaCTAudioConfig
from ..modeling_lact_audio import LaCTAudioForCausalLM
from ..training.checkpoint_files import check_checkpoint_files
from ..training.models import LM_MODELS

PROGRESS = "progress.json"


@dataclass
class LMTrainingArguments:
    """The shared budget of every run of a generation study (a grid's ``budget``, but ``output_dir`` and
    ``seed``): ``batch_size`` sequences of the grid's ``train_frames`` per step, AdamW with warmup and a
    cosine decay, a state checkpoint every ``save_every`` steps (None: halfway and at the end)."""

    output_dir: str
    max_steps: int = 60
    batch_size: int = 2
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 6
    max_grad_norm: float = 1.0
    save_every: int | None = None
    threads: int = 1
    seed: int = 0
    checkpoints_kept: int = 2


def lm_config(num_codebooks: int, codebook_size: int, **overrides) -> LaCTAudioConfig:
    """The LM's config: ``LaCTAudioConfig(task="lm")`` sized by the audio tokenizer, with ``overrides``."""
    return LaCTAudioConfig(task="lm", num_codebooks=num_codebooks, codebook_size=codebook_size, **overrides)


def build_lm(kind: str, config: LaCTAudioConfig):
    """A freshly initialised LM of ``kind`` (``training.models.LM_MODELS``) sized from ``config``; the baselines
    get the LaCT model's trainable parameter count (``baselines.matched_baseline_config``)."""
    if kind not in LM_MODELS:
        raise ValueError(f"an LM variant's model must be one of {LM_MODELS}, got {kind!r}")
    if kind == "lact":
        return LaCTAudioForCausalLM(config)
    return BaselineAudioTransformer.from_lact_config(
        config, "attention" if kind == "baseline_transformer" else "sliding_window"
    )


def _draw_windows(sequences: list[np.ndarray], frames: int, batch_size: int, rng) -> tuple[np.ndarray, torch.Tensor]:
    starts = np.array([max(0, s.shape[1] - frames + 1) for s in sequences])
    if starts.sum() == 0:
        raise ValueError(f"no training sequence holds {frames} frames: lower train_frames")
    picks = rng.choice(len(sequences), size=batch_size, p=starts / starts.sum())
    rows = []
    for i in picks:
        offset = int(rng.integers(starts[i]))
        rows.append(sequences[i][:, offset : offset + frames])
    K = rows[0].shape[0]
    return picks, torch.from_numpy(np.stack(rows).astype(np.int64)).reshape(batch_size * K, frames)


def training_batch(sequences: list[np.ndarray], frames: int, batch_size: int, rng) -> torch.Tensor:
    """``input_ids [batch_size * K, frames]`` int64 (rows ``b * K + k``): windows of ``frames`` code frames at
    offsets drawn uniformly over every window of every sequence ``[K, T_i]`` that holds one."""
    return _draw_windows(sequences, frames, batch_size, rng)[1]


def conditioned_training_batch(
    sequences: list[np.ndarray], conditions: np.ndarray, frames: int, batch_size: int, rng
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`training_batch` (the same draws for the same ``rng``) and each window's sequence's conditioning
    vector: ``(input_ids [batch_size * K, frames] int64, conditioning_embeds [batch_size, D] float32)`` from
    ``conditions [len(sequences), D]``."""
    picks, ids = _draw_windows(sequences, frames, batch_size, rng)
    return ids, torch.from_numpy(np.asarray(conditions, dtype=np.float32)[picks])


def train_lm(
    model,
    sequences: list[np.ndarray],
    frames: int,
    args: LMTrainingArguments,
    log_every: int = 10,
    conditions: np.ndarray | None = None,
) -> dict:
    """Train ``model`` on windows of ``frames`` frames of ``sequences`` (``[K, T_i]`` codes each); returns the
    log ``{"args", "history": [{"step", "loss", "lr"}], "train_seconds"}`` (also ``output_dir/summary.json``).
    ``conditions [len(sequences), condition_dim]``: each sequence's ``conditioning_embeds`` (None: none).

    Step ``s`` draws its batch from ``np.random.default_rng([seed, s])``, and the state is saved with
    ``Accelerator.save_state`` (the progress as JSON inside the checkpoint, written last: a checkpoint without
    it is incomplete and removed), so an interrupted run resumes exactly.
    """
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    output = Path(args.output_dir)
    project = ProjectConfiguration(
        project_dir=str(output), automatic_checkpoint_naming=True, total_limit=args.checkpoints_kept
    )
    accelerator = Accelerator(cpu=True, project_config=project)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    save_every = args.save_every or max(1, args.max_steps // 2)
    log, step = {"args": asdict(args), "history": [], "train_seconds": 0.0}, 0
    complete = []
    for folder in sorted((output / "checkpoints").glob("checkpoint_*")):
        if (folder / PROGRESS).exists():
            complete.append(folder)
        else:
            shutil.rmtree(folder)  # killed while saving
    if complete:
        last = max(complete, key=lambda p: int(p.name.split("_")[-1]))
        check_checkpoint_files(last, allowed=(PROGRESS,))  # Accelerate's files load with weights_only=True
        accelerator.load_state(str(last))
        saved = json.loads((last / PROGRESS).read_text())
        step, log = saved["step"], saved["log"]
        project.iteration = int(last.name.split("_")[-1]) + 1
    started = time.time() - log["train_seconds"]
    model.train()
    while step < args.max_steps:
        rng = np.random.default_rng([args.seed, step])
        if conditions is None:
            batch, embeds = training_batch(sequences, frames, args.batch_size, rng), None
        else:
            batch, embeds = conditioned_training_batch(sequences, conditions, frames, args.batch_size, rng)
        loss = model(input_ids=batch, labels=batch, conditioning_embeds=embeds).loss
        accelerator.backward(loss)
        loss = float(loss.detach())
        accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        log["history"].append({"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0]})
        if step % log_every == 0:
            print(f"  step {step}/{args.max_steps} loss {loss:.3f}", flush=True)
        if step % save_every == 0 or step == args.max_steps:
            log["train_seconds"] = time.time() - started
            location = Path(accelerator.save_state())
            (location / PROGRESS).write_text(json.dumps({"step": step, "log": log}))
    log["train_seconds"] = time.time() - started
    (output / "summary.json").write_text(json.dumps(log, indent=1))
    return log


@torch.no_grad()
def target_nll(model, codes: np.ndarray, conditioning_embeds=None) -> np.ndarray:
    """Next-code NLL (nats) of one window ``codes [K, T]`` in one forward from an empty state: ``[K, T - 1]``
    float64, column ``t - 1`` for the frame at position ``t``; ``conditioning_embeds [1, condition_dim]`` or None."""
    K, T = codes.shape
    ids = torch.from_numpy(codes.astype(np.int64))
    logits = model(input_ids=ids, conditioning_embeds=conditioning_embeds).logits.float()  # [K, T, V]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    )
    return nll.view(K, T - 1).double().numpy()


def window_nll(model, codes: np.ndarray, bin_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-code NLL of one window ``codes [K, T]`` in one forward from an empty state.

    Returns ``(nll [n_bins], tokens [n_bins])`` float64 / int64: the NLL (nats) summed over the K codebooks of
    the frames predicted at positions ``t = 1 .. T - 1`` with ``t // bin_frames == i``, and how many codes
    that is (``n_bins = ceil(T / bin_frames)``; position 0 has no prediction).
    """
    K, T = codes.shape
    per_frame = target_nll(model, codes).sum(0)  # [T - 1]: targets at positions 1 .. T - 1
    bins = np.arange(1, T) // bin_frames
    n_bins = math.ceil(T / bin_frames)
    return np.bincount(bins, per_frame, n_bins), np.bincount(bins, minlength=n_bins).astype(np.int64) * K


def score_lm(model, windows: list[np.ndarray], bin_frames: int, frame_rate: float) -> dict:
    """Held-out NLL of ``model`` on ``windows`` (``[K, T]`` codes each), by target position.

    Returns ``{"nll_sums" [N][n_bins], "tokens" [N][n_bins], "model_seconds", "audio_seconds"}``: per window
    the summed NLL and code counts of each position bin (:func:`window_nll`), the seconds the forwards took
    and the audio they cover (frames / ``frame_rate``).
    """
    model.eval()
    sums, counts, seconds = [], [], 0.0
    for codes in windows:
        start = time.perf_counter()
        nll, tokens = window_nll(model, codes, bin_frames)
        seconds += time.perf_counter() - start
        sums.append(nll.tolist())
        counts.append(tokens.tolist())
    return {
        "nll_sums": sums,
        "tokens": counts,
        "model_seconds": seconds,
        "audio_seconds": sum(w.shape[1] for w in windows) / frame_rate,
    }
