"""The LaCT op on a GPU: every implementation side by side, its TFLOP/s and share of the GPU's bf16 peak.

Variants of one call (``B=1``, ``Dh = D``, no momentum, ``muon_steps`` Newton-Schulz steps):

- ``torch``: ``lact_swiglu(..., backend="torch")`` eager (the chunked PyTorch op);
- ``triton``: ``lact_swiglu(..., backend="triton")`` (the fused Triton kernels);
- ``torch_compile``: the ``torch`` variant under ``torch.compile`` (its compile time is the first call's,
  ``first_call_s``; the chunk loop is unrolled, so it runs only where a grid point asks for it);
- ``reference``: ``lact_swiglu_reference`` (a loop over tokens: small T, forward only);
- ``official``: the official ``block_causal_lact_swiglu`` from a user-supplied file (``op_compare``), which
  skips the last chunk's update and runs its own bf16 Newton-Schulz (its outputs are compared only
  without Muon).

Each runs in ``bf16`` (autocast; the fast-weight state stays float32) and ``fp32``, forward (no grad)
and forward+backward (``o.float().square().mean()``). FLOPs: ``op.op_flops`` (18·T·H·D·Dh plus
Newton-Schulz per updated chunk), 3x for forward+backward. Time: after warm-up calls, the median of N
calls timed with CUDA events (``time.perf_counter`` on the CPU) within a per-point budget. The share
of the peak is given against the GPU's dense bf16 spec (``SPEC_BF16_TFLOPS``) and against an
``8192^3`` bf16 ``torch.matmul`` timed in the same run. A variant that fails (a Triton compile error,
out of memory) is recorded with its error and the run goes on; a lost CUDA context ends the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels import FastWeightState, lact_swiglu, lact_swiglu_reference
from ..mixer_lact_audio import LaCTAudioMixer
from ..presets import preset_config
from .flops import mixer_flops
from .measure import machine_info
from .op import make_inputs, op_flops
from .op_compare import load_official, official_layout

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; the first name
# contained in the device's name wins, so the more specific names come first.
SPEC_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A40", 149.7),
)
VARIANTS = ("torch", "triton", "torch_compile", "reference", "official")
DTYPES = ("bf16", "fp32")
MODES = ("fwd", "fwd_bwd")
# The token loop of the reference is slow by design, and compiling unrolls the chunk loop (minutes in fp32
# and bf16 both): they run where these allow.
REFERENCE_MODES = ("fwd",)
COMPILE_DTYPES = ("bf16",)


@dataclass(frozen=True)
class Point:
    """One shape of the grid: ``T`` tokens, ``H`` heads of dim ``D`` (= ``Dh``), chunks of ``chunk`` tokens,
    and the variants that run on it besides ``torch`` and ``triton`` (which run everywhere)."""

    T: int
    H: int
    D: int
    chunk: int
    extra: tuple = ()


COMPILED = ((256, 2048), (512, 4096))  # (D, chunk) compiled in the default grid: 8 and 4 chunks to unroll
# H·D = 512 everywhere, so every head dim does similar work per token.
GRIDS = {
    # seconds on a CPU: checks the code paths (gpu_check.sh --dry-run, the tests)
    "tiny": (Point(64, 2, 16, 16, ("torch_compile", "reference", "official")), Point(128, 1, 32, 64)),
    # about two minutes on an H200
    "quick": (
        Point(1024, 2, 256, 512, ("reference", "official")),
        Point(8192, 1, 512, 2048, ("torch_compile", "official")),
        Point(16384, 4, 128, 512, ("official",)),
        Point(65536, 2, 256, 4096, ("official",)),
    ),
    # about five minutes on an H200: every head dim x chunk at 16k tokens, then T up to 64k
    "default": (
        Point(2048, 2, 256, 512, ("reference", "official")),
        *(
            Point(16384, 512 // D, D, c, ("official",) + (("torch_compile",) if (D, c) in COMPILED else ()))
            for D in (128, 256, 512)
            for c in (512, 1024, 2048, 4096)
        ),
        Point(4096, 2, 256, 2048, ("official",)),
        Point(65536, 2, 256, 2048, ("official",)),
        Point(65536, 1, 512, 4096, ("official",)),
    ),
    # a training batch's occupancy: batch x heads flattened into H (the op sees B*H alike), 8192 tokens
    "occupancy": (
        Point(8192, 32, 256, 2048, ("official",)),
        Point(8192, 32, 256, 4096),
        Point(8192, 16, 512, 2048, ("official",)),
        Point(8192, 64, 128, 2048),
    ),
}
# The mixer point: (preset, frames) per grid.
MIXER_POINTS = {
    "tiny": ("tiny", 64),
    "quick": ("base", 16384),
    "default": ("base", 16384),
    "occupancy": ("base", 65536),
}


def spec_peak_tflops(device_name: str | None) -> float | None:
    """Dense bf16 peak TFLOP/s of the GPU called ``device_name`` (``torch.cuda.get_device_name()``), None if unknown."""
    for key, tflops in SPEC_BF16_TFLOPS:
        if device_name and key.lower() in device_name.lower():
            return tflops
    return None


def lact_op_flops(
    T: int, H: int, D: int, Dh: int, chunk: int, muon_steps: int, mode: str = "fwd", batch: int = 1
) -> float:
    """FLOPs of one ``lact_swiglu`` call on ``[batch, T, H, D]`` (no momentum, T a multiple of ``chunk``):
    ``op.op_flops`` per example (18·T·H·D·Dh plus Newton-Schulz per updated chunk), times 3 for ``fwd_bwd``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return batch * op_flops(T, H, D, Dh, chunk, muon_steps) * (3 if mode == "fwd_bwd" else 1)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device: str, budget_s: float, warmup: int = 2, max_reps: int = 100) -> dict:
    """Time ``fn()``: ``warmup`` calls (the first one's seconds are ``first_call_s``: compilation, autotuning),
    then as many calls as ``budget_s`` allows (at least 3, or 1 when one call outlasts the budget).

    Returns:
        ``{"median_s", "min_s", "max_s", "n", "first_call_s", "peak_mem_bytes"}``: per-call seconds, from
        CUDA events on CUDA and ``time.perf_counter`` elsewhere; the peak memory torch allocated above the
        level before the first call (CUDA; None elsewhere).
    """
    synchronize(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = time.perf_counter() - start
    estimate = first
    for _ in range(warmup - 1):
        start = time.perf_counter()
        fn()
        synchronize(device)
        estimate = time.perf_counter() - start
    n = 1 if estimate > budget_s else int(min(max_reps, max(3, budget_s / max(estimate, 1e-6))))
    if device == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for begin, end in events:
            begin.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        times = [begin.elapsed_time(end) / 1e3 for begin, end in events]
        peak = torch.cuda.max_memory_allocated() - base
    else:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        peak = None
    times.sort()
    return {
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "max_s": times[-1],
        "n": n,
        "first_call_s": first,
        "peak_mem_bytes": peak,
    }


def measured_peak_tflops(device: str, n: int = 8192, budget_s: float = 1.0) -> float:
    """TFLOP/s of an ``n x n x n`` bf16 ``torch.matmul`` on ``device``: the ceiling measured in this run."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    t = time_call(lambda: torch.matmul(a, b), device, budget_s, warmup=3)
    return 2 * n**3 / t["median_s"] / 1e12


def error_text(err: BaseException) -> str:
    """``Type: first lines`` of an exception, at most 500 characters, for the record."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()][:3]
    return f"{type(err).__name__}: {' | '.join(lines)}"[:500]


def cuda_context_lost(device: str) -> bool:
    """Whether the CUDA context is unusable after an error (an illegal address in a kernel is sticky)."""
    if device != "cuda":
        return False
    try:
        torch.cuda.synchronize()
        return False
    except Exception:  # noqa: BLE001 (any CUDA error here means the context is gone)
        return True


def op_function(variant: str, chunk: int, muon_steps: int, official=None, compile_backend: str = "inductor"):
    """``fn(q, k, v, lr, w0, w1, w2) -> o [1, T, H, D]`` for ``variant`` (inputs as ``op.make_inputs``)."""
    if variant in ("torch", "triton"):

        def ours(q, k, v, lr, w0, w1, w2):
            state = FastWeightState.from_weights(w0, w1, w2)
            return lact_swiglu(q, k, v, lr, state, chunk_size=chunk, muon_steps=muon_steps, backend=variant)[0]

        return ours
    if variant == "torch_compile":
        torch._dynamo.reset()  # a clean compile, timed as the first call
        return torch.compile(op_function("torch", chunk, muon_steps), backend=compile_backend)
    if variant == "reference":

        def reference(q, k, v, lr, w0, w1, w2):
            state = FastWeightState.from_weights(w0, w1, w2)
            return lact_swiglu_reference(q, k, v, lr, state, chunk_size=chunk, muon_steps=muon_steps)[0]

        return reference
    if variant == "official":
        if official is None:
            raise ValueError("the official variant needs the official function (--compare FILE)")

        def theirs(q, k, v, lr, w0, w1, w2):
            args = official_layout(q, k, v, lr, w0, w1, w2)
            o = official(*args, chunk_size=chunk, use_muon=muon_steps > 0, momentum=None)  # [H, T, D]
            return o.transpose(0, 1)[None]

        return theirs
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def runner(fn, inputs: list, mode: str, dtype: str, device: str):
    """A call of ``fn(*inputs)`` in ``dtype`` (``bf16``: autocast) and ``mode`` (``fwd``: no grad; ``fwd_bwd``:
    backward of ``o.float().square().mean()``, the inputs' gradients cleared first); returns the output."""

    def run():
        amp = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")
        if mode == "fwd":
            with torch.no_grad(), amp:
                return fn(*inputs)
        for t in inputs:
            t.grad = None
        with amp:
            o = fn(*inputs)
        o.float().square().mean().backward()
        return o

    return run


def output_difference(o, o_torch) -> dict:
    """Max absolute difference of two outputs ``[1, T, H, D]`` and its ratio to the largest torch output."""
    diff = (o.float() - o_torch.float()).abs().max().item()
    scale = o_torch.float().abs().max().item()
    return {"max_abs_diff_vs_torch": diff, "max_rel_diff_vs_torch": diff / scale if scale > 0 else diff}


def peak_shares(tflops: float, peak: dict) -> dict:
    """``tflops`` as a share of the spec and measured bf16 peaks (None where a peak is unknown)."""
    spec, measured = peak.get("spec_bf16_tflops"), peak.get("measured_bf16_tflops")
    return {
        "share_of_spec_peak": tflops / spec if spec else None,
        "share_of_measured_peak": tflops / measured if measured else None,
    }


def point_config(point: Point, muon_steps: int) -> dict:
    """The shape fields of a record: ``T, H, D, chunk, Dh, muon_steps``."""
    return {"T": point.T, "H": point.H, "D": point.D, "chunk": point.chunk, "Dh": point.D, "muon_steps": muon_steps}


def bench_op_variant(
    point: Point,
    variant: str,
    dtype: str,
    device: str,
    muon_steps: int,
    budget_s: float,
    peak: dict,
    official=None,
    compile_backend: str = "inductor",
) -> list[dict]:
    """The modes of one variant at one point and dtype: a record each (timing, TFLOP/s, shares of the peaks,
    the forward output's difference from eager ``torch``, or ``error``)."""
    torch.manual_seed(0)
    inputs = make_inputs(point.T, point.H, point.D, point.D, requires_grad=True, device=device)
    compare_to_torch = variant != "torch" and not (variant == "official" and muon_steps > 0)
    records, fn = [], None
    for mode in MODES:
        if (variant == "reference" and mode not in REFERENCE_MODES) or (
            variant == "torch_compile" and dtype not in COMPILE_DTYPES
        ):
            continue
        rec = {"kind": "op", "variant": variant, "dtype": dtype, "mode": mode, **point_config(point, muon_steps)}
        for t in inputs:
            t.grad = None
        try:
            if fn is None:
                fn = op_function(variant, point.chunk, muon_steps, official, compile_backend)
            run = runner(fn, inputs, mode, dtype, device)
            rec.update(time_call(run, device, budget_s))
            flops = lact_op_flops(point.T, point.H, point.D, point.D, point.chunk, muon_steps, mode)
            rec["tflops"] = flops / rec["median_s"] / 1e12
            rec.update(peak_shares(rec["tflops"], peak))
            if mode == "fwd" and compare_to_torch:
                eager = runner(op_function("torch", point.chunk, muon_steps), inputs, mode, dtype, device)
                rec.update(output_difference(run(), eager()))
        except Exception as err:  # noqa: BLE001 (recorded: the run goes on with the next variant)
            rec["error"] = error_text(err)
            if device == "cuda" and not cuda_context_lost(device):
                torch.cuda.empty_cache()
        records.append(rec)
    return records


def bench_mixer(preset: str, T: int, device: str, dtype: str, budget_s: float, peak: dict) -> list[dict]:
    """``LaCTAudioMixer`` of the ``preset`` CTC config on ``[1, T, hidden]``, forward and forward+backward
    (SDPA attention, the op's default backend): a record each, FLOPs from ``flops.mixer_flops``."""
    config = preset_config(preset, "ctc")
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    module = LaCTAudioMixer(config, 0).to(device)
    x = torch.randn(1, T, config.hidden_size, device=device, requires_grad=True)

    def call(x):
        return module(x)[0]

    records = []
    for mode in MODES:
        rec = {
            "kind": "mixer",
            "preset": preset,
            "T": T,
            "hidden": config.hidden_size,
            "lact_heads": config.num_lact_heads,
            "lact_head_dim": config.lact_head_dim,
            "chunk": config.lact_chunk_size,
            "window": config.window_size,
            "attention": config._attn_implementation,
            "lact_backend": "auto",
            "dtype": dtype,
            "mode": mode,
        }
        try:
            rec.update(time_call(runner(call, [x], mode, dtype, device), device, budget_s))
            rec["tflops"] = mixer_flops(config, T, mode) / rec["median_s"] / 1e12
            rec.update(peak_shares(rec["tflops"], peak))
        except Exception as err:  # noqa: BLE001 (recorded: the run goes on)
            rec["error"] = error_text(err)
            if device == "cuda":
                torch.cuda.empty_cache()
        module.zero_grad(set_to_none=True)
        records.append(rec)
    return records


def versions() -> dict:
    """Versions of what the numbers depend on (triton: None where it does not import)."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version}


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "" if value is None else format(value * scale, spec)


def _timing_cells(r: dict) -> str:
    """ms, TFLOP/s, % of both peaks, peak memory (GiB) and first-call seconds of a record: six table cells."""
    if "median_s" not in r:
        return " | ".join([""] * 6)
    return " | ".join(
        [
            f"{r['median_s'] * 1e3:.2f}",
            f"{r['tflops']:.4g}",
            _fmt(r["share_of_spec_peak"], ".1f", 100),
            _fmt(r["share_of_measured_peak"], ".1f", 100),
            _fmt(r.get("peak_mem_bytes"), ".2f", 2**-30),
            f"{r['first_call_s']:.1f}",
        ]
    )


TIMING_HEADER = "ms | TFLOP/s | % spec peak | % measured peak | peak mem (GiB) | first call (s)"


def markdown(result: dict) -> str:
    """The run as Markdown: the machine and peaks, the mixer, then one row per op record (errors in the last column)."""
    peak, v = result["peak"], result["versions"]
    where = result["machine"].get("gpu") or result["machine"]["cpu"]
    lines = [
        f"# LaCT op on {where} ({result['grid']} grid)",
        "",
        f"torch {v['torch']}, CUDA {v['cuda']}, triton {v['triton']}; muon_steps={result['muon_steps']}, "
        f"float32 matmul precision {result['float32_matmul_precision']}.",
        f"bf16 dense peak: spec {_fmt(peak['spec_bf16_tflops'], '.1f') or 'unknown'} TFLOP/s, measured "
        f"{_fmt(peak.get('measured_bf16_tflops'), '.4g') or 'failed'} TFLOP/s ({peak['matmul_n']}^3 bf16 matmul). "
        "TFLOP/s from 18·T·H·D·Dh + Newton-Schulz (x3 forward+backward); fp32 rows too are shares of the bf16 peaks. "
        "First call: compilation (torch.compile, Triton JIT) and warm-up.",
        "",
    ]
    if result["mixer"]:
        lines += [
            "## The mixer (sliding-window attention + LaCT)",
            "",
            "| preset, T, hidden | LaCT heads x dim, chunk | window, attention | dtype | mode "
            f"| {TIMING_HEADER} | error |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["mixer"]:
            lines.append(
                f"| {r['preset']}, {r['T']}, {r.get('hidden', '')} | {r.get('lact_heads', '')} x "
                f"{r.get('lact_head_dim', '')}, {r.get('chunk', '')} | {r.get('window', '')}, {r.get('attention', '')} "
                f"| {r.get('dtype', '')} | {r.get('mode', '')} | {_timing_cells(r)} "
                f"| {r.get('error') or r.get('skipped') or ''} |"
            )
        lines.append("")
    lines += [
        "## The op",
        "",
        f"| T x H x D, chunk | dtype | mode | variant | {TIMING_HEADER} | max rel diff vs torch / error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["records"]:
        last = (r.get("error") or "")[:160] or r.get("skipped") or _fmt(r.get("max_rel_diff_vs_torch"), ".1e")
        lines.append(
            f"| {r['T']} x {r['H']} x {r['D']}, {r['chunk']} | {r['dtype']} | {r['mode']} | {r['variant']} "
            f"| {_timing_cells(r)} | {last} |"
        )
    state = "complete" if result["complete"] else f"INCOMPLETE ({result.get('stopped') or 'running'})"
    lines += ["", f"{len(result['records'])} op records in {result['elapsed_s']:.0f} s, {state}."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """TFLOP/s of each variant at every point, bf16 forward+backward and forward side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, mode in zip(axes, MODES):
        points = []
        for r in result["records"]:
            key = f"{r['T']}x{r['H']}x{r['D']}\nc{r['chunk']}"
            if key not in points:
                points.append(key)
        for variant in VARIANTS:
            xs, ys = [], []
            for r in result["records"]:
                if r["variant"] == variant and r["mode"] == mode and r["dtype"] == "bf16" and "tflops" in r:
                    xs.append(points.index(f"{r['T']}x{r['H']}x{r['D']}\nc{r['chunk']}"))
                    ys.append(r["tflops"])
            if xs:
                ax.plot(xs, ys, marker="o", linestyle="", label=variant)
        ax.set_xticks(range(len(points)), points, fontsize=6)
        ax.set_title(f"lact_swiglu bf16 {mode}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("TFLOP/s")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(result: dict, output_dir: Path, stem: str) -> None:
    """``{stem}.json`` and ``{stem}.md`` under ``output_dir`` (rewritten after every record, so that a run
    stopped by a timeout leaves what it measured)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in ((f"{stem}.json", json.dumps(result, indent=1)), (f"{stem}.md", markdown(result))):
        tmp = output_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(output_dir / name)  # whole files only, even when a timeout kills the run mid-write


def benchmark(
    grid: str,
    device: str,
    output_dir: Path,
    stem: str,
    *,
    muon_steps: int = 5,
    budget_s: float = 0.25,
    total_budget_s: float | None = None,
    official_path: Path | None = None,
    compile_backend: str = "inductor",
    matmul_n: int = 8192,
) -> dict:
    """Run ``GRIDS[grid]`` on ``device`` and write ``{stem}.{json,md,png}`` under ``output_dir``.

    Order: the measured peak, then every point with ``torch``, then with ``triton``, then the mixer, then
    ``reference``, ``official`` and ``torch_compile`` (the slowest to start), so that a Triton kernel that
    wrecks the CUDA context costs only what follows it and a timeout cuts the compilations first.
    Points past ``total_budget_s`` seconds (the mixer, one point, runs anyway), or after the CUDA context
    is lost, are recorded as ``skipped``.
    ``official_path``: a file defining ``block_causal_lact_swiglu`` (adds the ``official`` variant).

    Returns:
        ``{"grid", "device", "machine", "versions", "peak", "mixer", "records", "elapsed_s", "complete", ...}``.
    """
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {tuple(GRIDS)}, got {grid!r}")
    start = time.monotonic()
    official = load_official(official_path) if official_path is not None else None
    name = torch.cuda.get_device_name() if device == "cuda" else None
    result = {
        "kind": "lact_op_gpu",
        "grid": grid,
        "device": device,
        "machine": machine_info(device),
        "versions": versions(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "muon_steps": muon_steps,
        "budget_s": budget_s,
        "official_file": None if official_path is None else str(official_path),
        "compile_backend": compile_backend,
        "peak": {"device_name": name, "spec_bf16_tflops": spec_peak_tflops(name), "matmul_n": matmul_n},
        "mixer": [],
        "records": [],
        "elapsed_s": 0.0,
        "complete": False,
    }
    try:
        result["peak"]["measured_bf16_tflops"] = measured_peak_tflops(device, matmul_n)
    except Exception as err:  # noqa: BLE001 (recorded: the shares of the measured peak stay empty)
        result["peak"]["error"] = error_text(err)
    points = GRIDS[grid]
    stages = [("op", "torch"), ("op", "triton"), ("mixer", None)]
    stages += [("op", v) for v in ("reference", "official", "torch_compile")]
    stopped = None
    for kind, variant in stages:
        if kind == "mixer":
            preset, T = MIXER_POINTS[grid]
            if stopped and stopped != "total budget spent":  # one point of seconds: it runs past the budget
                result["mixer"].append({"kind": "mixer", "preset": preset, "T": T, "skipped": stopped})
                continue
            mixer_dtype = "bf16" if device == "cuda" else "fp32"
            result["mixer"] += bench_mixer(preset, T, device, mixer_dtype, budget_s, result["peak"])
            if cuda_context_lost(device):
                stopped = "CUDA context lost after the mixer"
            result["elapsed_s"] = time.monotonic() - start
            write_results(result, output_dir, stem)
            continue
        for point in points:
            if variant not in ("torch", "triton") + point.extra or (variant == "official" and official is None):
                continue
            for dtype in DTYPES:
                if not stopped and total_budget_s is not None and time.monotonic() - start > total_budget_s:
                    stopped = "total budget spent"
                if stopped:
                    config = point_config(point, muon_steps)
                    result["records"].append(
                        {
                            "kind": "op",
                            "variant": variant,
                            "dtype": dtype,
                            "mode": "fwd_bwd",
                            **config,
                            "skipped": stopped,
                        }
                    )
                    continue
                result["records"] += bench_op_variant(
                    point, variant, dtype, device, muon_steps, budget_s, result["peak"], official, compile_backend
                )
                if cuda_context_lost(device):
                    stopped = f"CUDA context lost after {variant} at {point.T}x{point.H}x{point.D}, {point.chunk}"
                result["elapsed_s"] = time.monotonic() - start
                write_results(result, output_dir, stem)
    result["elapsed_s"] = time.monotonic() - start
    result["complete"] = stopped is None
    result["stopped"] = stopped
    write_results(result, output_dir, stem)
    plot(result, output_dir / f"{stem}.png")
    return result
