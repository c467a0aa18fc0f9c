"""The reference LaCT op: a plain loop over chunks and tokens, written for clarity, not speed.

It is the test oracle for every fast implementation: per-token outer products, per-matrix
Newton-Schulz, and the chunk schedule spelled out step by step.

How this op differs from the official LaCT code
-----------------------------------------------
The official op is ``block_causal_lact_swiglu`` in ``lact_llm/lact_model/ttt_operation.py`` of
a1600012888/LaCT (read at commit 77c9ff0), called by ``LaCTSWIGLULayer`` in ``layer_lact_swiglu.py``.
The math of a chunk is the same: SwiGLU fast weights ``f_W(x) = w1 (silu(w0 x) * (w2 x))``, the
negative dot-product loss with per-token rates, momentum ``M = mean_chunk(momentum) M + dW`` before
Newton-Schulz, Newton-Schulz per matrix (transposed when taller than wide, divided by its Frobenius
norm + 1e-7), ``W += dW``, then every row rescaled to its initial norm (+ 1e-5). With ``muon_steps=0``
and float32 inputs both agree to float32 rounding (``eval/bench_lact_op.py --compare`` checks it). The
differences, each with its reason:

1. **Newton-Schulz coefficients.** Official: five per-step ``(a, b, c)`` sets, ``(4.0848, -6.8946,
   2.9270)`` ... ``(2.8366, -3.0525, 1.2012)``, for exactly five steps. Here: Muon's single set
   ``(3.4445, -4.7750, 2.0315)`` at every step (``NS_COEFFS``). Reason: ``muon_steps`` is a config
   option (0, 2, 5, ...) and a per-step schedule tuned for five steps says nothing for other counts;
   one set keeps the closed form that the tests check against numpy and that ``newton_schulz_factored``
   runs in the ``C x C`` factor space. After five steps the singular values lie in about [0.7, 1.2].
2. **Newton-Schulz precision.** Official: the update is cast to bf16, normalised and iterated in
   bf16 (its Frobenius norm too), and the bf16 result is added to the float32 weights. Here: the
   iteration runs in the update's dtype, float32 (float64 in the tests) unless the caller runs under
   bf16 autocast, and the norm in at least float32. Reason: CPUs without native bf16 (AVX2) emulate
   it about 1000x slower than float32, and the reference tests compare implementations to 1e-8;
   under bf16 autocast (GPUs, AVX512-BF16/AMX CPUs) the products do run in bf16, as Muon does.
3. **Precision of the gradient products.** Official: the rate-scaled factors are cast to the q/k/v
   dtype (bf16 in training) before the ``dW`` GEMMs ("the forward, backward produce bf16
   gradients"), and the output has v's dtype. Here: everything in the state's dtype (float32), or
   the matmuls in the autocast dtype under autocast, while the state stays float32. Reason: one
   precision policy, chosen by the caller's autocast, instead of one hard-wired for CUDA training.
4. **No q/k scale and offset, no RoPE on the fast-weight q/k.** The official layer RMS-normalises
   q and k, multiplies them by a learned per-channel scale and adds a learned offset (``qk_scale``,
   ``qk_offset``, fast-weight path only) and rotates them with the attention's RoPE before the op.
   These are layer choices, outside the op's contract (the op takes q, k as given), and our mixer
   (``LaCTAudioMixer``) leaves them out: its fast-weight q, k are the shared qkv projection after
   SiLU and a per-head L2 norm (the last two as in the official layer; the official ``l2_norm`` adds
   1e-5 to the norm, ``F.normalize`` clamps it at 1e-12). Reason: fewer parameters and one path
   from the shared projection in the first audio models; whether they help on audio is untested.
5. **One rate per token, head and matrix.** Official: ``lr0, lr1, lr2`` may be per channel
   (``lr_dim > 1``). Here ``lr`` is ``[B, T, H, 3]``, the official layer's default (``lr_dim=1``).
   Reason: one rate per matrix is that default; per-channel rates would multiply the rate
   projection by the head dim.
6. **The last chunk and the state.** Official: initial weights in, outputs out; the loop
   ``range(0, T - chunk, chunk)`` never updates with the last chunk (no output reads that update)
   and no state is returned. Here the op takes and returns a ``FastWeightState`` (weights, momentum,
   the partial chunk still filling up, the stream position), so that chunked prefill plus token-by-
   token decoding, and a stream fed piece by piece, equal one call; every complete chunk updates it.
   ``output_final_state=False`` drops the state and skips that last update, like the official op.
   The norms the rows are rescaled to are those of the weights the *stream* started from (carried
   in the state); the official op takes the norms of the weights passed to each call, the same thing
   for a single call.
7. **Orders.** Official: apply-then-update only (block causal, generation). Here also
   ``update_apply`` (streaming ASR: a chunk is read after its own update, so even an utterance
   shorter than one chunk adapts) and ``bidirectional`` (offline ASR). Reason: with apply-then-update
   and ``T <= chunk_size`` nothing ever updates (the hazard in ``lact_swiglu``'s docstring).
8. **Padding.** Official: the TTT branch ignores the attention mask (its comment: "current
   implementation ignores cu_seqlens for ttt-layer"), so padding frames update the weights. Here
   ``mask`` zeroes padded tokens' rates, leaves them out of a chunk's mean momentum, keeps weights and
   momentum unchanged for a chunk without real tokens, and zeroes padded outputs: a padded batch
   equals its examples run alone. Reason: ASR batches are padded; without it results depend on the
   batch.
9. **Options.** ``weight_norm`` (always on in the official op) and ``muon_steps`` (``use_muon``:
   five steps or none) are options here; the official layer's low-rank initial weights and learnable
   TTT output scale are not ported (the mixer has a per-head RMSNorm and a SiLU gate on the output).
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
    output_final_state: bool = True,
):
    """Reference implementation of ``lact_swiglu`` (same contract, ``output_final_state`` included; see its docstring).

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
            if full and (output_final_state or e < n_p + T):  # no output reads the last chunk's update
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
    return out, new_state if output_final_state else None
