"""The fast LaCT op: batched matmuls over (batch x heads), a Python loop over chunks only."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .newton_schulz import factored_is_cheaper, newton_schulz, newton_schulz_factored
from .state import FastWeightState, PendingChunk
from .validation import check_lact_inputs, check_lact_output, chunk_spans


def _apply(W: Tensor, x: Tensor) -> Tensor:
    """Read: ``f_W(x)`` for x ``[BH, n, D]`` -> ``[BH, n, D]`` (6·n·D·Dh flops per head).

    ``W [BH, 3·Dh, D]`` stacks ``w0``, ``w2`` and ``w1^T`` so that ``w0 x`` and ``w2 x`` are one GEMM.
    """
    Dh = W.shape[1] // 3
    gh = torch.bmm(x, W[:, : 2 * Dh].mT)  # [BH, n, 2Dh]
    return torch.bmm(F.silu(gh[..., :Dh]) * gh[..., Dh:], W[:, 2 * Dh :])


def _gradient_factors(W: Tensor, k: Tensor, v: Tensor, lr: Tensor):
    """The chunk's update ``-sum_t lr_t dL_t/dW`` as token-major factors (12·C·D·Dh flops per head in all).

    W: ``[BH, 3·Dh, D]`` (w0, w2, w1^T stacked); k, v: ``[BH, C, D]``; lr: ``[BH, C, 3]`` (zero on
    padding). Returns ``(x02 [BH, C, 2Dh], y1 [BH, C, Dh], k, v1 [BH, C, D])`` with
    ``d(w0; w2) = x02^T k`` and ``d(w1^T) = y1^T v1``: every block of the update has rank <= C.
    """
    Dh = W.shape[1] // 3
    gh = torch.bmm(k, W[:, : 2 * Dh].mT)  # [BH, C, 2Dh]
    g, h = gh[..., :Dh], gh[..., Dh:]
    dh = torch.bmm(v, W[:, 2 * Dh :].mT)  # w1^T v: [BH, C, Dh]
    sig = torch.sigmoid(g)
    silu_g = g * sig
    # silu'(g) = sig * (1 + g * (1 - sig)) = sig + silu_g * (1 - sig); fused ops keep the passes over
    # [BH, C, Dh] few (they are memory-bound next to the GEMMs once a chunk outgrows the cache)
    dsilu = torch.addcmul(sig, silu_g, 1 - sig)
    dh0, dh2 = dh * lr[..., 0:1], dh * lr[..., 2:3]
    x02 = torch.cat([dh0.mul_(h).mul_(dsilu), dh2.mul_(silu_g)], dim=-1)  # [BH, C, 2Dh]
    return x02, silu_g * h, k, v * lr[..., 1:2]


def _gradients(W: Tensor, k: Tensor, v: Tensor, lr: Tensor) -> Tensor:
    """``-sum_t lr_t dL_t/dW`` over one chunk, ``L_t = -<f_W(k_t), v_t>``, as a dense ``[BH, 3·Dh, D]``.

    Same arguments as ``_gradient_factors``; dw0 and dw2 come out of one GEMM.
    """
    return _dense_update(*_gradient_factors(W, k, v, lr))


# CPU: token blocks whose [BH, n, 2·Dh] intermediates stay within about this many bytes (cache-resident);
# a large chunk's elementwise passes otherwise stream every intermediate through DRAM.
CPU_BLOCK_BYTES = 1 << 19


def _token_block(x: Tensor, BH: int, Dh: int) -> int:
    """Tokens per block for the elementwise-heavy parts of a chunk: the whole chunk on GPUs."""
    if x.device.type != "cpu":
        return x.shape[1]
    return max(64, 1 << max(0, (CPU_BLOCK_BYTES // (BH * 2 * Dh * x.element_size())).bit_length() - 1))


def _blocked_dense_update(W: Tensor, k: Tensor, v: Tensor, lr: Tensor) -> Tensor:
    """``_gradients`` over token blocks of ``_token_block`` (sums of the blocks' updates): ``[BH, 3·Dh, D]``."""
    BH, C = k.shape[:2]
    n = _token_block(k, BH, W.shape[1] // 3)
    if n >= C:
        return _gradients(W, k, v, lr)
    out = None
    for kb, vb, lb in zip(k.split(n, 1), v.split(n, 1), lr.split(n, 1)):
        part = _gradients(W, kb, vb, lb)
        out = part if out is None else out.add_(part)  # out is a fresh sum nobody saved for backward
    return out


def _dense_update(x02: Tensor, y1: Tensor, k: Tensor, v1: Tensor) -> Tensor:
    """The factors of ``_gradient_factors`` multiplied out: ``[BH, 3·Dh, D]`` (x02^T k; y1^T v1)."""
    return torch.cat([torch.bmm(x02.mT, k), torch.bmm(y1.mT, v1)], dim=1)


def _add_orthogonalised_update(W: Tensor, x02: Tensor, y1: Tensor, k: Tensor, v1: Tensor, steps: int) -> Tensor:
    """``W`` plus the Newton-Schulz of each block of the rank-C update, run in the ``C x C`` factor
    space (``newton_schulz_factored``), the addition fused into the last product: ``[BH, 3·Dh, D]``."""
    BH, C, Dh = y1.shape
    left = torch.cat([x02, y1], dim=-1).view(BH, C, 3, Dh).permute(0, 2, 3, 1).reshape(BH * 3, Dh, C)
    right = torch.stack([k, k, v1], dim=1).reshape(BH * 3, C, k.shape[-1])
    return newton_schulz_factored(left, right, steps, add_to=W.reshape(BH * 3, Dh, -1)).view(BH, 3 * Dh, -1)


def lact_swiglu(
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
    """LaCT SwiGLU fast-weight op: read the fast weights with ``q`` and update them chunk by chunk.

    Fast weight function ``f_W(x) = w1 (silu(w0 x) * (w2 x))`` per head. Each chunk of tokens
    updates ``W`` by ``-lr * dL/dW`` of ``L = -sum_t <f_W(k_t), v_t>`` (per-token rates, one for
    each of w0, w1, w2), optionally through momentum (``M = beta M + dW``, ``beta`` the chunk mean
    of ``momentum``), then Newton-Schulz orthogonalisation (Muon, ``muon_steps > 0``), then
    ``W += dW`` and, with ``weight_norm``, every row is rescaled to its norm in the initial weights.

    Chunk boundaries sit at multiples of ``chunk_size`` from the start of the stream
    (``state.seen`` counts the tokens consumed so far). ``order``:

    - ``"apply_update"`` (generation): chunk i is read with the weights built from chunks < i, then
      updates them. A trailing partial chunk is read with the current weights and held in the
      state; it updates once a later call completes it, so a stream split anywhere equals one call.
      **Hazard**: a sequence no longer than one chunk is read with the initial weights only; no
      update ever reaches its own outputs. Do not use this order for single-utterance ASR.
    - ``"update_apply"`` (streaming ASR): each chunk updates the weights, then is read with them;
      a trailing partial chunk updates as a short chunk. Splits at chunk multiples equal one call.
    - ``"bidirectional"`` (offline ASR): every chunk updates in turn, then every token is read
      with the final weights.

    Args:
        q, k, v: ``[B, T, H, D]`` floating point.
        lr: ``[B, T, H, 3]`` non-negative learning rates for (w0, w1, w2); float32 recommended.
        state: ``FastWeightState`` with weights ``w0, w2: [B, H, Dh, D]``, ``w1: [B, H, D, Dh]``.
        chunk_size: tokens per update (>= 1), e.g. 512..4096 for audio frames.
        order: ``"apply_update"``, ``"update_apply"`` or ``"bidirectional"``.
        muon_steps: Newton-Schulz iterations (0 disables Muon).
        weight_norm: renormalise rows to the initial weights' norms after each update.
        momentum: None or ``[B, T, H]`` in [0, 1).
        mask: None or bool ``[B, T]``, False = padding: padded tokens never update the state and
            their outputs are zero. A chunk without real tokens changes nothing.

    Returns:
        ``(o, new_state)``: ``o`` ``[B, T, H, D]`` (the state's dtype, or the autocast dtype under
        autocast); the input state is never modified.

    Cost: 18·T·H·D·Dh flops (read, gradient recomputation, three gradient products) plus
    ``muon_steps`` Newton-Schulz iterations per chunk. Without momentum a chunk's update has rank
    <= its length C, and when C is small next to ``min(D, Dh)`` (streaming, small presets) the
    iteration runs on ``C x C`` factors (``newton_schulz_factored``), not on ``Dh x D`` matrices.
    On the CPU a long chunk's gradient and read run in cache-sized token blocks (``CPU_BLOCK_BYTES``).
    Differentiable with respect to q, k, v, lr, momentum and the initial weights. Under bf16 autocast
    the matmuls run in bf16 while the state stays in float32.
    """
    check_lact_inputs(q, k, v, lr, state, chunk_size, order, muon_steps, momentum, mask)
    B, T, H, D = q.shape
    if T == 0:
        return q.new_zeros(B, 0, H, D), state
    if not torch.is_autocast_enabled(q.device.type):
        q, k, v = (t.to(state.dtype) for t in (q, k, v))
    lr = lr.to(state.dtype)  # the rates scale state-dtype gradients (float32, or float64 for gradcheck)

    pend = state.pending
    n_p = 0 if pend is None else pend.length
    if pend is not None:
        if (pend.momentum is None) != (momentum is None):
            raise ValueError("lact_swiglu: momentum must be given in every call of a stream or in none")
        if pend.mask is not None and mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=q.device)
        elif pend.mask is None and mask is not None:
            pend = PendingChunk(
                pend.k, pend.v, pend.lr, pend.momentum, torch.ones(B, n_p, dtype=torch.bool, device=q.device)
            )
    if mask is not None:
        lr = lr * mask[:, :, None, None]  # padded tokens learn nothing
    autocast = torch.is_autocast_enabled(q.device.type)
    lr_dtype = torch.get_autocast_dtype(q.device.type) if autocast else lr.dtype

    spans = chunk_spans(state.seen - n_p, n_p + T, chunk_size)
    sizes = [e - max(s, n_p) for s, e, _ in spans]  # this call's tokens in each span (all > 0)
    # One split per input: its backward is a single cat, where per-chunk slicing would zero-fill a
    # whole [B, T, H, D] gradient for every chunk (quadratic in T during training).
    pieces = {
        name: None if t is None else (t,) if len(sizes) == 1 else t.split(sizes, 1)
        for name, t in (("q", q), ("k", k), ("v", v), ("lr", lr), ("momentum", momentum), ("mask", mask))
    }

    def stream(name: str, i: int):
        """The update stream's tokens of span ``i`` (pending tokens first), ``[B, n, ...]``; one chunk at a time."""
        if pieces[name] is None:
            return None
        new = pieces[name][i]
        if spans[i][0] >= n_p:
            return new
        old = getattr(pend, name)
        if name == "lr" and pend.mask is not None:
            old = old * pend.mask[:, :, None, None]
        return torch.cat([old.to(new.dtype), new], 1)

    def to_bh(x):  # [B, n, H, *F] -> [BH, n, *F]: one batched GEMM over every (example, head)
        return x.transpose(1, 2).reshape(B * H, x.shape[1], *x.shape[3:])

    Dh = state.hidden_dim

    def stack(w0, w1, w2):  # [B, H, ...] x3 -> [BH, 3Dh, D] (w0; w2; w1^T)
        return torch.cat([w0, w2, w1.mT], dim=2).reshape(B * H, 3 * Dh, D)

    W = state.stacked if state.stacked is not None else stack(state.w0, state.w1, state.w2)
    norm02 = torch.cat([state.w0_norm, state.w2_norm], dim=2).reshape(B * H, 2 * Dh, 1)
    norm1t = state.w1_norm.reshape(B * H, 1, D)  # w1's row norms are w1^T's column norms
    M = None
    if momentum is not None:
        M = torch.zeros_like(W) if state.m0 is None else stack(state.m0, state.m1, state.m2)

    def update(i: int) -> None:
        nonlocal W, M
        k_c, v_c, lr_c = to_bh(stream("k", i)), to_bh(stream("v", i)), to_bh(stream("lr", i).to(lr_dtype))
        # Without momentum the update keeps rank <= C: a short chunk orthogonalises in the factor space.
        factored = momentum is None and factored_is_cheaper(Dh, D, k_c.shape[1], muon_steps)
        if factored:
            factors, dW = _gradient_factors(W, k_c, v_c, lr_c), None
        else:
            dW = _blocked_dense_update(W, k_c, v_c, lr_c)
        has = count = None
        mask_c = stream("mask", i)
        if mask_c is not None:
            mask_c = mask_c[:, None, :].expand(B, H, -1).reshape(B * H, -1)  # [BH, C]
            count = mask_c.sum(1)
            has = (count > 0)[:, None, None]
        if momentum is not None:
            m_chunk = to_bh(stream("momentum", i))  # [BH, C]
            beta = m_chunk.mean(1) if mask_c is None else (m_chunk * mask_c).sum(1) / count.clamp(min=1)
            new_M = beta[:, None, None] * M + dW
            dW = new_M
            M = new_M if has is None else torch.where(has, new_M, M)
        if factored:
            new_W = _add_orthogonalised_update(W, *factors, muon_steps)
        else:
            if muon_steps > 0:
                dW = newton_schulz(dW.reshape(B * H * 3, Dh, D), muon_steps).reshape(B * H, 3 * Dh, D)
            new_W = W + dW
        if weight_norm:
            w02, w1t = new_W[:, : 2 * Dh], new_W[:, 2 * Dh :]
            scale02 = norm02 / (w02.norm(dim=-1, keepdim=True) + 1e-5)
            scale1t = norm1t / (w1t.norm(dim=-2, keepdim=True) + 1e-5)
            if torch.is_grad_enabled() and new_W.requires_grad:
                new_W = torch.cat([w02 * scale02, w1t * scale1t], dim=1)
            else:  # inference: rescale the fresh tensor in place, no copy
                w02.mul_(scale02)
                w1t.mul_(scale1t)
        W = new_W if has is None else torch.where(has, new_W, W)

    outs = []

    def read(i: int) -> None:  # this call's tokens of span i
        q_i = to_bh(pieces["q"][i])
        n = _token_block(q_i, B * H, Dh)
        o = _apply(W, q_i) if n >= q_i.shape[1] else torch.cat([_apply(W, x) for x in q_i.split(n, 1)], 1)
        o = o.reshape(B, H, sizes[i], D).transpose(1, 2)  # [B, n, H, D]
        outs.append(o if mask is None else o * pieces["mask"][i][:, :, None, None].to(o.dtype))

    new_pending = None
    for i, (_, _, full) in enumerate(spans):
        if order == "apply_update":
            read(i)
            if full:
                update(i)
            else:
                new_pending = PendingChunk(**{name: stream(name, i) for name in ("k", "v", "lr", "momentum", "mask")})
        elif order == "update_apply":
            update(i)
            read(i)
        else:
            update(i)
    if order == "bidirectional":
        for i in range(len(spans)):
            read(i)

    o = torch.cat(outs, 1) if len(outs) > 1 else outs[0].contiguous()  # [B, T, H, D]

    def unstack(w):  # [BH, 3Dh, D] -> w0, w1, w2 as [B, H, ...] views
        w = w.reshape(B, H, 3 * Dh, D)
        return w[:, :, :Dh], w[:, :, 2 * Dh :].mT, w[:, :, Dh : 2 * Dh]

    w0, w1, w2 = unstack(W)
    m0, m1, m2 = (None, None, None) if M is None else unstack(M)
    new_state = FastWeightState(
        w0=w0,
        w1=w1,
        w2=w2,
        w0_norm=state.w0_norm,
        w1_norm=state.w1_norm,
        w2_norm=state.w2_norm,
        m0=m0,
        m1=m1,
        m2=m2,
        pending=new_pending,
        seen=state.seen + T,
        chunk_size=chunk_size,
        stacked=W,
    )
    check_lact_output(o, new_state, k, lr)
    return o, new_state
