"""Check the memory plan on a GPU: the estimate of :mod:`modeling_lact_audio.memory` against the peak that
``torch.cuda.max_memory_allocated`` reports for real bf16 training steps (issue 17; the CPU check is
``eval/memory_check.py``).

Each point (preset, task, seconds of audio per example, examples per micro-batch, gradient checkpointing)
builds the model in fp32 on the GPU, runs two forward + backward passes under bf16 autocast with a foreach
AdamW step after each (the gradients kept between them, as under gradient accumulation), and reads the
allocator's peak. The estimate is ``estimate(config, frames, batch, "bf16", "ddp", 1, checkpointing,
device="cuda")``: one GPU, the same setting. A point that runs out of memory is recorded as such.

    python -m modeling_lact_audio.benchmarks.memory_gpu --point base:10 --point base:60 --output DIR
    python -m modeling_lact_audio.benchmarks.memory_gpu --dry-run --output DIR   # CPU: tiny point, no peak

``--dry-run`` runs the same steps on the CPU on the ``tiny`` preset (the peak is then the CPU live-tensor
count of :func:`~modeling_lact_audio.memory_measure.measure_training_step` in fp32, against the fp32 CPU
estimate), so that CI proves the script end to end.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

from ..memory import estimate, frames_per_second
from ..memory_measure import measure_training_step, parse_point, training_batch
from ..presets import preset_config

MiB = 2**20
KEY = ("preset", "task", "seconds", "batch_size", "gradient_checkpointing")


def measure_cuda_training_step(config, frames: int, batch_size: int, gradient_checkpointing: bool) -> dict:
    """Peak allocated bytes of two bf16-autocast training steps of ``config`` on the current CUDA device.

    Returns ``peak`` (``torch.cuda.max_memory_allocated`` over the model's construction and both steps),
    ``states`` (parameters + gradients + AdamW moments after the steps), ``step_seconds`` (the second step,
    synchronised) and ``parameters_count``.
    """
    from ..modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = (LaCTAudioForCausalLM if config.task == "lm" else LaCTAudioForCTC)(config).cuda().float().train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    batch = {k: v.cuda() for k, v in training_batch(config, frames, batch_size).items()}
    times = []
    for _ in range(2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        del loss
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    states = sum(p.nbytes for p in model.parameters()) + sum(
        p.grad.nbytes for p in model.parameters() if p.grad is not None
    )
    states += sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))
    result = {
        "peak": torch.cuda.max_memory_allocated() - base,
        "states": states,
        "step_seconds": times[-1],
        "parameters_count": count_parameters(model),
    }
    del model, optimizer, batch
    gc.collect()
    torch.cuda.empty_cache()
    return result


def check_point(preset: str, task: str, seconds: float, batch_size: int, checkpointing: bool, dry_run: bool) -> dict:
    """Estimate and measure one point; its JSON record (bytes; ``ratio = estimate / measured``)."""
    config = preset_config(preset, task)
    frames = max(1, round(seconds * frames_per_second(config)))
    record = {
        "preset": preset,
        "task": task,
        "seconds": seconds,
        "batch_size": batch_size,
        "gradient_checkpointing": checkpointing,
        "frames": frames,
        "device": "cpu (dry run, fp32)" if dry_run else torch.cuda.get_device_name(),
    }
    if dry_run:
        est = estimate(config, frames, batch_size, "fp32", "ddp", 1, checkpointing, device="cpu")
        measured = measure_training_step(config, frames, batch_size, checkpointing)
        measured["states"] = measured["parameters"] + measured["gradients"] + measured["optimizer"]
    else:
        est = estimate(config, frames, batch_size, "bf16", "ddp", 1, checkpointing, device="cuda")
        try:
            measured = measure_cuda_training_step(config, frames, batch_size, checkpointing)
        except torch.OutOfMemoryError as error:
            gc.collect()
            torch.cuda.empty_cache()
            return {**record, "estimate_bytes": est.peak, "error": f"out of memory: {str(error)[:200]}"}
    return {
        **record,
        "parameters": measured["parameters_count"],
        "estimate_bytes": est.peak,
        "estimate_activation_bytes": est.activation_peak,
        "estimate_state_bytes": est.states.persistent,
        "measured_bytes": measured["peak"],
        "measured_state_bytes": measured["states"],
        "step_seconds": measured.get("step_seconds"),
        "ratio": est.peak / measured["peak"],
    }


def write_markdown(records: list, path: Path) -> None:
    """The table of ``records`` as Markdown at ``path``."""
    lines = [
        "# Training memory on a GPU: the plan's estimate against `torch.cuda.max_memory_allocated`",
        "",
        "bf16 autocast, fp32 weights, foreach AdamW, one GPU; two forward + backward passes with a step after each.",
        "Generated by `python -m modeling_lact_audio.benchmarks.memory_gpu` from its JSON.",
        "Ratio = estimate / measured.",
        "",
        "| device | preset | task | seconds | frames | batch | checkpointing | parameters | estimate (MiB) "
        "| measured (MiB) | ratio | step (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        head = (
            f"| {r['device']} | {r['preset']} | {r['task']} | {r['seconds']:g} | {r['frames']} | {r['batch_size']} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | "
        )
        if "error" in r:
            lines.append(head + f"- | {r['estimate_bytes'] / MiB:.0f} | {r['error'][:60]} | - | - |")
            continue
        step = "-" if r.get("step_seconds") is None else f"{r['step_seconds']:.3f}"
        lines.append(
            head + f"{r['parameters'] / 1e6:.1f}M | {r['estimate_bytes'] / MiB:.0f} | "
            f"{r['measured_bytes'] / MiB:.0f} | {r['ratio']:.3f} | {step} |"
        )
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> list:
    """Command line: measure every ``--point`` (each with checkpointing on and off) that ``OUTPUT/memory_gpu.json``
    does not hold yet, and add it there; returns all the records."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--point", type=parse_point, action="append", default=[], help="PRESET:SECONDS")
    parser.add_argument("--task", choices=("ctc", "lm"), default="ctc")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--checkpointing", choices=("on", "off", "both"), default="both")
    parser.add_argument("--output", type=Path, required=True, help="folder for memory_gpu.json and MEMORY_GPU.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset: checks the steps without CUDA")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --dry-run to check the steps on the CPU")
    points = [("tiny", 2.0)] if args.dry_run else args.point
    if not points:
        parser.error("give at least one --point PRESET:SECONDS")
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.checkpointing]
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "memory_gpu.json"
    records = json.loads(path.read_text()) if path.is_file() else []  # a later call adds its points
    done = {tuple(r[k] for k in KEY) for r in records}
    for preset, seconds in points:
        for checkpointing in modes:
            if (preset, args.task, seconds, args.batch_size, checkpointing) in done:
                continue
            record = check_point(preset, args.task, seconds, args.batch_size, checkpointing, args.dry_run)
            records.append(record)
            print(json.dumps(record), flush=True)
            path.write_text(json.dumps(records, indent=2) + "\n")
    write_markdown(records, args.output / "MEMORY_GPU.md")
    return records


if __name__ == "__main__":
    main()
