"""The LaCT op alone: its FLOP count, benchmark inputs, one timed configuration, the reference loop.

Counts 18·T·H·D·Dh FLOPs per call (read 6, gradient recomputation 6, three gradient products 6) plus
Newton-Schulz's products per updated chunk, per head and matrix (``newton_schulz_flops``: dense, or in
the C x C factor space for chunks short next to the head dim, as the op runs them). Forward+backward
counts 3x the forward.
"""

from __future__ import annotations

import torch

from ..kernels import FastWeightState, lact_swiglu, lact_swiglu_reference
from ..kernels.newton_schulz import factored_is_cheaper, newton_schulz_flops
from .measure import measure


def op_flops(T: int, H: int, D: int, Dh: int, chunk: int, muon_steps: int, momentum: bool = False) -> float:
    """Forward FLOPs of one ``lact_swiglu`` call (B=1, apply_update, T a multiple of ``chunk``)."""
    flops = 18.0 * T * H * D * Dh
    # Without momentum the op orthogonalises a short chunk's rank-C update in its factor space.
    rank = chunk if not momentum and factored_is_cheaper(Dh, D, chunk, muon_steps) else None
    flops += (T // chunk) * H * 3 * newton_schulz_flops(Dh, D, muon_steps, rank)
    return flops


def make_inputs(T: int, H: int, D: int, Dh: int, requires_grad: bool = False, device: str = "cpu") -> list:
    """Float32 ``[q, k, v, lr, w0, w1, w2]`` for one op call (B=1).

    q, k: unit-norm ``[1, T, H, D]``; v: unit-scale ``[1, T, H, D]``; lr: small rates ``[1, T, H, 3]``;
    w0, w2: ``[1, H, Dh, D]`` and w1: ``[1, H, D, Dh]``, initialised at 1/sqrt(fan-in).
    """
    q, k = (torch.nn.functional.normalize(torch.randn(1, T, H, D, device=device), dim=-1) for _ in range(2))
    v = torch.randn(1, T, H, D, device=device)
    lr = torch.rand(1, T, H, 3, device=device) * 0.01
    w0, w2 = (torch.randn(1, H, Dh, D, device=device) / D**0.5 for _ in range(2))
    w1 = torch.randn(1, H, D, Dh, device=device) / Dh**0.5
    tensors = [q, k, v, lr, w0, w1, w2]
    if requires_grad:
        tensors = [t.requires_grad_(True) for t in tensors]
    return tensors


def gemm_rate(n: int, dtype: torch.dtype, device: str = "cpu", budget_s: float = 2.0) -> float:
    """Achieved GFLOP/s of an ``n x n x n`` matmul in ``dtype`` (the ceiling the op is compared with)."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n**3 / measure(lambda: a @ b, device, budget_s)["median_s"] / 1e9


def bench_config(
    T: int,
    H: int,
    D: int,
    Dh: int,
    chunk: int,
    muon_steps: int,
    mode: str,
    dtype: str,
    budget_s: float,
    device: str = "cpu",
) -> dict:
    """Time one configuration of ``lact_swiglu``.

    Args:
        mode: ``"fwd"`` or ``"fwd_bwd"``.
        dtype: ``"fp32"`` or ``"bf16"`` (autocast; ask ``cpu_features.cpu_has_native_bf16()`` first on a CPU).
        budget_s: the time budget of the measurement (``measure.measure``).

    Returns:
        The configuration, ``measure``'s timing and memory, and ``gflops`` at the median time.
    """
    q, k, v, lr, w0, w1, w2 = make_inputs(T, H, D, Dh, requires_grad=mode == "fwd_bwd", device=device)

    def run():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            state = FastWeightState.from_weights(w0, w1, w2)
            o, _ = lact_swiglu(q, k, v, lr, state, chunk_size=chunk, muon_steps=muon_steps)
        if mode == "fwd_bwd":
            o.float().square().mean().backward()

    with torch.set_grad_enabled(mode == "fwd_bwd"):
        t = measure(run, device, budget_s)
    flops = op_flops(T, H, D, Dh, chunk, muon_steps) * (3 if mode == "fwd_bwd" else 1)
    config = {"T": T, "H": H, "D": D, "Dh": Dh, "chunk": chunk, "muon_steps": muon_steps, "mode": mode, "dtype": dtype}
    return config | t | {"gflops": flops / t["median_s"] / 1e9}


def bench_reference(T: int, H: int, D: int, chunk: int, budget_s: float) -> dict:
    """The chunked op against the per-token reference loop on a small case (the reference is slow by design)."""
    q, k, v, lr, w0, w1, w2 = make_inputs(T, H, D, D)
    state = FastWeightState.from_weights(w0, w1, w2)
    with torch.no_grad():
        ref = measure(lambda: lact_swiglu_reference(q, k, v, lr, state, chunk_size=chunk), "cpu", budget_s)
        fast = measure(lambda: lact_swiglu(q, k, v, lr, state, chunk_size=chunk), "cpu", budget_s)
    return {
        "T": T,
        "H": H,
        "D": D,
        "chunk": chunk,
        "reference_s": ref["median_s"],
        "chunked_s": fast["median_s"],
        "speedup": ref["median_s"] / fast["median_s"],
    }
