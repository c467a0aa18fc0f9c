"""Our LaCT op side by side with the official ``block_causal_lact_swiglu`` (a1600012888/LaCT), on this machine.

The official function comes from a file the user supplies (``lact_llm/lact_model/ttt_operation.py`` of
the public repository, its CUDA ``torch.compile``/``autocast`` decorators removed); it is never vendored.
Both run the same inputs in float32 without Muon and without momentum (the official Newton-Schulz runs
in bf16 with five per-step coefficient sets, see ``kernels/naive.py``, so its outputs cannot agree with
ours, and bf16 is emulated on CPUs without native bf16). Calls alternate, one of each in turn, so that a
shared machine's load falls on all of them alike; each is timed by ``torch.utils.benchmark``
(``Timer.timeit(1)``: two warm-up calls, then the timed one), best of N.

Three calls per point: the official function; ours with ``output_final_state=False`` (the same work:
the last chunk's update, which no output reads, is skipped); ours returning the final state (what a
stream needs: one more chunk update).
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from ..kernels import FastWeightState, lact_swiglu
from .measure import machine_info
from .op import make_inputs

# (heads, head dim = hidden dim, chunk): issue 12's grid, chunk 512 and 2048 at head dims 128, 256 and 512
# (its table's four points and their other chunk size), T = 8192 tokens.
GRID = ((4, 256, 2048), (4, 256, 512), (2, 512, 512), (4, 128, 512), (2, 512, 2048), (4, 128, 2048))
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CANDIDATES = ("official", "ours", "ours_with_state")


def load_official(path: Path, name: str = "block_causal_lact_swiglu"):
    """The function ``name`` of the Python file ``path`` (imported under a private module name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official LaCT file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_lact_official_{abs(hash(path.resolve()))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise ValueError(f"{path} defines no function {name!r}")
    return getattr(module, name)


def official_layout(q, k, v, lr, w0, w1, w2) -> tuple:
    """Our ``[1, T, H, D]`` inputs in the official layout: ``(w0, w1, w2, q, k, v, lr0, lr1, lr2)`` with the
    heads as the batch, ``q, k, v [H, T, D]``, ``lr_i [H, T, 1]``, ``w0, w2 [H, Dh, D]``, ``w1 [H, D, Dh]``."""
    heads = lambda x: x[0].transpose(0, 1).contiguous()  # noqa: E731
    lr_h = heads(lr)
    return (w0[0], w1[0], w2[0], heads(q), heads(k), heads(v), *(lr_h[..., i : i + 1].contiguous() for i in range(3)))


def compare_point(official, T: int, H: int, D: int, chunk: int, repeats: int, clock: str = "wall") -> dict:
    """Time the official function and ours on one configuration (B=1, D = Dh, float32, no grad) and compare outputs.

    Args:
        official: ``block_causal_lact_swiglu(w0, w1, w2, q, k, v, lr0, lr1, lr2, chunk_size, use_muon, momentum)``.
        repeats: rounds; each times every candidate once, in an order that rotates from round to round.
        clock: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (this process's CPU time: with one thread,
            the time the call computed, whatever else the machine runs).

    Returns:
        The point, ``{candidate}_s`` (best) and ``{candidate}_median_s`` for ``CANDIDATES``, ``speedup``
        (official / ours, > 1 when ours is faster), ``speedup_with_state``, the outputs' ``max_abs_diff``
        and ``max_rel_diff`` (relative to the largest output), and ``agree``.
    """
    torch.manual_seed(0)
    q, k, v, lr, w0, w1, w2 = make_inputs(T, H, D, D)
    theirs = official_layout(q, k, v, lr, w0, w1, w2)

    def ours(keep_state: bool):
        state = FastWeightState.from_weights(w0, w1, w2)
        return lact_swiglu(q, k, v, lr, state, chunk_size=chunk, muon_steps=0, output_final_state=keep_state)[0]

    fns = {
        "official": lambda: official(*theirs, chunk_size=chunk, use_muon=False, momentum=None),
        "ours": lambda: ours(False),
        "ours_with_state": lambda: ours(True),
    }
    with torch.no_grad():
        o_official = fns["official"]()  # [H, T, D]
        o_ours = fns["ours"]()[0].transpose(0, 1)
        timers = {
            name: Timer("fn()", globals={"fn": fn}, timer=CLOCKS[clock], num_threads=torch.get_num_threads())
            for name, fn in fns.items()
        }
        times = {name: [] for name in fns}
        for r in range(repeats):
            for name in CANDIDATES[r % 3 :] + CANDIDATES[: r % 3]:
                times[name].append(timers[name].timeit(1).times[0])
    diff = (o_ours - o_official).abs().max().item()
    scale = o_official.abs().max().item()
    rel = diff / scale if scale > 0 else diff
    point = {"T": T, "H": H, "D": D, "Dh": D, "chunk": chunk, "repeats": repeats, "clock": clock}
    for name in CANDIDATES:
        ts = sorted(times[name])
        point[f"{name}_s"] = ts[0]
        point[f"{name}_median_s"] = ts[len(ts) // 2]
    point["speedup"] = point["official_s"] / point["ours_s"]
    point["speedup_with_state"] = point["official_s"] / point["ours_with_state_s"]
    point["max_abs_diff"], point["max_rel_diff"] = diff, rel
    point["agree"] = math.isfinite(rel) and rel < 1e-4
    return point


def compare(official_path: Path, grid=GRID, T: int = 8192, repeats: int = 5, clock: str = "wall") -> dict:
    """``compare_point`` over ``grid`` of ``(H, D, chunk)``; returns ``{"machine", "official_file", "points"}``."""
    official = load_official(official_path)
    points = [compare_point(official, T, H, D, chunk, repeats, clock) for H, D, chunk in grid]
    return {"machine": machine_info("cpu"), "official_file": str(official_path), "points": points}


def markdown(record: dict) -> str:
    """The comparison as a Markdown table, with the machine it ran on."""
    m = record["machine"]
    features = m["cpu_features"]
    p0 = record["points"][0]
    lines = [
        "# Our LaCT op vs the official `block_causal_lact_swiglu`",
        "",
        f"CPU: {m['cpu']} (capability {features['capability']}, native bf16: {features['native_bf16']}), "
        f"{m['threads']} thread(s), torch {m['torch']}, allocator {m['allocator']}, "
        f"load average {m['loadavg'][0]:.2f} at the start.",
        f"T = {p0['T']}, batch 1, float32, no Muon, no momentum, forward without autograd; "
        f"calls alternate, best of {p0['repeats']} ({p0['clock']} clock). "
        "'ours' skips the last chunk's update like the official function; "
        "'ours + state' also returns the final state.",
        "",
        "| heads x D, chunk | official | ours | ours + state | ours / official speed | with state | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in record["points"]:
        lines.append(
            f"| {p['H']} x {p['D']}, chunk {p['chunk']} | {p['official_s'] * 1e3:.0f} ms | {p['ours_s'] * 1e3:.0f} ms "
            f"| {p['ours_with_state_s'] * 1e3:.0f} ms | {p['speedup']:.2f}x | {p['speedup_with_state']:.2f}x "
            f"| {p['max_abs_diff']:.1e}{'' if p['agree'] else ' (DISAGREE)'} |"
        )
    return "\n".join(lines) + "\n"
