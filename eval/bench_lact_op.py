"""Benchmark the chunked LaCT op against this machine's large-matmul rate (not a test).

Counts 18·T·H·D·Dh flops per call (read 6, gradient recomputation 6, three gradient products 6)
plus Newton-Schulz's products per updated chunk, per head and matrix (``newton_schulz_flops``: dense,
or in the C x C factor space for chunks short next to the head dim, as the op runs them).
Forward+backward counts 3x the forward.
Each figure is the median of ``torch.utils.benchmark`` runs within a time budget (the efficiency suite's
``measure``); bf16 rows run only on a CPU with native bf16 (AVX512-BF16 or AMX), where they mean
something. Writes JSON and a PNG under ``eval/results/`` and prints a table.

Usage::

    python eval/bench_lact_op.py            # full grid: chunk 16..4096 x head dim 64..512
    python eval/bench_lact_op.py --quick    # a few configurations (seconds), used by `make demo`
    python eval/bench_lact_op.py --compare path/to/LaCT/lact_llm/lact_model/ttt_operation.py
        # ours against the official block_causal_lact_swiglu, alternating, best of N, outputs checked
        # (remove the file's CUDA torch.compile/autocast decorators first; the file is never vendored):
        # writes lact_op_compare.{md,json}

On a GPU (``--device cuda``) it compares every implementation instead: eager PyTorch, Triton,
``torch.compile``, the reference loop (small T) and, with ``--compare FILE``, the official function, in
bf16 and fp32, forward and forward+backward, with TFLOP/s, shares of the GPU's bf16 peak (spec and a
measured matmul), peak memory and one mixer (``modeling_lact_audio.benchmarks.op_gpu``)::

    python eval/bench_lact_op.py --device cuda --quick   # about 2 minutes on an H200: lact_op_gpu_quick.*
    python eval/bench_lact_op.py --device cuda           # about 5 minutes: lact_op_gpu.{json,md,png}
    python eval/bench_lact_op.py --grid tiny --compile-backend eager   # the same code on the CPU, seconds
"""

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from tqdm import tqdm

from modeling_lact_audio.benchmarks.measure import cpu_model
from modeling_lact_audio.benchmarks.op import bench_config, bench_reference, gemm_rate
from modeling_lact_audio.benchmarks.op_compare import CLOCKS, GRID, compare, markdown
from modeling_lact_audio.benchmarks.op_gpu import GRIDS, benchmark
from modeling_lact_audio.cpu_features import cpu_has_native_bf16, describe_cpu

RESULTS = Path(__file__).parent / "results"
TOTAL_BUDGETS = {"quick": 100.0, "default": 270.0}  # seconds of measuring: about 2 and 5 minutes in all on an H200


def grid(quick: bool):
    """The configurations to run: (T, H, D, chunk). H*D is fixed so every head dim does similar work."""
    if quick:
        return [(2048, 2, 256, c) for c in (64, 512)] + [(2048, 4, 128, 512)]
    chunks = (16, 64, 256, 512, 1024, 2048, 4096)
    dims = (64, 128, 256, 512)
    return [(8192, max(1, 1024 // d), d, c) for d in dims for c in chunks]


def plot(records: list, sgemm: float, path: Path) -> None:
    """GFLOP/s against chunk size, one line per head dim, fp32 and bf16 forward side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, dtype in zip(axes, ("fp32", "bf16")):
        for D in sorted({r["D"] for r in records}):
            rs = sorted(
                (r for r in records if r["D"] == D and r["dtype"] == dtype and r["mode"] == "fwd"),
                key=lambda r: r["chunk"],
            )
            if rs:
                ax.plot([r["chunk"] for r in rs], [r["gflops"] for r in rs], marker="o", label=f"head dim {D}")
        ax.axhline(sgemm, color="k", linestyle="--", label=f"fp32 SGEMM {sgemm:.0f}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("chunk size (tokens)")
        ax.set_title(f"lact_swiglu forward, {dtype}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GFLOP/s")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    """Run the benchmark, write ``eval/results/lact_op[_quick].{json,png}``, print a table; returns the record."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few configurations, seconds")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per configuration")
    parser.add_argument("--muon-steps", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    compare_args = parser.add_argument_group("--compare: ours against the official LaCT function")
    compare_args.add_argument(
        "--compare", type=Path, metavar="OFFICIAL_FILE", help="a file defining block_causal_lact_swiglu"
    )
    compare_args.add_argument("--repeats", type=int, default=5, help="rounds of alternating calls (best of N)")
    compare_args.add_argument("--seq-len", type=int, default=8192)
    compare_args.add_argument(
        "--points", default=",".join(f"{h}x{d}x{c}" for h, d, c in GRID), help="HEADSxDIMxCHUNK,... (default: issue 12)"
    )
    compare_args.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    compare_args.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    gpu_args = parser.add_argument_group("--device cuda (or --grid): every implementation on a GPU")
    gpu_args.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    gpu_args.add_argument(
        "--grid", choices=tuple(GRIDS), default=None, help="default: quick with --quick, else default (tiny: CPU)"
    )
    gpu_args.add_argument(
        "--total-budget",
        type=float,
        default=None,
        help="seconds, after which points are recorded as skipped (default: quick 100, default 270, tiny none)",
    )
    gpu_args.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: a quick check)")
    gpu_args.add_argument("--matmul-size", type=int, default=8192, help="n of the n^3 bf16 matmul (measured peak)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" or args.grid is not None:
        return run_gpu(args)
    if args.compare is not None:
        return run_compare(args)
    budget = args.budget or (0.5 if args.quick else 3.0)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    dtypes = ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)

    sgemm = gemm_rate(1024 if args.quick else 2048, torch.float32, budget_s=budget)
    bf16_gemm = gemm_rate(1024 if args.quick else 2048, torch.bfloat16, budget_s=budget) if "bf16" in dtypes else None
    records = []
    configs = [(c, mode, dt) for c in grid(args.quick) for mode in ("fwd", "fwd_bwd") for dt in dtypes]
    for (T, H, D, chunk), mode, dt in tqdm(configs, desc="lact_swiglu", unit="cfg"):
        records.append(bench_config(T, H, D, D, chunk, args.muon_steps, mode, dt, budget))
    reference = bench_reference(256 if args.quick else 1024, 2, 64, 64, budget)

    for r in records:
        r["fraction_of_sgemm"] = r["gflops"] / sgemm
    by_key = {(r["T"], r["D"], r["chunk"], r["mode"], r["dtype"]): r for r in records}
    for r in records:
        if r["dtype"] == "bf16":
            r["speedup_vs_fp32"] = by_key[(r["T"], r["D"], r["chunk"], r["mode"], "fp32")]["median_s"] / r["median_s"]

    out = {
        "machine": {
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            **describe_cpu(),
        },
        "sgemm_gflops": sgemm,
        "bf16_gemm_gflops": bf16_gemm,
        "muon_steps": args.muon_steps,
        "records": records,
        "reference_vs_chunked": reference,
    }
    stem = "lact_op_quick" if args.quick else "lact_op"
    (args.output_dir / f"{stem}.json").write_text(json.dumps(out, indent=2))
    plot(records, sgemm, args.output_dir / f"{stem}.png")

    print(f"\nCPU {out['machine']['cpu']}, {out['machine']['threads']} threads, torch {torch.__version__}")
    bf16_note = f"bf16 GEMM {bf16_gemm:.0f} GFLOP/s" if bf16_gemm else "bf16 skipped (emulated on this CPU)"
    print(f"fp32 GEMM {sgemm:.0f} GFLOP/s, {bf16_note}, muon_steps={args.muon_steps}\n")
    print("| T | H | D=Dh | chunk | mode | dtype | ms (median) | GFLOP/s | % SGEMM | bf16 speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in records:
        sp = f"{r['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in r else ""
        print(
            f"| {r['T']} | {r['H']} | {r['D']} | {r['chunk']} | {r['mode']} | {r['dtype']} | "
            f"{r['median_s'] * 1e3:.1f} | {r['gflops']:.1f} | {100 * r['fraction_of_sgemm']:.0f}% | {sp} |"
        )
    print(
        f"\nreference loop vs chunked (T={reference['T']}, D={reference['D']}, chunk={reference['chunk']}): "
        f"{reference['reference_s'] * 1e3:.0f} ms vs {reference['chunked_s'] * 1e3:.1f} ms, "
        f"{reference['speedup']:.0f}x faster"
    )
    print(f"wrote {args.output_dir / (stem + '.json')} and {args.output_dir / (stem + '.png')}")
    return out


def run_gpu(args) -> dict:
    """``--device cuda`` / ``--grid``: write ``lact_op_gpu[_GRID].{json,md,png}``, print the table."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    grid = args.grid or ("quick" if args.quick else "default")
    stem = "lact_op_gpu" if grid == "default" else f"lact_op_gpu_{grid}"
    result = benchmark(
        grid,
        args.device,
        args.output_dir,
        stem,
        muon_steps=args.muon_steps,
        budget_s=args.budget or 0.25,
        total_budget_s=args.total_budget if args.total_budget is not None else TOTAL_BUDGETS.get(grid),
        official_path=args.compare,
        compile_backend=args.compile_backend,
        matmul_n=args.matmul_size,
    )
    print((args.output_dir / f"{stem}.md").read_text())
    print(f"wrote {args.output_dir / stem}.{{json,md,png}}")
    return result


def run_compare(args) -> dict:
    """``--compare``: write ``lact_op_compare.{json,md}``, print the table; exit status 1 when outputs disagree."""
    grid = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]
    record = compare(args.compare, grid, T=args.seq_len, repeats=args.repeats, clock=args.clock)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "lact_op_compare.json").write_text(json.dumps(record, indent=2))
    table = markdown(record)
    (args.output_dir / "lact_op_compare.md").write_text(table)
    print(table)
    if not all(p["agree"] for p in record["points"]):
        raise SystemExit("the official function and ours disagree: see max_abs_diff in the table")
    return record


if __name__ == "__main__":
    main()
