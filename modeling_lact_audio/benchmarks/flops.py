"""Analytic FLOP counts of one token mixer, checked against ``torch.utils.flop_counter.FlopCounterMode``.

Counts matmul FLOPs (2 per multiply-add) the way ``FlopCounterMode`` does: linear layers, batched
matmuls of the LaCT op (``op.op_flops``: 18·T·H·D·Dh plus Newton-Schulz per chunk) and
SDPA (4·Tq·Tk·hidden). *Executed* attention work follows ``LaCTAudioMixer._attention``: a window mixer
runs attention in query blocks of ``lact_chunk_size`` frames, each block over the keys
``[block_start - window, block_end)`` (``+ window`` on the right when bidirectional), clipped to the
sequence, so about C + W keys per query (C + 2W bidirectional); full attention runs over all T keys
(dense, even when causal). ``useful`` counts only the keys a query may see. Backward counts twice the
forward (``fwd_bwd`` = 3x forward), as ``FlopCounterMode`` does.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .op import op_flops


def visible_keys(T: int, config) -> float:
    """Mean number of keys a query may see under the config's pattern, window and LaCT chunk.

    Full attention by formula; a window by counting on at most 4096 frames (constant beyond a few chunks).
    """
    window = config.window_size if config.mixer != "attention" else None
    if window is None:
        if config.attention_pattern == "bidirectional":
            return float(T)
        if config.attention_pattern == "causal":
            return (T + 1) / 2
        C = config.lact_chunk_size
        return sum(min(T, (q // C + 1) * C) for q in range(T)) / T
    T = min(T, 4096)
    q = torch.arange(T)
    d = q[:, None] - q[None, :]
    near = d.abs() <= window
    if config.attention_pattern == "bidirectional":
        allowed = near
    else:
        allowed = (d >= 0) & near
        if config.attention_pattern == "block_causal":
            allowed |= (q[:, None] // config.lact_chunk_size) == (q[None, :] // config.lact_chunk_size)
    return allowed.sum().item() / T


def executed_keys(T: int, config) -> float:
    """Mean number of keys per query that ``LaCTAudioMixer`` runs attention over (no cache, no padding).

    Full attention: all T. A window W: query blocks ``[a, b)`` of ``lact_chunk_size`` frames (C) see the keys
    ``[a - W, b)``, or ``[a - W, b + W)`` when bidirectional, clipped to ``[0, T)``: C + W (C + 2W) inside.
    """
    W = config.window_size if config.mixer != "attention" else None
    if W is None:
        return float(T)
    C, right = config.lact_chunk_size, W if config.attention_pattern == "bidirectional" else 0
    total = 0
    for a in range(0, T, C):
        b = min(T, a + C)
        total += (b - a) * (min(T, b + right) - max(0, a - W))
    return total / T


def mixer_flops(config, T: int, mode: str = "fwd", useful: bool = False, keys: float | None = None) -> float:
    """FLOPs of ``LaCTAudioMixer(config)`` on ``[1, T, hidden]`` (T a multiple of the LaCT chunk).

    ``useful=True`` counts attention only over visible keys (``keys`` per query, else computed exactly);
    Otherwise attention counts the keys ``LaCTAudioMixer`` executes (``executed_keys``).
    """
    d = config.hidden_size
    flops = 2.0 * T * d * 3 * d + 2.0 * T * d * d  # qkv_proj, o_proj
    Tk = (keys if keys is not None else visible_keys(T, config)) if useful else executed_keys(T, config)
    flops += 4.0 * T * Tk * d  # SDPA: QK^T and PV over all heads
    if config.mixer == "lact":
        H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
        flops += 2.0 * T * d * 3 * H + 2.0 * T * d * d  # lr_proj, gate_proj
        if config.use_momentum:
            flops += 2.0 * T * d * H
        flops += op_flops(T, H, D, Dh, config.lact_chunk_size, config.muon_steps, config.use_momentum)
    return flops * (3 if mode == "fwd_bwd" else 1)


def _baddbmm_flop(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    """``baddbmm`` FLOPs from the operands' shapes ``[b, m, k] x [b, k, n]``: ``2 b m k n``."""
    b, m, k = a_shape
    return 2 * b * m * k * b_shape[-1]


def counted_flops(module, T: int, mode: str) -> int:
    """FLOPs that ``FlopCounterMode`` counts for one call of a mixer on random ``[1, T, hidden]`` input.

    Runs the mixer's eager attention (two matmuls, the same dense work as SDPA): ``FlopCounterMode`` has
    no formula for the CPU SDPA kernel (``aten._scaled_dot_product_flash_attention_for_cpu``) and would
    count zero for it.
    """
    d = module.config.hidden_size
    impl, module.config._attn_implementation = module.config._attn_implementation, "eager"
    x = torch.randn(1, T, d, requires_grad=mode == "fwd_bwd")
    # the op's in-place inference path adds its rank-C updates with baddbmm_, which has no formula of its own
    inplace = {torch.ops.aten.baddbmm_: _baddbmm_flop}
    with FlopCounterMode(display=False, custom_mapping=inplace) as counter:
        if mode == "fwd":
            with torch.no_grad():
                module(x)
        else:
            out, _ = module(x)
            out.square().mean().backward()
    module.zero_grad(set_to_none=True)
    module.config._attn_implementation = impl
    return counter.get_total_flops()
