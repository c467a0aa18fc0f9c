"""Fused weight renormalisation: every row of W02 and every column of W1t rescaled to a target norm.

One kernel rescales the rows of a ``[BH, M, N]`` matrix, ``W * norm / (||W_row|| + 1e-5)``, in two
passes over each block of rows (sum of squares, then scale); W1t's columns are the rows of its
transposed view, so the same kernel serves both by strides. Same formula as ``chunk._renormalise``.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import block, precision


@triton.jit
def _renorm_rows_kernel(
    w_ptr, norm_ptr, out_ptr, M, N,
    sw_b, sw_m, sw_n, sn_b, sn_m, so_b, so_m, so_n,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    # grid: (row blocks, BH)
    bh = tl.program_id(1).to(tl.int64)
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < M
    w_ptr += bh * sw_b + m[:, None] * sw_m
    out_ptr += bh * so_b + m[:, None] * so_m
    squares = tl.zeros([BLOCK_M], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        w = tl.load(w_ptr + cols[None, :] * sw_n, mask=m_ok[:, None] & (cols < N)[None, :], other=0.0).to(ACC)
        squares += tl.sum(w * w, axis=1)
    target = tl.load(norm_ptr + bh * sn_b + m * sn_m, mask=m_ok, other=0.0).to(ACC)
    scale = target / (tl.sqrt(squares) + tl.full([BLOCK_M], 1e-5, ACC))
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        ok = m_ok[:, None] & (cols < N)[None, :]
        w = tl.load(w_ptr + cols[None, :] * sw_n, mask=ok, other=0.0).to(ACC)
        tl.store(out_ptr + cols[None, :] * so_n, (w * scale[:, None]).to(out_ptr.dtype.element_ty), mask=ok)


def _renormalise_forward(W: Tensor, norm: Tensor, dim: int) -> Tensor:
    """``W * norm / (W.norm(dim=dim, keepdim=True) + 1e-5)`` for ``W [BH, R, C]`` and ``dim`` -1 (norm
    ``[BH, R, 1]``) or -2 (norm ``[BH, 1, C]``); a new contiguous tensor in the promoted dtype."""
    out = W.new_empty(W.shape, dtype=torch.promote_types(W.dtype, norm.dtype))
    rows, target, out_rows = (W, norm[..., 0], out) if dim == -1 else (W.mT, norm[:, 0], out.mT)
    BH, M, N = rows.shape
    BLOCK_M, BLOCK_N = block(M, 16), block(N, 256)
    _renorm_rows_kernel[(triton.cdiv(M, BLOCK_M), BH)](
        rows, target, out_rows, M, N, *rows.stride(), *target.stride(), *out_rows.stride(),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, ACC=precision(out.dtype, W.device).acc, num_warps=4,
    )  # fmt: skip
    return out


class _Renormalise(torch.autograd.Function):
    """Forward: the kernel. Backward: the PyTorch formula recomputed and differentiated (elementwise, exact)."""

    @staticmethod
    def forward(ctx, W, norm, dim):
        ctx.save_for_backward(W, norm)
        ctx.dim = dim
        return _renormalise_forward(W, norm, dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        needs = ctx.needs_input_grad[:2]
        with torch.enable_grad(), torch.autocast(grad.device.type, enabled=False):
            W, norm = (t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, needs))
            out = W * (norm / (W.norm(dim=ctx.dim, keepdim=True) + 1e-5))
            wanted = [t for t, need in zip((W, norm), needs) if need]
            grads = iter(torch.autograd.grad(out, wanted, grad.to(out.dtype), allow_unused=True))
        return (*(next(grads) if need else None for need in needs), None)


def renormalise(W02: Tensor, W1t: Tensor, norm02: Tensor, norm1t: Tensor):
    """``kernels.chunk._renormalise`` as Triton kernels, differentiable (backward in PyTorch).

    Args:
        W02: ``[BH, 2Dh, D]``, rows rescaled to ``norm02 [BH, 2Dh, 1]``; W1t: ``[BH, Dh, D]``, columns
            rescaled to ``norm1t [BH, 1, D]`` (the row norms of w1).

    Returns:
        ``(W02, W1t)`` renormalised, new contiguous tensors: ``W * norm / (||W|| + 1e-5)``.
    """
    return _Renormalise.apply(W02, norm02, -1), _Renormalise.apply(W1t, norm1t, -2)
