"""Fused chunk gradient: the SwiGLU gate's projections, SiLU, its derivative and the rates in one kernel.

``gate`` computes, per token t and hidden unit j (``g = x w0^T``, ``h = x w2^T``, ``dh = y W1t^T``)::

    x02[t, j]      = lr0_t * dh * h * silu'(g)      y1[t, j] = lr1_t * silu(g) * h
    x02[t, Dh + j] = lr2_t * dh * silu(g)

from tiles of ``g, h, dh`` accumulated over D in registers: the ``[BH, n, 2Dh]`` projections never
reach global memory. With ``x = k, y = v`` these are ``chunk_gradient``'s factors; with ``x = q``,
``y = dL/do`` and no rates, they are the read's gradient with respect to ``(g, h)`` and its gate
``silu(g) * h`` (``read.py``'s backward).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..chunk import chunk_gradient as torch_chunk_gradient
from .launch import block, precision, result_dtype, strides


@triton.jit
def gate_projections(
    x_ptr, sx_t, sx_d, w_ptr, sw_r, sw_d, t, j, n, D, Dh,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    COMPUTE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """``(x[t] w0[j]^T, x[t] w2[j]^T)`` as ``[BLOCK_T, BLOCK_H]`` tiles, zero outside the matrices;
    ``w`` is ``W02`` (w0 in rows ``[0, Dh)``, w2 in rows ``[Dh, 2Dh)``)."""
    g = tl.zeros([BLOCK_T, BLOCK_H], dtype=ACC)
    h = tl.zeros([BLOCK_T, BLOCK_H], dtype=ACC)
    t_ok = t < n
    j_ok = j < Dh
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        x = tl.load(x_ptr + t[:, None] * sx_t + d[None, :] * sx_d, mask=t_ok[:, None] & d_ok[None, :], other=0.0)
        w_at = w_ptr + j[None, :] * sw_r + d[:, None] * sw_d  # [BLOCK_D, BLOCK_H]: w^T
        w_ok = j_ok[None, :] & d_ok[:, None]
        w0 = tl.load(w_at, mask=w_ok, other=0.0)
        w2 = tl.load(w_at + Dh * sw_r, mask=w_ok, other=0.0)
        x = x.to(COMPUTE)
        g = tl.dot(x, w0.to(COMPUTE), g, input_precision=DOT, out_dtype=ACC)
        h = tl.dot(x, w2.to(COMPUTE), h, input_precision=DOT, out_dtype=ACC)
    return g, h


@triton.jit
def projection(
    x_ptr, sx_t, sx_d, w_ptr, sw_r, sw_d, t, j, n, D, Dh,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    COMPUTE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    """``x[t] w[j]^T`` as a ``[BLOCK_T, BLOCK_H]`` tile, zero outside the matrices (``w [Dh, D]``)."""
    acc = tl.zeros([BLOCK_T, BLOCK_H], dtype=ACC)
    t_ok = t < n
    j_ok = j < Dh
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < D
        x = tl.load(x_ptr + t[:, None] * sx_t + d[None, :] * sx_d, mask=t_ok[:, None] & d_ok[None, :], other=0.0)
        w = tl.load(w_ptr + j[None, :] * sw_r + d[:, None] * sw_d, mask=j_ok[None, :] & d_ok[:, None], other=0.0)
        acc = tl.dot(x.to(COMPUTE), w.to(COMPUTE), acc, input_precision=DOT, out_dtype=ACC)
    return acc


@triton.jit
def _gate_kernel(
    x_ptr, y_ptr, w02_ptr, w1t_ptr, lr_ptr, x02_ptr, y1_ptr,
    n, D, Dh,
    sx_b, sx_t, sx_d, sy_b, sy_t, sy_d, sw_b, sw_r, sw_d, s1_b, s1_r, s1_d,
    sl_b, sl_t, sl_k, so_b, so_t, so_h, sa_b, sa_t, sa_h,
    HAS_LR: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    COMPUTE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    # grid: (token blocks, BH, Dh blocks)
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    j = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    g, h = gate_projections(
        x_ptr + bh * sx_b, sx_t, sx_d, w02_ptr + bh * sw_b, sw_r, sw_d, t, j, n, D, Dh,
        BLOCK_T, BLOCK_H, BLOCK_D, COMPUTE, ACC, DOT,
    )  # fmt: skip
    dh = projection(
        y_ptr + bh * sy_b, sy_t, sy_d, w1t_ptr + bh * s1_b, s1_r, s1_d, t, j, n, D, Dh,
        BLOCK_T, BLOCK_H, BLOCK_D, COMPUTE, ACC, DOT,
    )  # fmt: skip
    sig = 1.0 / (1.0 + tl.exp(-g))
    silu = g * sig
    dsilu = sig + silu * (1.0 - sig)
    x0 = dh * h * dsilu
    x2 = dh * silu
    y1 = silu * h
    t_ok = t < n
    if HAS_LR:
        lr_at = lr_ptr + bh * sl_b + t * sl_t
        x0 = x0 * tl.load(lr_at, mask=t_ok, other=0.0).to(ACC)[:, None]
        y1 = y1 * tl.load(lr_at + sl_k, mask=t_ok, other=0.0).to(ACC)[:, None]
        x2 = x2 * tl.load(lr_at + 2 * sl_k, mask=t_ok, other=0.0).to(ACC)[:, None]
    ok = t_ok[:, None] & (j < Dh)[None, :]
    x02_at = x02_ptr + bh * so_b + t[:, None] * so_t + j[None, :] * so_h
    tl.store(x02_at, x0.to(x02_ptr.dtype.element_ty), mask=ok)
    tl.store(x02_at + Dh * so_h, x2.to(x02_ptr.dtype.element_ty), mask=ok)
    tl.store(y1_ptr + bh * sa_b + t[:, None] * sa_t + j[None, :] * sa_h, y1.to(y1_ptr.dtype.element_ty), mask=ok)


def gate(x: Tensor, y: Tensor, W02: Tensor, W1t: Tensor, lr: Optional[Tensor], dtype: torch.dtype):
    """The fused gate kernel (module docstring): ``(x02 [BH, n, 2Dh], y1 [BH, n, Dh])`` in ``dtype``.

    x, y: ``[BH, n, D]``; W02: ``[BH, 2Dh, D]``; W1t: ``[BH, Dh, D]``; lr: ``[BH, n, 3]`` or None (rates 1).
    Any strides, any floating dtypes (cast in registers, see ``launch.precision``).
    """
    BH, n, D = x.shape
    Dh = W1t.shape[1]
    x02 = x.new_empty(BH, n, 2 * Dh, dtype=dtype)
    y1 = x.new_empty(BH, n, Dh, dtype=dtype)
    if n == 0:
        return x02, y1
    p = precision(dtype, x.device)
    tile = 64 if p.wide_tiles else 32
    BLOCK_T, BLOCK_H, BLOCK_D = block(n, 64), block(Dh, tile), block(D, tile)
    grid = (triton.cdiv(n, BLOCK_T), BH, triton.cdiv(Dh, BLOCK_H))
    lr_arg, lr_strides = (x02, (0, 0, 0)) if lr is None else (lr, strides(lr))
    _gate_kernel[grid](
        x, y, W02, W1t, lr_arg, x02, y1, n, D, Dh,
        *strides(x), *strides(y), *strides(W02), *strides(W1t), *lr_strides, *x02.stride(), *y1.stride(),
        HAS_LR=lr is not None, BLOCK_T=BLOCK_T, BLOCK_H=BLOCK_H, BLOCK_D=BLOCK_D,
        COMPUTE=p.compute, ACC=p.acc, DOT=p.dot, num_warps=8, num_stages=2,
    )  # fmt: skip
    return x02, y1


class _ChunkGradient(torch.autograd.Function):
    """Forward: the fused kernel. Backward: PyTorch's ``chunk_gradient`` expression recomputed under autograd
    (in the forward's autocast state) and differentiated with ``torch.autograd.grad``: exact, not fused."""

    @staticmethod
    def forward(ctx, W02, W1t, k, v, lr, dtype):
        device = k.device.type
        ctx.autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        ctx.save_for_backward(W02, W1t, k, v, lr)
        return gate(k, v, W02, W1t, lr, dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dx02, dy1):
        needs = ctx.needs_input_grad[:5]
        device = dx02.device.type
        with torch.enable_grad(), torch.autocast(device, dtype=ctx.autocast, enabled=ctx.autocast is not None):
            leaves = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, needs)]
            x02, y1 = torch_chunk_gradient(*leaves)
            wanted = [leaf for leaf, need in zip(leaves, needs) if need]
            grads = iter(
                torch.autograd.grad((x02, y1), wanted, (dx02.to(x02.dtype), dy1.to(y1.dtype)), allow_unused=True)
            )
        return (*(next(grads) if need else None for need in needs), None)


def chunk_gradient(W02: Tensor, W1t: Tensor, k: Tensor, v: Tensor, lr: Tensor):
    """``kernels.chunk.chunk_gradient`` (out of place) as one fused Triton kernel, differentiable.

    Args:
        W02: ``[BH, 2Dh, D]`` (w0 over w2); W1t: ``[BH, Dh, D]``.
        k, v: ``[BH, C, D]``; lr: ``[BH, C, 3]`` rates for (w0, w1, w2), zero on padding.

    Returns:
        ``(x02 [BH, C, 2Dh], y1 [BH, C, Dh])`` with the rates folded in (``dW02 = x02^T k``,
        ``dW1t = y1^T v``), in the autocast dtype under autocast, else the inputs' promoted dtype.
        The backward recomputes the PyTorch expression (see ``_ChunkGradient``); no double backward.
    """
    return _ChunkGradient.apply(W02, W1t, k, v, lr, result_dtype(k, v, lr, W02, W1t))
