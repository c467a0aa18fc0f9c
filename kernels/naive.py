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
10. **Ablation options, not in the official op.** ``update_rule="adam"`` (a per-element normalised step
   with a second moment carried in the state, instead of momentum + Muon) and ``chunk_ends`` (variable
   chunk boundaries per example, ``chunk_size`` the longest chunk). Reason: the ablation study asks
   whether Muon and fixed chunks matter; both are spelled out in ``lact_swiglu_reference`` below.
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


def _example_spans(ends: list, fill: int, n_pending: int, chunk_size: int):
    """One example's chunks with variable boundaries, in its update stream (``n_pending`` pending tokens, then
    the call's ``len(ends)`` tokens): ``([(s, e, complete), ...], positions of the chunk left open)``."""
    spans, start, count = [], 0, fill
    for t, end in enumerate(ends):
        count += 1
        if end or count == chunk_size:
            spans.append((start, n_pending + t + 1, True))
            start, count = n_pending + t + 1, 0
    if start < n_pending + len(ends):
        spans.append((start, n_pending + len(ends), False))
    return spans, count


def _run_spans(q, k_u, v_u, lr_u, mask_u, mom_u, n_p, W, M, V, count, norms, spans, opts):
    """The chunk schedule over ``spans`` (shared by the batch) for the update stream ``k_u, v_u [B, n_p + T, H, D]``,
    ``lr_u [B, n_p + T, H, 3]``, ``mask_u [B, n_p + T]``, ``mom_u [B, n_p + T, H]`` or None, whose first ``n_p``
    tokens are pending ones; reads ``q [B, T, H, D]``. Returns ``(out, W, M, V, count, pending span or None)``."""
    B, T, H, D = q.shape
    order = opts["order"]
    out = torch.zeros(B, T, H, D, dtype=q.dtype, device=q.device)

    def read(s, e):
        # s, e index the update stream; outputs are written for this call's tokens only.
        for u in range(max(s, n_p), e):
            out[:, u - n_p] = _swiglu_apply(W[0], W[1], W[2], q[:, u - n_p]) * mask_u[:, u, None, None]

    def update(s, e):
        nonlocal W, M, V, count
        G = [torch.zeros_like(w) for w in W]
        for u in range(s, e):
            rate = lr_u[:, u] * mask_u[:, u, None, None]  # padded tokens learn nothing
            for i, d in enumerate(_token_update(W[0], W[1], W[2], k_u[:, u], v_u[:, u], rate)):
                G[i] = G[i] + d
        real = mask_u[:, s:e].sum(1)  # [B]
        has = (real > 0)[:, None, None, None]
        dW = G
        new_M = M
        if mom_u is not None:
            beta = (mom_u[:, s:e] * mask_u[:, s:e, None]).sum(1) / real.clamp(min=1)[:, None]  # [B, H]
            new_M = [beta[..., None, None] * m + g for m, g in zip(M, G)]
            dW = list(new_M)
        new_V, new_count = V, count
        if opts["update_rule"] == "adam":
            b2, eps = opts["adam_beta2"], opts["adam_eps"]
            new_V = [b2 * vv + (1 - b2) * g * g for vv, g in zip(V, G)]
            new_count = count + 1
            correction = (1 - b2 ** new_count.to(q.dtype))[..., None, None]  # [B, H, 1, 1]
            rates = (lr_u[:, s:e] * mask_u[:, s:e, None, None]).sum(1) / real.clamp(min=1)[:, None, None]  # [B, H, 3]
            dW = [
                rates[..., i, None, None] * f / torch.sqrt(vv / correction + eps**2)
                for i, (f, vv) in enumerate(zip(dW, new_V))
            ]
        if opts["muon_steps"] > 0:
            dW = [
                torch.stack(
                    [torch.stack([newton_schulz(d[b, h], opts["muon_steps"]) for h in range(H)]) for b in range(B)]
                )
                for d in dW
            ]
        new_W = [w + d for w, d in zip(W, dW)]
        if opts["weight_norm"]:
            new_W = [w / (w.norm(dim=-1, keepdim=True) + 1e-5) * n0 for w, n0 in zip(new_W, norms)]
        W = [torch.where(has, nw, w) for nw, w in zip(new_W, W)]
        if mom_u is not None:
            M = [torch.where(has, nm, m) for nm, m in zip(new_M, M)]
        if opts["update_rule"] == "adam":
            V = [torch.where(has, nv, vv) for nv, vv in zip(new_V, V)]
            count = torch.where(has[..., 0, 0], new_count, count)

    pending = None
    for s, e, full in spans:
        if order == "apply_update":
            read(s, e)
            if full and (opts["output_final_state"] or e < n_p + T):  # no output reads the last chunk's update
                update(s, e)
            elif not full:
                pending = (s, e)
        elif order == "update_apply":
            update(s, e)
            read(s, e)
        else:
            update(s, e)
    if order == "bidirectional":
        read(0, n_p + T)
    return out, W, M, V, count, pending


def _per_example(q, stream, n_p, has_pending, W, M, V, count, norms, ends, fills, chunk_size, opts):
    """Variable chunk boundaries: ``_run_spans`` on one example at a time, each with its own chunks.

    ``stream``: ``(k_u, v_u, lr_u, mask_u, mom_u)`` as in ``_run_spans``; the pending tokens of example b are the
    last ``fills[b]`` of the first ``n_p`` (right-aligned) when ``has_pending``. ``ends``: bool ``[B, T]``.
    Returns ``(out, W, M, V, count, pending, chunk_fill)`` for the whole batch.
    """
    B = q.shape[0]
    one = lambda ts, b: ts if ts[0] is None else [t[b : b + 1] for t in ts]  # ts: lists of three or of None
    outs, Ws, Ms, Vs, counts, opens, fill = [], [], [], [], [], [], []
    for b in range(B):
        n_b = fills[b] if has_pending else 0  # this example's pending tokens
        own = [None if t is None else t[b : b + 1, n_p - n_b :] for t in stream]  # its update stream
        spans, open_fill = _example_spans(ends[b].tolist(), fills[b], n_b, chunk_size)
        count_b = None if count is None else count[b : b + 1]
        out, W_b, M_b, V_b, count_b, open_span = _run_spans(
            q[b : b + 1], *own, n_b, one(W, b), one(M, b), one(V, b), count_b, one(norms, b), spans, opts
        )
        outs.append(out)
        Ws.append(W_b)
        Ms.append(M_b)
        Vs.append(V_b)
        counts.append(count_b)
        s, e = open_span if open_span is not None else (0, 0)
        opens.append([None if t is None else t[:, s:e] for t in own])
        fill.append(open_fill)
    join = lambda per_b: per_b[0] if per_b[0][0] is None else [torch.cat(ts) for ts in zip(*per_b)]
    count = None if counts[0] is None else torch.cat(counts)
    pending = None
    n_open = max(o[0].shape[1] for o in opens)
    if n_open > 0:  # each example's open chunk, right-aligned, zeros (mask False) before it
        left = lambda t: torch.cat([t.new_zeros(1, n_open - t.shape[1], *t.shape[2:]), t], 1)
        k, v, lr, mask, mom = (None if o[0] is None else torch.cat([left(t) for t in o]) for o in zip(*opens))
        pending = PendingChunk(k=k, v=v, lr=lr, momentum=mom, mask=mask)
    fill = torch.tensor(fill, dtype=torch.long, device=q.device)
    return torch.cat(outs), join(Ws), join(Ms), join(Vs), count, pending, fill


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
    update_rule: str = "sgd",
    chunk_ends: Optional[Tensor] = None,
    adam_beta2: float = 0.99,
    adam_eps: float = 1e-8,
):
    """Reference implementation of ``lact_swiglu`` (same contract without ``backend``; see its docstring).

    ``update_rule="adam"`` is spelled out per chunk: ``V = b2 V + (1 - b2) G^2``, ``n += 1``,
    ``dW_i = r_i * F_i / sqrt(V_i / (1 - b2^n) + eps^2)`` (``F`` the momentum buffer, or ``G``; ``r_i`` the
    chunk's mean rate of matrix i over its real tokens). Variable chunk boundaries (``chunk_ends``, or a
    stream that had them) run one example at a time: a plain loop over its tokens finds its chunks
    (``_example_spans``), and the fixed-chunk schedule runs on them.

    Returns:
        ``(o, state)``: ``o`` ``[B, T, H, D]`` in the state's dtype, zero at padded positions; the new state.
    """
    check_lact_inputs(
        q, k, v, lr, state, chunk_size, order, muon_steps, momentum, mask, update_rule, chunk_ends, adam_beta2, adam_eps
    )
    B, T, H, D = q.shape
    dt = state.dtype
    q, k, v, lr = (t.to(dt) for t in (q, k, v, lr))
    mask = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
    momentum = None if momentum is None else momentum.to(dt)
    opts = dict(
        order=order,
        muon_steps=muon_steps,
        weight_norm=weight_norm,
        output_final_state=output_final_state,
        update_rule=update_rule,
        adam_beta2=adam_beta2,
        adam_eps=adam_eps,
    )

    # The stream to learn from: tokens of an unfinished chunk first, then this call's tokens.
    pend = state.pending
    n_p = 0 if pend is None else pend.length
    if pend is not None:
        if (pend.momentum is None) != (momentum is None):
            raise ValueError("lact_swiglu: momentum must be given in every call of a stream or in none")
        pend_mask = torch.ones(B, n_p, dtype=torch.bool) if pend.mask is None else pend.mask
        k_u = torch.cat([pend.k.to(dt), k], 1)
        v_u = torch.cat([pend.v.to(dt), v], 1)
        lr_u = torch.cat([pend.lr.to(dt), lr], 1)
        mask_u = torch.cat([pend_mask, mask], 1)
        mom_u = None if momentum is None else torch.cat([pend.momentum.to(dt), momentum], 1)
    else:
        k_u, v_u, lr_u, mask_u, mom_u = k, v, lr, mask, momentum

    W = [state.w0, state.w1, state.w2]
    norms = [state.w0_norm, state.w1_norm, state.w2_norm]
    M = [state.m0, state.m1, state.m2]
    if mom_u is not None:
        M = [torch.zeros_like(w) if m is None else m for w, m in zip(W, M)]
    V, count = [state.v0, state.v1, state.v2], state.v_count
    if update_rule == "adam" and state.v0 is None:
        V, count = [torch.zeros_like(w) for w in W], torch.zeros(B, H, dtype=torch.long, device=q.device)

    fill = None
    if chunk_ends is None and state.chunk_fill is None:
        spans = chunk_spans(state.seen - n_p, n_p + T, chunk_size)
        stream = (k_u, v_u, lr_u, mask_u, mom_u)
        out, W, M, V, count, open_span = _run_spans(q, *stream, n_p, W, M, V, count, norms, spans, opts)
        new_pending = None
        if open_span is not None:
            s, e = open_span
            pieces = (k_u, v_u, lr_u, mom_u, mask_u)
            new_pending = PendingChunk(*(None if t is None else t[:, s:e] for t in pieces))
    else:
        ends = torch.zeros(B, T, dtype=torch.bool) if chunk_ends is None else chunk_ends
        fills = [state.seen % chunk_size] * B if state.chunk_fill is None else state.chunk_fill.tolist()
        stream = (k_u, v_u, lr_u, mask_u, mom_u)
        out, W, M, V, count, new_pending, fill = _per_example(
            q, stream, n_p, pend is not None, W, M, V, count, norms, ends, fills, chunk_size, opts
        )

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
        v0=V[0],
        v1=V[1],
        v2=V[2],
        v_count=count,
        pending=new_pending,
        seen=state.seen + T,
        chunk_size=chunk_size if T > 0 else state.chunk_size,
        chunk_fill=fill if T > 0 else state.chunk_fill,
    )
    check_lact_output(out, new_state, k, lr)
    return out, new_state if output_final_state else None
