"""The reference LaCT op: a plain loop over chunks and tokens, written for clarity, not speed.

It is the test oracle for every fast implementation: per-token outer products, per-matrix
Newton-Schulz, and the chunk schedule spelled out step by step.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .newton_schulz import newton_schulz
from .state import FastWeightState, PendingChunk
from .validation import check_lact_inputs, check_lact_output, chunk_spans


def _swiglu_apply(w0: Tensor, w1: Tensor, w2: Tensor, x: Tensor) -> Tensor:
    """``f_W(x) = w1 (silu(w0 x) * (w2 x))`` for one token of every (b, h): x ``[B, H, D]``."""
    g = torch.einsum("bhed,bhd->bhe", w0, x)
    h = torch.einsum("bhed,bhd->bhe", w2, x)
    return torch.einsum("bhde,bhe->bhd", w1, F.silu(g) * h)


def _token_update(w0, w1, w2, k, v, lr):
    """``-lr * dL/dW`` for one token of every (b, h), ``L = -<f_W(k), v>``; k, v ``[B, H, D]``, lr ``[B, H, 3]``."""
    g = torch.einsum("bhed,bhd->bhe", w0, k)
    h = torch.einsum("bhed,bhd->bhe", w2, k)
    dh = torch.einsum("bhde,bhd->bhe", w1, v)
    sig = torch.sigmoid(g)
    dsilu = sig * (1 + g * (1 - sig))
    dw1 = lr[..., 1, None, None] * torch.einsum("bhd,bhe->bhde", v, F.silu(g) * h)
    dw0 = lr[..., 0, None, None] * torch.einsum("bhe,bhd->bhed", dh * h * dsilu, k)
    dw2 = lr[..., 2, None, None] * torch.einsum("bhe,bhd->bhed", dh * F.silu(g), k)
    return dw0, dw1, dw2


def lact_swiglu_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    state: FastWeightState,
    *,
    chunk_size: int,
    order: str = "apply_update",
    muon_steps: int = 5,
    weight_norm: bool = True,
    momentum: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
):
    """Reference implementation of ``lact_swiglu`` (same contract; see its docstring).

    Returns:
        ``(o, state)``: ``o`` ``[B, T, H, D]`` in the state's dtype, zero at padded positions; the new state.
    """
    check_lact_inputs(q, k, v, lr, state, chunk_size, order, muon_steps, momentum, mask)
    B, T, H, D = q.shape
    dt = state.dtype
    q, k, v, lr = (t.to(dt) for t in (q, k, v, lr))
    mask = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
    momentum = None if momentum is None else momentum.to(dt)

    # The stream to learn from: tokens of an unfinished chunk first, then this call's tokens.
    pend = state.pending
    n_p = 0 if pend is None else pend.length
    if pend is not None:
        if (pend.momentum is None) != (momentum is None):
            raise ValueError("lact_swiglu: momentum must be given in every call of a stream or in none")
        k_u = torch.cat([pend.k.to(dt), k], 1)
        v_u = torch.cat([pend.v.to(dt), v], 1)
        lr_u = torch.cat([pend.lr.to(dt), lr], 1)
        mask_u = torch.cat([pend.mask, mask], 1)
        mom_u = None if momentum is None else torch.cat([pend.momentum.to(dt), momentum], 1)
    else:
        k_u, v_u, lr_u, mask_u, mom_u = k, v, lr, mask, momentum

    W = [state.w0, state.w1, state.w2]
    norms = [state.w0_norm, state.w1_norm, state.w2_norm]
    M = [state.m0, state.m1, state.m2]
    if mom_u is not None:
        M = [torch.zeros_like(w) if m is None else m for w, m in zip(W, M)]
    out = torch.zeros(B, T, H, D, dtype=dt, device=q.device)

    def read(s, e):
        # s, e index the update stream; outputs are written for this call's tokens only.
        for u in range(max(s, n_p), e):
            out[:, u - n_p] = _swiglu_apply(W[0], W[1], W[2], q[:, u - n_p]) * mask[:, u - n_p, None, None]

    def update(s, e):
        nonlocal W, M
        dW = [torch.zeros_like(w) for w in W]
        for u in range(s, e):
            rate = lr_u[:, u] * mask_u[:, u, None, None]  # padded tokens learn nothing
            for i, d in enumerate(_token_update(W[0], W[1], W[2], k_u[:, u], v_u[:, u], rate)):
                dW[i] = dW[i] + d
        count = mask_u[:, s:e].sum(1)  # [B]
        has = (count > 0)[:, None, None, None]
        new_M = M
        if mom_u is not None:
            beta = (mom_u[:, s:e] * mask_u[:, s:e, None]).sum(1) / count.clamp(min=1)[:, None]  # [B, H]
            new_M = [beta[..., None, None] * m + d for m, d in zip(M, dW)]
            dW = list(new_M)
        if muon_steps > 0:
            dW = [
                torch.stack([torch.stack([newton_schulz(d[b, h], muon_steps) for h in range(H)]) for b in range(B)])
                for d in dW
            ]
        new_W = [w + d for w, d in zip(W, dW)]
        if weight_norm:
            new_W = [w / (w.norm(dim=-1, keepdim=True) + 1e-5) * n0 for w, n0 in zip(new_W, norms)]
        W = [torch.where(has, nw, w) for nw, w in zip(new_W, W)]
        if mom_u is not None:
            M = [torch.where(has, nm, m) for nm, m in zip(new_M, M)]

    spans = chunk_spans(state.seen - n_p, n_p + T, chunk_size)
    new_pending = None
    for s, e, full in spans:
        if order == "apply_update":
            read(s, e)
            if full:
                update(s, e)
            else:
                new_pending = PendingChunk(
                    k=k_u[:, s:e],
                    v=v_u[:, s:e],
                    lr=lr_u[:, s:e],
                    momentum=None if mom_u is None else mom_u[:, s:e],
                    mask=mask_u[:, s:e],
                )
        elif order == "update_apply":
            update(s, e)
            read(s, e)
        else:
            update(s, e)
    if order == "bidirectional":
        read(0, n_p + T)

    new_state = FastWeightState(
        w0=W[0],
        w1=W[1],
        w2=W[2],
        w0_norm=norms[0],
        w1_norm=norms[1],
        w2_norm=norms[2],
        m0=M[0],
        m1=M[1],
        m2=M[2],
        pending=new_pending,
        seen=state.seen + T,
        chunk_size=chunk_size if T > 0 else state.chunk_size,
    )
    check_lact_output(out, new_state, k, lr)
    return out, new_state
