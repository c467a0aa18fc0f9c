"""Shared machinery of the efficiency benchmark: device-aware timing, peak memory, sizes, subprocess jobs.

Timing: the median of repeated runs after a warm-up, with min/max (CPU: ``time.perf_counter`` through
``eval/bench_lact_op.time_call``; CUDA: CUDA events). Peak memory: CPU, the peak resident set of the
process during the measured call (``VmHWM`` reset through ``/proc/self/clear_refs``, falling back to
``ru_maxrss``); CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the call.
Every point that may run out of memory runs in a worker subprocess (``worker.py``) with an address-space
cap, so an out-of-memory point is recorded instead of killing the benchmark (or a neighbour's job).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

EVAL_DIR = Path(__file__).resolve().parent.parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

from bench_lact_op import cpu_model, op_flops, time_call  # noqa: E402, F401  (op_flops: re-exported)

RESULTS = EVAL_DIR / "results" / "efficiency"
WORKER = Path(__file__).resolve().parent / "worker.py"
RECORD_PREFIX = "@@record "

# Sizes per mode. ``frames`` are model frames (after the front end's subsampling: 25 per second of audio
# for the log-mel presets); decode contexts are audio-token frames.
SIZES = {
    "smoke": dict(
        preset="tiny",
        layer_T=(128, 256),
        train_T=(128, 256),
        infer_T=(128, 256),
        decode_ctx=(64, 128),
        decode_steps=8,
        prefill_piece=64,
        stream_ms=(80, 160),
        stream_seconds=1.0,
        flop_check_T=64,
        repeats=1,
        op=dict(gemm_n=256, configs=[(512, 1, 64, 128)], reference=(64, 1, 16, 16)),
        budget_s=2.0,
        point_cap_s=20.0,
        job_timeout_s=60.0,
        mem_cap_gb=4.0,
    ),
    "quick": dict(
        preset="small",
        layer_T=(1024, 2048, 4096),
        train_T=(512, 1024),
        infer_T=(512, 1024),
        decode_ctx=(256, 1024),
        decode_steps=32,
        prefill_piece=256,
        stream_ms=(80, 160, 320, 640),
        stream_seconds=5.0,
        flop_check_T=256,
        repeats=2,
        op=dict(gemm_n=1024, configs=[(2048, 1, 256, 512), (2048, 2, 128, 512)], reference=(256, 2, 64, 64)),
        budget_s=10.0,
        point_cap_s=30.0,
        job_timeout_s=240.0,
        mem_cap_gb=8.0,
    ),
    "full": dict(
        preset="small",
        layer_T=(1024, 2048, 4096, 8192, 16384, 32768, 65536),
        train_T=(2048, 8192, 16384),
        infer_T=(2048, 8192, 16384),
        decode_ctx=(1024, 4096, 16384, 32768),
        decode_steps=64,
        prefill_piece=1024,
        stream_ms=(80, 160, 320, 640),
        stream_seconds=20.0,
        flop_check_T=512,
        repeats=3,
        op=dict(
            gemm_n=2048,
            configs=[(8192, 1, 256, 512), (8192, 1, 256, 2048), (8192, 1, 512, 512), (8192, 2, 128, 512)],
            reference=(512, 2, 64, 64),
        ),
        budget_s=20.0,
        point_cap_s=150.0,
        model_point_cap_s=200.0,
        job_timeout_s=600.0,
        mem_cap_gb=10.0,
    ),
}


def machine_info(device: str) -> dict:
    """What the numbers were measured on: CPU model, threads, torch version, GPU name, load average."""
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "loadavg": list(os.getloadavg()),
        # glibc malloc hands blocks over 32 MiB back to the kernel on free: long-context points then
        # pay their page faults on every repetition; `make bench` preloads jemalloc when installed.
        "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc",
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    info["transformers"] = transformers.__version__
    return info


def autocast(device: str):
    """bf16 autocast on CUDA (the GPU path), nothing on the CPU (fp32: fp16/bf16 SDPA backward is slow there)."""
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_cuda(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def measure(fn, device: str, repeats: int, budget_s: float | None = None) -> dict:
    """Median (min, max) seconds of ``fn()`` over up to ``repeats`` runs after one timed warm-up run.

    When the warm-up shows that ``repeats`` runs would take longer than ``budget_s``, fewer (at least one)
    are taken; ``n`` says how many. A warm-up longer than ``budget_s`` is itself the only sample
    (``warmup_only``: a run that long is not skewed by first-call costs). ``warmup_s`` is the warm-up's time.
    """
    t0 = time.perf_counter()
    fn()
    sync(device)
    warm = time.perf_counter() - t0
    if budget_s is not None and warm > budget_s:
        return {"median_s": warm, "min_s": warm, "max_s": warm, "n": 1, "warmup_s": warm, "warmup_only": True}
    n = repeats
    if budget_s is not None and warm > 0:
        n = max(1, min(repeats, int(budget_s / warm)))
    if device == "cuda":
        t = _time_cuda(fn, n)
    else:
        t = time_call(fn, n, warmup=0)
    return {**t, "n": n, "warmup_s": warm}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory (bytes) above the level at entry, of the code run inside ``with``.

    CPU: peak resident set (VmHWM, reset at entry when ``/proc/self/clear_refs`` is writable; otherwise
    ``ru_maxrss``, a process-lifetime high-water mark, so only the first large point is exact). CUDA: peak
    allocated by torch. ``method`` names what was used.
    """

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = None
        self.method = None

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "ru_maxrss"
        rss = _status_kb("VmRSS")
        self.base = 1024 * (rss if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
        else:
            hwm = _status_kb("VmHWM") if self.method == "VmHWM" else None
            peak = 1024 * (hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            self.peak_bytes = max(0, peak - self.base)
        return False


def is_oom(err: BaseException) -> bool:
    """A failed allocation: CUDA OOM, the CPU allocator's error under the address-space cap, MemoryError."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    msg = str(err).lower()
    return "can't allocate memory" in msg or "out of memory" in msg or "cannot allocate memory" in msg


def limit_address_space(extra_gb: float) -> None:
    """Cap this process's address space at its current size plus ``extra_gb`` (CPU workers only)."""
    vm = _status_kb("VmSize") or 0
    limit = int(vm * 1024 + extra_gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def fit_exponent(Ts, times) -> float | None:
    """Least-squares slope of log(time) against log(T) (None with fewer than two points)."""
    pts = [(math.log(T), math.log(t)) for T, t in zip(Ts, times) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def emit(record: dict) -> None:
    """Worker side: hand one record to the parent (one JSON line, flushed at once)."""
    print(RECORD_PREFIX + json.dumps(record), flush=True)


def _run_inline(job: dict) -> tuple:
    """Run ``job`` in this process (tiny sizes: no memory isolation, no timeout, no worker start-up cost)."""
    import io

    import worker

    threads = torch.get_num_threads()
    torch.set_num_threads(job["threads"])
    buf = io.StringIO()
    status = "ok (inline)"
    try:
        with contextlib.redirect_stdout(buf):
            worker.JOBS[job["kind"]](job)
    except Exception as err:  # a failed job is recorded, not fatal
        status = f"error (inline): {type(err).__name__}: {err}"
    finally:
        torch.set_num_threads(threads)
    return buf.getvalue(), status


def run_job(job: dict, timeout_s: float, inline: bool = False) -> dict:
    """Run ``job`` in a worker subprocess (or in this process with ``inline``); returns its records and how it ended.

    Returns ``{"records": [...], "status": "ok" | "timeout" | "killed (rc=...)" | "error: ...", "wall_s"}``. Records
    emitted before a timeout or a crash are kept, so a ladder of sizes keeps its completed points.
    """
    t0 = time.perf_counter()
    if inline:
        out, status = _run_inline(job)
        records = [json.loads(x[len(RECORD_PREFIX) :]) for x in out.splitlines() if x.startswith(RECORD_PREFIX)]
        return {"records": records, "status": status, "wall_s": time.perf_counter() - t0}
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
        status = "ok" if proc.returncode == 0 else f"killed (rc={proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        status = "timeout"
    records = [json.loads(line[len(RECORD_PREFIX) :]) for line in out.splitlines() if line.startswith(RECORD_PREFIX)]
    if status != "ok":
        tail = err.strip().splitlines()[-3:]
        status = status + (": " + " | ".join(tail) if tail else "")
    return {"records": records, "status": status, "wall_s": time.perf_counter() - t0}


def predicted_next(Ts: list, times: list, T_next: int, exponent_floor: float = 1.0) -> float:
    """Extrapolate the time at ``T_next`` from the last two points' local exponent (at least ``exponent_floor``)."""
    if len(Ts) >= 2:
        e = fit_exponent(Ts[-2:], times[-2:]) or exponent_floor
    else:
        e = 2.0
    e = min(max(e, exponent_floor), 2.5)
    return times[-1] * (T_next / Ts[-1]) ** e
