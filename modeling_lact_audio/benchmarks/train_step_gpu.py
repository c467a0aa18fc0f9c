"""Optimizer steps of a training config on synthetic batches: step time and peak memory (no corpus needed).

    python -m modeling_lact_audio.benchmarks.train_step_gpu run_scripts/configs/a40_base.yaml \\
        --output eval/results/gpu/train_step.json [--device cuda] [--steps 3] [--preset tiny ...]

Flags after the config file that this module does not define are training flags and override the file,
as in ``run_scripts/train.py``. The step is ``training.trainer``'s: the config's model (CTC with the
log-mel front end: ``lact`` and its attention baselines), AdamW without decay on 1-D parameters,
Accelerate's mixed precision and gradient accumulation, gradient clipping. The batches are random
log-mel features of the config's largest micro-batch: rows of ``max_seconds`` (10 ms input frames)
filling ``max_frames_per_batch``, at most ``max_batch_size`` rows, no padding, and random character
labels, ``LABELS_PER_OUTPUT_FRAME`` per output frame. Attention: flash-attn's kernels
(``flash_attention_2``) where ``flash_attn`` imports, else the model's default (SDPA); a ``block_causal``
mixer runs SDPA with explicit masks either way (``LaCTAudioMixer._attention``). The JSON records which.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import string
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from ..baselines import BaselineASRTransformer
from ..cpu_features import resolve_mixed_precision
from ..memory import training_memory_bytes
from ..modeling_lact_audio import LaCTAudioForCTC, count_parameters
from ..presets import preset_config
from ..processors import LaCTCTCTokenizer, LaCTFeatureExtractor
from ..training.arguments import build_optimizer, parse_args
from .measure import machine_info
from .op_gpu import error_text, versions

LABELS_PER_OUTPUT_FRAME = 0.4  # about 10 characters a second at 25 output frames a second: CTC stays feasible
MODELS = ("lact", "baseline_transformer", "baseline_sliding_window")


def build_ctc_model(model_args, vocab_size: int):
    """The config's CTC model, freshly initialised, and its LaCT config (as ``training.models.build_model``)."""
    if model_args.task != "ctc" or model_args.model not in MODELS:
        raise ValueError(
            f"train_step_gpu times CTC models with a log-mel front end ({MODELS}); "
            f"got --model {model_args.model} --task {model_args.task}"
        )
    overrides = model_args.config_overrides
    overrides = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    config = preset_config(model_args.preset, "ctc", **{**overrides, "vocab_size": vocab_size, "pad_token_id": 0})
    if model_args.model == "lact":
        return LaCTAudioForCTC(config), config
    mixer = "attention" if model_args.model == "baseline_transformer" else "sliding_window"
    return BaselineASRTransformer.from_lact_config(config, mixer), config


def micro_batch_shape(data_args, config) -> tuple[int, int]:
    """``(rows, input frames per row)`` of the config's largest micro-batch (see the module docstring)."""
    frames_per_second = LaCTFeatureExtractor().sampling_rate / config.feature_hop_length
    frames = max(1, min(data_args.max_frames_per_batch, int(data_args.max_seconds * frames_per_second)))
    rows = max(1, min(data_args.max_batch_size, data_args.max_frames_per_batch // frames))
    return rows, frames


def synthetic_batch(model, rows: int, frames: int, vocab_size: int, device, generator: torch.Generator) -> dict:
    """Random ``input_features [rows, frames, n_mels]`` (float32), ``attention_mask [rows, frames]`` (all ones,
    long) and ``labels [rows, S]`` (ids in ``[1, vocab_size)``, S from ``LABELS_PER_OUTPUT_FRAME``)."""
    n_mels = model.config.num_mel_bins
    out_frames = int(model._get_feat_extract_output_lengths(torch.tensor([frames]))[0])
    labels = max(1, int(out_frames * LABELS_PER_OUTPUT_FRAME))
    return {
        "input_features": torch.randn(rows, frames, n_mels, generator=generator).to(device),
        "attention_mask": torch.ones(rows, frames, dtype=torch.long, device=device),
        "labels": torch.randint(1, vocab_size, (rows, labels), generator=generator).to(device),
    }


def attention_choice(model, config) -> dict:
    """Switch the model to flash-attn's kernels when ``flash_attn`` imports; say what its attention runs."""
    available = importlib.util.find_spec("flash_attn") is not None
    choice = {"flash_attn_available": available}
    if available:
        try:
            model.set_attn_implementation("flash_attention_2")
        except Exception as err:  # noqa: BLE001 (recorded; the model keeps its default)
            choice["flash_attn_error"] = error_text(err)
    choice["attn_implementation"] = model.config._attn_implementation
    if config.attention_pattern == "block_causal" and config.mixer != "attention":
        choice["attention_note"] = "block_causal window: LaCTAudioMixer runs SDPA with explicit masks"
    return choice


def mixed_precision(requested: str, device: str) -> str:
    """Accelerate's mode for ``requested`` (``no``, ``bf16`` or ``auto``), as ``training.trainer`` decides it."""
    if requested == "auto":
        return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return resolve_mixed_precision(requested, device)


def train_steps(model_args, data_args, train_args, device: str, steps: int, warmup: int) -> dict:
    """``warmup`` then ``steps`` optimizer steps (each ``gradient_accumulation_steps`` micro-batches) on synthetic
    batches; returns the record (times in seconds, memory in bytes; see ``main``)."""
    torch.manual_seed(train_args.seed)
    tokenizer = LaCTCTCTokenizer.from_texts([string.ascii_lowercase + " '"])
    vocab = len(tokenizer)
    model, config = build_ctc_model(model_args, vocab)
    record = {"attention": attention_choice(model, config)}
    if train_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    precision = mixed_precision(train_args.mixed_precision, device)
    accumulation = train_args.gradient_accumulation_steps
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision=precision, gradient_accumulation_steps=accumulation)
    optimizer = build_optimizer(model, train_args)  # the trainer's own
    num_params = count_parameters(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    rows, frames = micro_batch_shape(data_args, config)
    generator = torch.Generator().manual_seed(train_args.seed)
    unwrapped = accelerator.unwrap_model(model)
    batches = [
        synthetic_batch(unwrapped, rows, frames, vocab, accelerator.device, generator) for _ in range(accumulation)
    ]
    model.train()

    def step() -> float:
        loss_sum = 0.0
        for batch in batches:
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() / accumulation  # one host sync per micro-batch, as the trainer's loss check
        return loss_sum

    cuda = accelerator.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        losses.append(step())
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if not torch.isfinite(torch.tensor(losses[-1])):
            raise FloatingPointError(f"loss is {losses[-1]} at step {i}")
    timed = times[warmup:] or times
    median = statistics.median(timed)
    model_frames = data_args.max_frames_per_batch // max(1, config.total_stride)
    estimate = training_memory_bytes(
        config, num_params, model_frames, train_args.gradient_checkpointing, 2 if precision == "bf16" else 4
    )
    audio_s = rows * frames * accumulation * config.feature_hop_length / LaCTFeatureExtractor().sampling_rate
    return record | {
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "num_parameters": num_params,
        "vocab_size": vocab,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "lact_chunk_size": config.lact_chunk_size,
        "window_size": config.window_size,
        "micro_batch": {"rows": rows, "input_frames": frames, "labels": batches[0]["labels"].shape[1]},
        "gradient_accumulation_steps": accumulation,
        "gradient_checkpointing": train_args.gradient_checkpointing,
        "warmup_steps": warmup,
        "step_s": timed,
        "first_step_s": times[0],
        "median_step_s": median,
        "audio_seconds_per_step": audio_s,
        "audio_seconds_per_second": audio_s / median,
        "losses": losses,
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "estimated_bytes": estimate,
    }


def main(argv: list[str] | None = None) -> dict:
    """Parse ``CONFIG [--device D] [--steps N] [--warmup N] --output FILE [training flags]``, time the steps,
    write the JSON record (also on failure, with ``error``: then exit status 1) and return it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a training config (YAML/JSON), e.g. run_scripts/configs/a40_base.yaml")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps before timing (compilation, JIT)")
    parser.add_argument("--output", type=Path, required=True, help="the JSON record")
    args, training_flags = parser.parse_known_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    model_args, data_args, train_args = parse_args([args.config, *training_flags])
    record = {
        "kind": "train_step",
        "config_file": args.config,
        "training_flags": training_flags,
        "model": model_args.model,
        "task": model_args.task,
        "preset": model_args.preset,
        "max_frames_per_batch": data_args.max_frames_per_batch,
        "max_batch_size": data_args.max_batch_size,
        "max_seconds": data_args.max_seconds,
        "requested_mixed_precision": train_args.mixed_precision,
        "machine": machine_info(args.device),
        "versions": versions(),
    }
    start = time.perf_counter()
    try:
        record |= train_steps(model_args, data_args, train_args, args.device, args.steps, args.warmup)
    except Exception as err:  # noqa: BLE001 (written to the record, then the exit status says it failed)
        record["error"] = error_text(err)
    record["elapsed_s"] = time.perf_counter() - start
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    if "error" in record:
        raise SystemExit(f"train step failed: {record['error']} (record in {args.output})")
    peak = record["peak_mem_bytes"]
    print(
        f"{record['model']} {record['preset']}: {record['num_parameters'] / 1e6:.1f}M parameters, "
        f"{record['micro_batch']['rows']} x {record['micro_batch']['input_frames']} frames x "
        f"{record['gradient_accumulation_steps']} micro-batches, {record['mixed_precision']}, "
        f"attention {record['attention']['attn_implementation']}: step {record['median_step_s']:.3f} s "
        f"(first {record['first_step_s']:.1f} s), {record['audio_seconds_per_second']:.0f} audio s/s, "
        f"peak {'n/a' if peak is None else f'{peak / 2**30:.2f} GiB'} "
        f"(estimated {sum(record['estimated_bytes'].values()) / 2**30:.2f} GiB); wrote {args.output}"
    )
    return record


if __name__ == "__main__":
    main()
