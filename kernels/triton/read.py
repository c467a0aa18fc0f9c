"""Fused chunk read: ``o = (silu(q W0^T) * (q W2^T)) W1t`` in one kernel, and its autograd.

Each program owns a ``[BLOCK_T, BLOCK_O]`` tile of ``o`` (a block of tokens, a block of output
columns) and loops over blocks of hidden units: for each it accumulates ``g, h`` over D with
``tl.dot``, forms the gate ``silu(g) * h`` in registers and adds its product with the matching
rows of W1t to the fp32 output tile. The ``[BH, n, 2Dh]`` intermediates never reach global memory.
When D is wider than one output tile (``BLOCK_O`` is at most 256), every column block recomputes
``g, h``: 1 + 2/3 times the read's flops at D = 512.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from .gradient import gate, gate_projections
from .launch import block, precision, result_dtype, strides


@triton.jit
def _read_kernel(
    q_ptr, w02_ptr, w1t_ptr, o_ptr,
    n, D, Dh,
    sq_b, sq_t, sq_d, sw_b, sw_r, sw_d, s1_b, s1_r, s1_d, so_b, so_t, so_d,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr,
    COMPUTE: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
):  # fmt: skip
    # grid: (token blocks, BH, output column blocks)
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(2) * BLOCK_O + tl.arange(0, BLOCK_O)
    c_ok = c < D
    q_ptr += bh * sq_b
    w02_ptr += bh * sw_b
    w1t_ptr += bh * s1_b
    acc = tl.zeros([BLOCK_T, BLOCK_O], dtype=ACC)
    for h0 in range(0, Dh, BLOCK_H):
        j = h0 + tl.arange(0, BLOCK_H)
        g, h = gate_projections(
            q_ptr, sq_t, sq_d, w02_ptr, sw_r, sw_d, t, j, n, D, Dh, BLOCK_T, BLOCK_H, BLOCK_D, COMPUTE, ACC, DOT
        )
        a = g / (1.0 + tl.exp(-g)) * h  # silu(g) * h; zero for padded hidden units
        w1 = tl.load(w1t_ptr + j[:, None] * s1_r + c[None, :] * s1_d, mask=(j < Dh)[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(a.to(COMPUTE), w1.to(COMPUTE), acc, input_precision=DOT, out_dtype=ACC)
    ok = (t < n)[:, None] & c_ok[None, :]
    tl.store(o_ptr + bh * so_b + t[:, None] * so_t + c[None, :] * so_d, acc.to(o_ptr.dtype.element_ty), mask=ok)


def read_forward(W02: Tensor, W1t: Tensor, q: Tensor, dtype: torch.dtype) -> Tensor:
    """The fused read kernel: ``o [BH, n, D]`` in ``dtype`` for ``q [BH, n, D]``, ``W02 [BH, 2Dh, D]``,
    ``W1t [BH, Dh, D]`` (any strides, any floating dtypes)."""
    BH, n, D = q.shape
    Dh = W1t.shape[1]
    o = q.new_empty(BH, n, D, dtype=dtype)
    if n == 0:
        return o
    p = precision(dtype, q.device)
    BLOCK_O = block(D, 256)
    wide = BLOCK_O > 128  # with a wide fp32 output tile in registers: fewer hidden units per step
    tile = 64 if p.wide_tiles else 32
    BLOCK_T = block(n, 32 if wide and not p.wide_tiles else 64)
    BLOCK_H, BLOCK_D = block(Dh, 32 if wide else tile), block(D, tile)
    grid = (triton.cdiv(n, BLOCK_T), BH, triton.cdiv(D, BLOCK_O))
    _read_kernel[grid](
        q, W02, W1t, o, n, D, Dh, *strides(q), *strides(W02), *strides(W1t), *o.stride(),
        BLOCK_T=BLOCK_T, BLOCK_H=BLOCK_H, BLOCK_D=BLOCK_D, BLOCK_O=BLOCK_O,
        COMPUTE=p.compute, ACC=p.acc, DOT=p.dot, num_warps=8, num_stages=2,
    )  # fmt: skip
    return o


class _ReadChunk(torch.autograd.Function):
    """Forward: ``read_forward``. Backward: the fused gate kernel (``gradient.gate`` with ``y = dL/do``, no
    rates) recomputes ``g, h`` and gives ``dL/d(g, h)`` and ``silu(g) * h``; three ``torch.bmm`` do the rest."""

    @staticmethod
    def forward(ctx, W02, W1t, q, dtype):
        ctx.save_for_backward(W02, W1t, q)
        ctx.dtype = dtype
        return read_forward(W02, W1t, q, dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        W02, W1t, q = ctx.saved_tensors
        dtype = ctx.dtype
        dgh, a = gate(q, do, W02, W1t, None, dtype)  # [BH, n, 2Dh], [BH, n, Dh]
        dW02 = dW1t = dq = None
        with torch.autocast(do.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                dW02 = torch.bmm(dgh.mT, q.to(dtype)).to(W02.dtype)
            if ctx.needs_input_grad[1]:
                dW1t = torch.bmm(a.mT, do.to(dtype)).to(W1t.dtype)
            if ctx.needs_input_grad[2]:
                dq = torch.bmm(dgh, W02.to(dtype)).to(q.dtype)
        return dW02, dW1t, dq, None


def read_chunk(W02: Tensor, W1t: Tensor, q: Tensor) -> Tensor:
    """``kernels.chunk.read_chunk`` (out of place) as one fused Triton kernel, differentiable.

    Args:
        W02: ``[BH, 2Dh, D]`` (w0 over w2); W1t: ``[BH, Dh, D]``; q: ``[BH, n, D]``.

    Returns:
        ``o = f_W(q)`` ``[BH, n, D]`` in the autocast dtype under autocast, else the inputs' promoted dtype
        (6·n·D·Dh flops per head). Gradients for W02, W1t and q (see ``_ReadChunk``); no double backward.
    """
    return _ReadChunk.apply(W02, W1t, q, result_dtype(q, W02, W1t))
