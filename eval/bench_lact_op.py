"""Benchmark the chunked LaCT op against this machine's large-matmul rate (not a test).

Counts 18·T·H·D·Dh flops per call (read 6, gradient recomputation 6, three gradient products 6)
plus Newton-Schulz's products per updated chunk, per head and matrix (``newton_schulz_flops``: dense,
or in the C x C factor space for chunks short next to the head dim, as the op runs them).
Forward+backward counts 3x the forward.
Each figure is the median of repeated runs after a warm-up. Writes JSON and a PNG under
``eval/results/`` and prints a table.

Usage::

    python eval/bench_lact_op.py            # full grid: chunk 16..4096 x head dim 64..512
    python eval/bench_lact_op.py --quick    # a few configurations (seconds), used by `make demo`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from modeling_lact_audio.kernels import FastWeightState, lact_swiglu, lact_swiglu_reference
from modeling_lact_audio.kernels.newton_schulz import factored_is_cheaper, newton_schulz_flops

RESULTS = Path(__file__).parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_call(fn, repeats: int, warmup: int = 1) -> dict:
    """Median and spread (min, max) in seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def gemm_rate(n: int, dtype: torch.dtype, repeats: int) -> float:
    """Achieved GFLOP/s of an ``n x n x n`` matmul in ``dtype``."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / time_call(lambda: a @ b, repeats)["median_s"] / 1e9


def op_flops(T: int, H: int, D: int, Dh: int, chunk: int, muon_steps: int, momentum: bool = False) -> float:
    """Forward flops of one ``lact_swiglu`` call (B=1, apply_update, T a multiple of ``chunk``)."""
    flops = 18.0 * T * H * D * Dh
    # Without momentum the op orthogonalises a short chunk's rank-C update in its factor space.
    rank = chunk if not momentum and factored_is_cheaper(Dh, D, chunk, muon_steps) else None
    flops += (T // chunk) * H * 3 * newton_schulz_flops(Dh, D, muon_steps, rank)
    return flops


def make_inputs(T: int, H: int, D: int, Dh: int, requires_grad: bool = False):
    """Unit-norm q, k, unit-scale v, small rates and 1/sqrt(fan-in) initial weights (float32)."""
    q, k = (torch.nn.functional.normalize(torch.randn(1, T, H, D), dim=-1) for _ in range(2))
    v = torch.randn(1, T, H, D)
    lr = torch.rand(1, T, H, 3) * 0.01
    w0, w2 = (torch.randn(1, H, Dh, D) / D**0.5 for _ in range(2))
    w1 = torch.randn(1, H, D, Dh) / Dh**0.5
    tensors = [q, k, v, lr, w0, w1, w2]
    if requires_grad:
        tensors = [t.requires_grad_(True) for t in tensors]
    return tensors


def bench_config(T, H, D, Dh, chunk, muon_steps, mode, dtype, repeats) -> dict:
    """Time one configuration; ``mode`` is "fwd" or "fwd_bwd", ``dtype`` "fp32" or "bf16" (autocast)."""
    q, k, v, lr, w0, w1, w2 = make_inputs(T, H, D, Dh, requires_grad=mode == "fwd_bwd")

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            state = FastWeightState.from_weights(w0, w1, w2)
            o, _ = lact_swiglu(q, k, v, lr, state, chunk_size=chunk, muon_steps=muon_steps)
        if mode == "fwd_bwd":
            o.float().square().mean().backward()

    if mode == "fwd":
        with torch.no_grad():
            t = time_call(run, repeats)
    else:
        t = time_call(run, repeats)
    flops = op_flops(T, H, D, Dh, chunk, muon_steps) * (3 if mode == "fwd_bwd" else 1)
    return {
        "T": T,
        "H": H,
        "D": D,
        "Dh": Dh,
        "chunk": chunk,
        "muon_steps": muon_steps,
        "mode": mode,
        "dtype": dtype,
        **t,
        "gflops": flops / t["median_s"] / 1e9,
    }


def bench_reference(T, H, D, chunk, repeats) -> dict:
    """Chunked vs the per-token reference loop on a small case (the reference is slow by design)."""
    q, k, v, lr, w0, w1, w2 = make_inputs(T, H, D, D)
    state = FastWeightState.from_weights(w0, w1, w2)
    with torch.no_grad():
        ref = time_call(lambda: lact_swiglu_reference(q, k, v, lr, state, chunk_size=chunk), repeats)
        fast = time_call(lambda: lact_swiglu(q, k, v, lr, state, chunk_size=chunk), repeats)
    return {
        "T": T,
        "H": H,
        "D": D,
        "chunk": chunk,
        "reference_s": ref["median_s"],
        "chunked_s": fast["median_s"],
        "speedup": ref["median_s"] / fast["median_s"],
    }


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
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--muon-steps", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    sgemm = gemm_rate(1024 if args.quick else 2048, torch.float32, repeats + 2)
    bf16_gemm = gemm_rate(1024 if args.quick else 2048, torch.bfloat16, repeats + 2)
    records = []
    configs = [(c, mode, dt) for c in grid(args.quick) for mode in ("fwd", "fwd_bwd") for dt in ("fp32", "bf16")]
    for (T, H, D, chunk), mode, dt in tqdm(configs, desc="lact_swiglu", unit="cfg"):
        records.append(bench_config(T, H, D, D, chunk, args.muon_steps, mode, dt, repeats))
    reference = bench_reference(256 if args.quick else 1024, 2, 64, 64, 1)

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
    print(f"fp32 GEMM {sgemm:.0f} GFLOP/s, bf16 GEMM {bf16_gemm:.0f} GFLOP/s, muon_steps={args.muon_steps}\n")
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


if __name__ == "__main__":
    main()
