"""``eval/results/memory_quantisation/REPORT.md``: issue 17's bars, each computed from the JSON that measured it.

Reads ``memory_quantisation/memory.json`` (``eval/memory_check.py``: the plan against CPU training steps),
``gpu/memory_gpu.json`` (``benchmarks.memory_gpu``: against ``torch.cuda.max_memory_allocated``),
``quantization/results.json`` and any ``quantization_*/results.json`` (``eval/quantization_eval.py``; for each
model and INT8 mode the bars use the run with the most utterances per split) and ``gpu/inference_gpu.json``
(``benchmarks.inference_gpu``), under ``--results`` (default ``eval/results``); a missing file is reported as
not measured. The detailed tables stay in the reports beside those files.

    python -m modeling_lact_audio.benchmarks.memory_quantisation_report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..quantization import HALF_PRECISIONS, MODES
from .gpu_report import inference_table

RESULTS = Path(__file__).resolve().parents[2] / "eval" / "results"
MEMORY_TOLERANCE = 0.15  # the estimate within 15% of the measured peak
WER_POINTS = 1.0  # INT8 keeps WER within 1 point absolute of fp32


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def memory_bar(cpu: list | None, gpu: list | None) -> dict:
    """Ratios estimate / measured over every measured point (CPU and GPU), and whether all are within 15%."""
    ratios = [("cpu", r) for r in cpu or [] if "ratio" in r] + [("gpu", r) for r in gpu or [] if "ratio" in r]
    worst = max((abs(r["ratio"] - 1) for _, r in ratios), default=None)
    return {
        "points": len(ratios),
        "cpu_points": sum(where == "cpu" for where, _ in ratios),
        "gpu_points": sum(where == "gpu" for where, _ in ratios),
        "min_ratio": min((r["ratio"] for _, r in ratios), default=None),
        "max_ratio": max((r["ratio"] for _, r in ratios), default=None),
        "pass": worst is not None and worst <= MEMORY_TOLERANCE,
    }


def mode_bars(quant: dict, modes=MODES) -> list[dict]:
    """Per model and mode of ``modes`` (default: the INT8 modes) that the run measured: the largest |WER change|
    (points, greedy and with the LM, every split), the file size ratio and the offline latency ratio to fp32,
    each with its pass/fail."""
    rows = []
    for model, m in quant["models"].items():
        for mode in [s for s in m["systems"] if s in modes]:
            changes = []
            for split, per in m["accuracy"].items():
                for decoding in m["decodings"]:
                    diff = per[mode][decoding]["wer_diff"]  # [point, low, high] as fractions
                    changes.append((abs(diff[0]) * 100, split, decoding, diff))
            worst = max(changes)
            size = m["systems"][mode]["file_bytes"] / m["systems"]["fp32"]["file_bytes"]
            speed = m["speed"][mode]["offline"]["median_s"] / m["speed"]["fp32"]["offline"]["median_s"]
            rows.append(
                {
                    "model": model,
                    "mode": mode,
                    "worst_wer_change_points": worst[0],
                    "worst_at": f"{worst[1]} ({worst[2]})",
                    "worst_interval": [100 * x for x in worst[3]],
                    "wer_pass": worst[0] <= WER_POINTS,
                    "file_ratio": size,
                    "file_pass": size < 1.0,
                    "latency_ratio": speed,
                    "latency_pass": speed < 1.0,
                }
            )
    return rows


def quantisation_runs(results: Path) -> list[tuple[str, dict]]:
    """``(folder name, results)`` of every quantisation run under ``results``: ``quantization/`` first, then
    ``quantization_*/`` in name order (folders without a ``results.json`` of models are skipped)."""
    runs = []
    for folder in sorted(p for p in results.glob("quantization*") if p.is_dir()):
        data = _load(folder / "results.json")
        if data and "models" in data:
            runs.append((folder.name, data))
    return runs


def cpu_kind(quant: dict) -> str:
    """The CPU a run measured on, as the kernels see it: PyTorch's capability (``AVX2``, ``AVX512``) plus
    ``+VNNI`` where the CPU has AVX512-VNNI or AMX (torchao's int8 x int8 kernel needs one of them)."""
    features = quant["machine"]["cpu_features"]
    fast_int8 = features.get("fast_int8", bool(features.get("int8_flags")))  # runs before fast_int8: the flags
    return features["capability"] + ("+VNNI" if fast_int8 else "")


def largest_sample_bars(runs: list[tuple[str, dict]]) -> list[dict]:
    """``mode_bars`` (INT8 modes) of every run, keeping per CPU kind (``cpu_kind``: latency depends on it), model
    and mode the run with the most rows per split (ties: the earlier run); each row also names its ``run``,
    ``rows_per_split`` and ``cpu``."""
    chosen = {}
    for name, quant in runs:
        for row in mode_bars(quant):
            row = {**row, "run": name, "rows_per_split": quant["rows_per_split"], "cpu": cpu_kind(quant)}
            key = (row["cpu"], row["model"], row["mode"])
            if key not in chosen or row["rows_per_split"] > chosen[key]["rows_per_split"]:
                chosen[key] = row
    return list(chosen.values())


def modes_meeting_every_bar(rows: list[dict]) -> list[str]:
    """The INT8 modes whose every row (one per model) in ``mode_bars`` passes WER, file size and latency."""
    modes = dict.fromkeys(row["mode"] for row in rows)
    failed = {r["mode"] for r in rows if not (r["wer_pass"] and r["file_pass"] and r["latency_pass"])}
    return [mode for mode in modes if mode not in failed]


def half_precision_cpu_lines(runs: list[tuple[str, dict]]) -> list[str]:
    """A section on whole-model bf16 inference on the CPU (``eval/quantization_eval.py`` runs it where the CPU has
    native bf16), from every run that has it; no lines when none has."""
    rows = [(name, quant, row) for name, quant in runs for row in mode_bars(quant, tuple(HALF_PRECISIONS))]
    if not rows:
        return []
    lines = [
        "## Half precision on the CPU (`quantization*/results.json`)",
        "",
        "Measured where the CPU has native bf16 (`to_half_precision`: fast weights and their updates fp32, the rest "
        "bf16). Not an INT8 bar; the same three measures for comparison.",
        "",
        "| run | CPU | model | mode | largest WER change [95% CI] | file | offline latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, quant, row in rows:
        point, low, high = row["worst_interval"]
        lines.append(
            f"| `{name}/` ({quant['rows_per_split']} per split) | {quant['machine']['cpu']} ({cpu_kind(quant)}) | "
            f"{row['model']} | {row['mode']} | {point:+.2f} pts at {row['worst_at']} [{low:+.2f}, {high:+.2f}] | "
            f"{row['file_ratio']:.2f}x | {row['latency_ratio']:.2f}x |"
        )
    return [*lines, ""]


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(results: Path) -> str:
    """The Markdown report of the bars under ``results``."""
    cpu = (_load(results / "memory_quantisation" / "memory.json") or {}).get("points")
    gpu = _load(results / "gpu" / "memory_gpu.json")
    runs = quantisation_runs(results)
    half = _load(results / "gpu" / "inference_gpu.json")
    lines = [
        "# Memory planning and quantised inference (issue 17)",
        "",
        "Generated by `python -m modeling_lact_audio.benchmarks.memory_quantisation_report` from the JSON named in "
        "each section; do not edit by hand. Detailed tables: `MEMORY.md` (CPU), `../gpu/REPORT.md` (GPU), "
        "`../quantization/REPORT.md` (quantisation).",
        "",
        "## Bars",
        "",
        "| bar | measured | pass |",
        "|---|---|---|",
    ]
    if cpu is None and gpu is None:
        lines.append("| memory estimate within 15% of the measured peak | not measured | - |")
    else:
        bar = memory_bar(cpu, gpu)
        lines.append(
            f"| memory estimate within 15% of the measured peak, every point | ratio estimate/measured "
            f"{bar['min_ratio']:.3f}-{bar['max_ratio']:.3f} over {bar['cpu_points']} CPU and {bar['gpu_points']} "
            f"GPU points | {_yes(bar['pass'])} |"
        )
    machine = ""
    if not runs:
        lines.append("| INT8 within 1 WER point, smaller, faster on the CPU | not measured | - |")
    else:
        machine = "; ".join(
            f"`{name}/` ({quant['rows_per_split']} utterances per split): {quant['machine']['cpu']} "
            f"({cpu_kind(quant)}), {quant['threads']} thread(s), "
            f"torchao {quant['torchao']}"
            for name, quant in runs
        )
        rows = largest_sample_bars(runs)
        kinds = list(dict.fromkeys(row["cpu"] for row in rows))
        for row in rows:
            low, high = row["worst_interval"][1:]
            name = f"{row['model']} {row['mode']}" + (f" ({row['cpu']})" if len(kinds) > 1 else "")
            lines += [
                f"| {name}: WER within 1 point of fp32 on every split | largest change "
                f"{row['worst_interval'][0]:+.2f} pts at {row['worst_at']} [95% CI {low:+.2f}, {high:+.2f}], "
                f"{row['rows_per_split']} utterances per split (`{row['run']}/`) | {_yes(row['wer_pass'])} |",
                f"| {name}: smaller file | {row['file_ratio']:.2f}x fp32's | {_yes(row['file_pass'])} |",
                f"| {name}: lower CPU latency | offline {row['latency_ratio']:.2f}x fp32's time | "
                f"{_yes(row['latency_pass'])} |",
            ]
        for kind in kinds:
            met = modes_meeting_every_bar([row for row in rows if row["cpu"] == kind])
            on = f" on {kind} CPUs" if len(kinds) > 1 else ""
            lines.append(
                f"| one INT8 mode meets all three bars on every model{on} | {', '.join(met) or 'no mode does'} "
                f"| {_yes(bool(met))} |"
            )
    lines.append("")
    if machine:
        lines += [
            f"Quantisation measured on: {machine}. Latency depends on the CPU, so each CPU kind (PyTorch's capability, "
            "+VNNI where the CPU has AVX512-VNNI or AMX-INT8) is judged on its own runs. Without VNNI or AMX, "
            "torchao's int8 x int8 products (`torch._int_mm`) have no fast kernel, so `int8_dynamic` is slower than "
            "fp32 there; weight-only int8 dequantises in the call and computes in fp32; `int8_dynamic_fbgemm` runs "
            "PyTorch's FBGEMM int8 kernel, which uses AVX2.",
            "",
        ]
    lines += half_precision_cpu_lines(runs)
    if half is not None:
        lines += ["## Half precision on a GPU (`../gpu/inference_gpu.json`)", "", *inference_table(half), ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    """Command line: write ``RESULTS/memory_quantisation/REPORT.md``; returns its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.results / "memory_quantisation" / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report(args.results))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
