"""Train a recogniser head on cached Whisper encoder states, in sessions, with Accelerate.

Every model kind sees the same batches (the session plan depends only on the seed and the epoch),
the same optimiser and the same number of steps. The loop saves its state with ``Accelerator.save_state``
(rotation by ``ProjectConfiguration(total_limit=...)``) and resumes from the last checkpoint exactly.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

from ..cache_lact_audio import LaCTCache
from ..training.checkpoint_files import check_checkpoint_files
from .fast_weight_scales import scaled_lact_rates
from .heads import BiLSTMCTCHead, CachedStatesCTC
from .sessions import SessionCollator, SessionSampler


@dataclass
class RecogniserTrainingArguments:
    """Options of one recogniser training run (``run_scripts/train_recogniser.py`` exposes each as a flag)."""

    output_dir: str
    max_steps: int = 1500
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 150
    # transformers' scheduler names; "constant" escapes CTC's all-blank plateau of a small head within about
    # 60 steps where "cosine" (warm-up, then decay) stays on it past 100 (measured on the ablation head)
    lr_scheduler_type: str = "cosine"
    batch_frames: int = 6000
    max_utterances: int = 8
    single_fraction: float = 0.25
    carry_state: bool = True
    # the share of a session's later utterances (positions >= 1) that add a second loss, read with the carried
    # state alone (their own fast-weight update frozen): a loss that rewards what earlier utterances wrote
    carried_read_fraction: float = 0.0
    time_mask_prob: float = 0.05
    time_mask_length: int = 10
    feature_mask_prob: float = 0.05
    feature_mask_length: int = 24
    max_grad_norm: float = 1.0
    eval_every: int = 250
    save_every: int = 250
    seed: int = 0
    threads: int = 2
    checkpoints_kept: int = 2
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= self.carried_read_fraction <= 1.0:
            raise ValueError(
                f"carried_read_fraction is a share of utterances in [0, 1], got {self.carried_read_fraction}"
            )


def add_labels(dataset: datasets.Dataset, tokenizer) -> datasets.Dataset:
    """The cached split with ``labels`` (CTC character ids of ``text``) and ``num_frames`` columns."""

    def encode(batch):
        return {
            "labels": tokenizer(batch["text"])["input_ids"],
            "num_frames": [len(s) for s in batch["states"]],
        }

    return dataset.map(encode, batched=True, batch_size=256, desc="labels")


def spec_augment(states: torch.Tensor, mask: torch.Tensor, args: RecogniserTrainingArguments, rng) -> torch.Tensor:
    """SpecAugment on encoder states ``[B, T, d]``: zeroed time spans and feature bands (wav2vec2's mask sampler)."""
    B, T, d = states.shape
    states = states.clone()
    if args.time_mask_prob > 0 and T > args.time_mask_length:
        np.random.seed(int(rng.integers(2**31)))  # _compute_mask_indices draws from numpy's global generator
        spans = _compute_mask_indices((B, T), args.time_mask_prob, args.time_mask_length, mask, min_masks=1)
        states[torch.from_numpy(spans)] = 0
    if args.feature_mask_prob > 0 and d > args.feature_mask_length:
        np.random.seed(int(rng.integers(2**31)))
        bands = _compute_mask_indices((B, d), args.feature_mask_prob, args.feature_mask_length, min_masks=1)
        states = states.masked_fill(torch.from_numpy(bands)[:, None, :], 0)
    return states


def session_loss(
    model, positions: list[dict], carry_state: bool, carried_reads: list[bool] | None = None
) -> torch.Tensor:
    """Mean CTC loss over the utterances of a batch of sessions.

    ``positions`` come from ``SessionCollator``; with ``carry_state`` (LaCT models) the fast weights
    run across a session's utterances through one ``LaCTCache`` whose batch shrinks as sessions end.

    ``carried_reads`` (one bool per position, with ``carry_state`` only): a marked position ``i >= 1`` adds a
    second CTC loss on its utterances, read with the fast weights the session's earlier utterances left
    (its own update frozen: rates x0, ``scaled_lact_rates``). Only what the earlier utterances wrote can lower
    that loss, and its gradient runs back through the carried state into their updates. The carried state
    itself is not changed by that read; the mean is over every loss term.
    """
    if carried_reads is not None and (not carry_state or len(carried_reads) != len(positions)):
        raise ValueError(
            f"carried_reads needs carry_state and one flag per position ({len(positions)}), got {len(carried_reads)}"
        )
    cache = LaCTCache(model.config.num_hidden_layers) if carry_state else None
    total, count = 0.0, 0
    for i, batch in enumerate(positions):
        B = batch["labels"].shape[0]
        if cache is not None:
            if cache.batch_size and cache.batch_size > B:
                cache.batch_select_indices(torch.arange(B))
            cache.start_new_utterance()
            if carried_reads is not None and carried_reads[i] and i > 0:
                view = LaCTCache(len(cache))  # the forward replaces a cache's layer entries: read a copy of them
                view.layer_caches = list(cache.layer_caches)
                with scaled_lact_rates(model, 0.0):
                    read = model(**batch, past_key_values=view, use_cache=True)
                total, count = total + read.loss * B, count + B
        out = model(**batch, past_key_values=cache, use_cache=cache is not None)
        cache = out.past_key_values if carry_state else None
        total = total + out.loss * B
        count += B
    return total / count


@torch.no_grad()
def cached_logits(model, dataset: datasets.Dataset, batch_size: int = 16, carry_by: str | None = None):
    """Log-probabilities ``[T_i, V]`` of every row of a cached split, in row order.

    ``carry_by``: a column (e.g. ``"speaker"``) whose rows share one carried fast-weight state, read in
    row order; None resets the state for every utterance (batched).
    """
    model.eval()
    dataset = _states_as_arrays(dataset)
    out = [None] * len(dataset)
    if carry_by is None:
        order = np.argsort(dataset["num_frames"], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = [int(i) for i in order[start : start + batch_size]]
            batch = SessionCollator()([[{"states": dataset[i]["states"], "labels": []}] for i in idx])[0]
            batch.pop("labels")
            res = model(**batch)
            logp = torch.log_softmax(res.logits.float(), -1)
            for b, i in enumerate(idx):
                out[i] = logp[b, : int(res.output_lengths[b])]
        return out
    groups = {}
    for i, key in enumerate(dataset[carry_by]):
        groups.setdefault(key, []).append(i)
    for rows in groups.values():
        cache = LaCTCache(model.config.num_hidden_layers)
        for i in rows:
            batch = SessionCollator()([[{"states": dataset[i]["states"], "labels": []}]])[0]
            batch.pop("labels")
            cache.start_new_utterance()
            res = model(**batch, past_key_values=cache, use_cache=True)
            cache = res.past_key_values
            out[i] = torch.log_softmax(res.logits.float(), -1)[0]
    return out


def _states_as_arrays(dataset: datasets.Dataset) -> datasets.Dataset:
    """Rows whose ``states`` come back as numpy arrays (4x faster per row than nested Python lists)."""
    return dataset.with_format("numpy", columns=["states"], output_all_columns=True)


def greedy_texts(log_probs: list[torch.Tensor], tokenizer) -> list[str]:
    """CTC greedy transcripts (collapse repeats, drop blanks) of per-utterance log-probabilities."""
    return [tokenizer.decode(lp.argmax(-1).tolist()) for lp in log_probs]


def train_recogniser(
    model,
    tokenizer,
    train: datasets.Dataset,
    validation: datasets.Dataset,
    args: RecogniserTrainingArguments,
    evaluate_fn,
) -> dict:
    """Train ``model`` on cached ``train`` states in sessions; returns the run's summary (also in output_dir).

    Args:
        model: a model of :func:`modeling_lact_audio.recogniser.heads.build_recogniser`.
        tokenizer: the CTC tokenizer (labels and greedy decoding).
        train, validation: cached splits with ``labels`` and ``num_frames`` (:func:`add_labels`).
        args: the run's options.
        evaluate_fn: ``evaluate_fn(references, predictions) -> {"wer": ..., "cer": ...}`` (validation scoring).

    The best model by validation CER is saved to ``output_dir/best`` (``save_pretrained`` for LaCT
    models, a ``state_dict`` for the BiLSTM head), with ``summary.json`` beside it.
    """
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    output = Path(args.output_dir)
    project = ProjectConfiguration(
        project_dir=str(output), automatic_checkpoint_naming=True, total_limit=args.checkpoints_kept
    )
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), project_config=project)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, args.warmup_steps, args.max_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    carry = args.carry_state and isinstance(unwrapped, CachedStatesCTC) and unwrapped.config.mixer == "lact"
    train = _states_as_arrays(train)
    sampler = SessionSampler(
        train["speaker"],
        np.asarray(train["num_frames"]),
        args.batch_frames,
        args.max_utterances,
        args.single_fraction,
        args.seed,
    )
    collate = SessionCollator()
    log = {"args": asdict(args), "history": [], "best": None, "carry_state": carry}
    step, epoch, offset, best_cer = 0, 0, 0, math.inf
    checkpoints = output / "checkpoints"
    if checkpoints.exists() and any(checkpoints.iterdir()):
        last = max(checkpoints.iterdir(), key=lambda p: int(p.name.split("_")[-1]))
        check_checkpoint_files(last)  # Accelerate's own files only: they load with weights_only=True
        accelerator.load_state(str(last))
        saved = json.loads((output / "progress.json").read_text())
        step, epoch, offset = saved["step"], saved["epoch"], saved["offset"]
        best_cer, log = saved["best_cer"], saved["log"]
        project.iteration = int(last.name.split("_")[-1]) + 1
    started = time.time() - log.get("train_seconds", 0.0)
    progress = tqdm(total=args.max_steps, initial=step, desc="training")
    references = list(validation["text"])
    while step < args.max_steps:
        sampler.set_epoch(epoch)
        for sessions in sampler.plan()[offset:]:
            offset += 1
            model.train()
            rows = [[{"states": train[i]["states"], "labels": train[i]["labels"]} for i in s] for s in sessions]
            positions = collate(rows)
            rng = np.random.default_rng([args.seed, step])  # per step, so a resumed run masks the same frames
            for p in positions:
                p["frontend_states"] = spec_augment(p["frontend_states"], p["attention_mask"], args, rng)
            reads = None
            if carry and args.carried_read_fraction > 0:  # drawn after the masks: a run without it masks the same
                reads = [i > 0 and rng.random() < args.carried_read_fraction for i in range(len(positions))]
            loss = session_loss(model, positions, carry, reads)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            log["history"].append({"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]})
            if step % args.eval_every == 0 or step == args.max_steps:
                texts = greedy_texts(cached_logits(accelerator.unwrap_model(model), validation), tokenizer)
                scores = evaluate_fn(references, texts)
                log["history"][-1].update({f"val_{k}": v for k, v in scores.items()})
                if scores["cer"] < best_cer:
                    best_cer = scores["cer"]
                    log["best"] = {"step": step, **scores}
                    save_recogniser(accelerator.unwrap_model(model), tokenizer, output / "best")
            if step % args.save_every == 0 or step == args.max_steps:
                log["train_seconds"] = time.time() - started
                accelerator.save_state()
                progress_state = {"step": step, "epoch": epoch, "offset": offset, "best_cer": best_cer, "log": log}
                (output / "progress.json").write_text(json.dumps(progress_state))
            if step >= args.max_steps:
                break
        else:
            epoch, offset = epoch + 1, 0
    log["train_seconds"] = time.time() - started
    (output / "summary.json").write_text(json.dumps(log, indent=1))
    return log


def save_recogniser(model, tokenizer, folder: Path) -> None:
    """A trained head: ``head.safetensors`` with ``config.json`` (LaCT/attention heads; the front-end
    width is in ``head_info.json``) or ``bilstm_head.safetensors``, and the tokenizer."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, CachedStatesCTC):
        model.config.save_pretrained(folder)
        save_file(state, folder / "head.safetensors")
        info = {"kind": "ctc", "d_model": model.projection.in_features}
    elif isinstance(model, BiLSTMCTCHead):
        save_file(state, folder / "head.safetensors")
        info = {
            "kind": "bilstm",
            "input_size": model.lstm.input_size,
            "hidden_size": model.lstm.hidden_size,
            "vocab_size": model.lm_head.out_features,
            "blank": model.blank,
        }
    else:
        raise TypeError(f"cannot save a {type(model).__name__}")
    (folder / "head_info.json").write_text(json.dumps(info))
