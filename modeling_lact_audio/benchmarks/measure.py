"""Measuring one benchmark point: time, peak memory, scaling exponents, and the machine it ran on.

Timing: ``torch.utils.benchmark``: one warm-up call, then ``Timer.adaptive_autorange`` until the spread
is small or the point's time budget is spent; a warm-up longer than the budget is itself the only sample.
Single calls and stateful steps (a decoding step changes the cache) are timed with its ``timer`` clock,
which synchronises an accelerator before reading the time (``Timer.timeit`` would add two warm-up calls).
Peak memory: on the CPU the resident set sampled by ``psutil`` while the warm-up call runs (the timed
calls run without the sampler thread, which competes for the GIL); on CUDA
``torch.cuda.max_memory_allocated`` above what was allocated before. Exponents: ``numpy.polyfit`` of
log(time) against log(T).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from pathlib import Path

import numpy as np
import psutil
import torch
import transformers
from torch.utils.benchmark import Timer
from torch.utils.benchmark import timer as clock

from ..cpu_features import describe_cpu

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: freed memory stays with the allocator, peaks are measured from a higher base
    _LIBC = None

_SAMPLE_INTERVAL_S = 1e-3
TIMING = "`torch.utils.benchmark` adaptive_autorange: fast calls are timed in blocks, each sample is per call"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict:
    """What the numbers were measured on: CPU model and features, threads, versions, GPU name, load average."""
    info = {
        "cpu": cpu_model(),
        "cpu_features": describe_cpu(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "loadavg": list(os.getloadavg()),
        # glibc malloc hands blocks over 32 MiB back to the kernel on free: long-context points then
        # pay their page faults on every repetition; `make bench` preloads jemalloc when installed.
        "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc",
        "transformers": transformers.__version__,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def release_memory(device: str) -> None:
    """Give freed memory back to the system, so the next point's peak is measured from a low base."""
    if device == "cuda":
        torch.cuda.empty_cache()
    elif _LIBC is not None:
        _LIBC.malloc_trim(0)


class PeakMemory:
    """Peak memory in bytes above the level at entry, of the code run inside ``with``.

    CPU: the process's resident set, sampled every millisecond by a ``psutil`` thread (a shorter spike
    can be missed); CUDA: the peak allocated by torch. ``method`` names what was used.
    """

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = None
        self.method = "torch.cuda.max_memory_allocated" if device == "cuda" else "psutil rss, sampled every 1 ms"

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_INTERVAL_S):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self._process = psutil.Process()
        self.base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self.base
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_bytes = self._peak - self.base
        return False


def measure(fn, device: str, budget_s: float) -> dict:
    """Time ``fn()`` and measure its peak memory.

    One warm-up call (its peak memory is the point's; ``warmup_s`` its time), then
    ``Timer.adaptive_autorange`` until the interquartile range is under 10% of the median or
    ``budget_s`` is spent. A warm-up longer than ``budget_s`` is itself the only sample
    (``warmup_only``: a call that long is not skewed by first-call costs).

    Returns:
        ``{"median_s", "min_s", "max_s", "n", "warmup_s", "peak_mem_bytes", "mem_method"}`` plus
        ``iqr_s`` and ``calls_per_sample`` (fast calls are timed in blocks; every time is per call) or
        ``warmup_only``.
    """
    with PeakMemory(device) as mem:
        warm = time_once(fn)
    memory = {"peak_mem_bytes": mem.peak_bytes, "mem_method": mem.method}
    if warm > budget_s:
        return {"median_s": warm, "min_s": warm, "max_s": warm, "n": 1, "warmup_s": warm, "warmup_only": True} | memory
    # Timer defaults to one thread; the benchmark chose its thread count already.
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    m = timer.adaptive_autorange(max_run_time=budget_s)
    return {
        "median_s": m.median,
        "min_s": min(m.times),
        "max_s": max(m.times),
        "iqr_s": m.iqr,
        "n": len(m.times),
        "calls_per_sample": m.number_per_run,
        "warmup_s": warm,
    } | memory


def time_once(fn) -> float:
    """Seconds of one call of ``fn()`` (an accelerator is synchronised around it)."""
    start = clock()
    fn()
    return clock() - start


def time_steps(step, n: int) -> list[float]:
    """Seconds of each of ``n`` successive calls of a stateful ``step()`` (one decoding or streaming step)."""
    return [time_once(step) for _ in range(n)]


def summarize(times: list[float]) -> dict:
    """Median, mean, min, 90th percentile and max of per-step times in seconds, and their number."""
    t = np.asarray(times)
    return {
        "median_s": float(np.median(t)),
        "mean_s": float(t.mean()),
        "min_s": float(t.min()),
        "p90_s": float(np.percentile(t, 90)),
        "max_s": float(t.max()),
        "n": len(t),
    }


def is_oom(err: BaseException) -> bool:
    """A failed allocation: CUDA OOM, the CPU allocator's error under the address-space cap, MemoryError."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(err).lower()
    return "can't allocate memory" in msg or "out of memory" in msg or "cannot allocate memory" in msg


def limit_address_space(extra_gb: float) -> None:
    """Cap this process's address space at its current size plus ``extra_gb``, so a point that needs more
    fails with an allocation error (recorded as out of memory) instead of swapping or being killed."""
    process = psutil.Process()
    limit = int(process.memory_info().vms + extra_gb * 1024**3)
    process.rlimit(psutil.RLIMIT_AS, (limit, limit))


def fit_exponent(Ts, times) -> float | None:
    """Slope of the least-squares line through (log T, log time): ``time ~ T**slope``.

    Args:
        Ts: sizes, e.g. sequence lengths ``[N]``.
        times: seconds ``[N]``; points without a positive time are left out.

    Returns:
        The exponent, or None with fewer than two distinct sizes.
    """
    pts = [(T, t) for T, t in zip(Ts, times) if t and t > 0]
    if len({T for T, _ in pts}) < 2:
        return None
    x, y = np.log(np.array(pts, dtype=float)).T
    return float(np.polyfit(x, y, 1)[0])


def predicted_next(Ts: list, times: list, T_next: int, exponent_floor: float = 1.0) -> float:
    """Extrapolate the time at ``T_next`` from the last two points' exponent, clipped to [floor, 2.5].

    With one point the exponent is 2 (attention's), so a ladder never underestimates its next size.
    """
    e = (fit_exponent(Ts[-2:], times[-2:]) or exponent_floor) if len(Ts) >= 2 else 2.0
    e = min(max(e, exponent_floor), 2.5)
    return times[-1] * (T_next / Ts[-1]) ** e
