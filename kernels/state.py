"""The fast-weight state that the LaCT op reads, updates and hands back.

Fast weights are a *state*, like an RNN's hidden state: they carry across chunks, calls,
utterances and streams. ``FastWeightState`` holds everything needed to continue a stream exactly
where it stopped: the current SwiGLU fast weights, the row norms of the weights the stream started
from (for weight renormalisation), the momentum buffers, the tokens of a chunk that is still
filling up (``apply_update`` order), and how many tokens the stream has seen (chunk boundaries sit
at multiples of ``chunk_size`` from the start of the stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
from torch import Tensor


@dataclass
class PendingChunk:
    """Tokens of a chunk that is not full yet; they update the weights once a later call completes it.

    Shapes: ``k, v: [B, n, H, D]``, ``lr: [B, n, H, 3]``, ``momentum: [B, n, H]`` or None,
    ``mask: [B, n]`` bool or None, with ``0 < n < chunk_size``.

    With variable chunk boundaries (``FastWeightState.chunk_fill`` set) each example has its own
    partial chunk: its tokens are the last ``chunk_fill[b]`` of the ``n = max(chunk_fill)`` positions
    (right-aligned), and the positions before them are zeros with ``mask`` False (``mask`` is then never None).
    """

    k: Tensor
    v: Tensor
    lr: Tensor
    momentum: Optional[Tensor]
    mask: Optional[Tensor]

    @property
    def length(self) -> int:
        return self.k.shape[1]

    def map(self, fn) -> PendingChunk:
        """Apply ``fn`` to every tensor (for detach, device moves, batch selection)."""
        return PendingChunk(
            k=fn(self.k),
            v=fn(self.v),
            lr=fn(self.lr),
            momentum=None if self.momentum is None else fn(self.momentum),
            mask=None if self.mask is None else fn(self.mask),
        )


@dataclass
class FastWeightState:
    """SwiGLU fast weights of every (example, head) plus what a stream needs to continue.

    Attributes:
        w0, w2: ``[B, H, Dh, D]`` current fast weights (input projections of the SwiGLU).
        w1: ``[B, H, D, Dh]`` current fast weight (output projection).
        w0_norm, w2_norm: ``[B, H, Dh, 1]``; w1_norm: ``[B, H, D, 1]``: row norms (over the last
            dim) of the weights the state was created from; weight renormalisation restores them.
        m0, m1, m2: momentum buffers, same shapes as the weights, or None before the first update
            with momentum.
        v0, v1, v2: second moments of ``update_rule="adam"`` (running means of the squared chunk updates),
            same shapes as the weights, or None before the first call with that rule.
        v_count: ``[B, H]`` int64: the chunk updates folded into v0, v1, v2 (Adam's bias correction), or None.
        pending: tokens of the partial chunk at the end of the stream (``apply_update`` only).
        seen: number of tokens the stream has consumed (padding positions included), which fixes
            where chunk boundaries fall.
        chunk_size: the chunk size of the stream (set by the op's first call; None before it): a
            later call with another one is an error, since the chunk boundaries would move.
        chunk_fill: ``[B]`` int64 or None: with variable chunk boundaries (the op's ``chunk_ends``), the
            positions (padding included) of each example's current chunk so far; None while every chunk
            boundary sits at a multiple of ``chunk_size`` from the start of the stream.
        working: ``(W02 [B*H, 2*Dh, D], W1t [B*H, Dh, D])`` or None: the op's working layout ((w0; w2)
            and w1^T) of which w0, w1, w2 are views, kept so that the next call of a stream need not
            copy them into it again. Only the op sets it; every transformation of the state drops it.

    The weights are kept in float32 (float64 when created from float64 weights), also when the op
    runs under bf16 autocast.
    """

    w0: Tensor
    w1: Tensor
    w2: Tensor
    w0_norm: Tensor
    w1_norm: Tensor
    w2_norm: Tensor
    m0: Optional[Tensor] = None
    m1: Optional[Tensor] = None
    m2: Optional[Tensor] = None
    pending: Optional[PendingChunk] = None
    seen: int = 0
    chunk_size: Optional[int] = None
    working: Optional[tuple[Tensor, Tensor]] = field(default=None, repr=False)
    v0: Optional[Tensor] = None
    v1: Optional[Tensor] = None
    v2: Optional[Tensor] = None
    v_count: Optional[Tensor] = None
    chunk_fill: Optional[Tensor] = None

    @classmethod
    def from_weights(cls, w0: Tensor, w1: Tensor, w2: Tensor) -> FastWeightState:
        """Start a stream from initial fast weights.

        Args:
            w0, w2: ``[B, H, Dh, D]``; w1: ``[B, H, D, Dh]``. Expanded (broadcast) views of per-head
                weights are fine; they are never written in place.

        Returns:
            A state with ``seen == 0``, no momentum and no pending tokens. Float16/bfloat16 weights
            are promoted to float32.
        """
        for name, w in (("w0", w0), ("w1", w1), ("w2", w2)):
            if not isinstance(w, Tensor) or w.dim() != 4:
                got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
                raise ValueError(f"FastWeightState.from_weights: {name} must be a 4-d tensor, got {got}")
            if not w.is_floating_point():
                raise ValueError(f"FastWeightState.from_weights: {name} must be floating point, got {w.dtype}")
        B, H, Dh, D = w0.shape
        if min(B, H, Dh, D) < 1:
            raise ValueError(
                f"FastWeightState.from_weights: w0 [B, H, Dh, D] needs every size >= 1, got {(B, H, Dh, D)}"
            )
        if w2.shape != w0.shape:
            raise ValueError(
                f"FastWeightState.from_weights: w2 must have the shape of w0 [B, H, Dh, D] = "
                f"{tuple(w0.shape)}, got {tuple(w2.shape)}"
            )
        if w1.shape != (B, H, D, Dh):
            raise ValueError(
                f"FastWeightState.from_weights: w1 must be [B, H, D, Dh] = {(B, H, D, Dh)}, got {tuple(w1.shape)}"
            )
        dtype = torch.promote_types(w0.dtype, torch.float32)
        w0, w1, w2 = (w.to(dtype) for w in (w0, w1, w2))
        return cls(
            w0=w0,
            w1=w1,
            w2=w2,
            w0_norm=w0.norm(dim=-1, keepdim=True),
            w1_norm=w1.norm(dim=-1, keepdim=True),
            w2_norm=w2.norm(dim=-1, keepdim=True),
        )

    @property
    def batch_size(self) -> int:
        return self.w0.shape[0]

    @property
    def num_heads(self) -> int:
        return self.w0.shape[1]

    @property
    def head_dim(self) -> int:
        return self.w0.shape[3]

    @property
    def hidden_dim(self) -> int:
        return self.w0.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.w0.dtype

    def _map(self, fn) -> FastWeightState:
        opt = lambda t: None if t is None else fn(t)
        return replace(
            self,
            w0=fn(self.w0),
            w1=fn(self.w1),
            w2=fn(self.w2),
            w0_norm=fn(self.w0_norm),
            w1_norm=fn(self.w1_norm),
            w2_norm=fn(self.w2_norm),
            m0=opt(self.m0),
            m1=opt(self.m1),
            m2=opt(self.m2),
            v0=opt(self.v0),
            v1=opt(self.v1),
            v2=opt(self.v2),
            v_count=opt(self.v_count),
            chunk_fill=opt(self.chunk_fill),
            pending=None if self.pending is None else self.pending.map(fn),
            working=None,
        )

    def detach(self) -> FastWeightState:
        """The same state cut from the autograd graph (carry it across utterances at test time)."""
        return self._map(lambda t: t.detach())

    def to(self, device) -> FastWeightState:
        """The same state on another device (weights keep their dtype, counts stay int64)."""
        return self._map(lambda t: t.to(device))

    def index_select(self, batch_indices: Tensor) -> FastWeightState:
        """Select or reorder the batch (beam search): ``batch_indices`` is a 1-d long tensor."""
        return self._map(lambda t: t.index_select(0, batch_indices.to(t.device)))

    def reset_stream(self) -> FastWeightState:
        """Keep the adapted weights but start a new stream: chunk positions restart at 0 and the
        pending tokens of the old stream are dropped (they belong to another utterance); momentum and
        Adam's second moments are kept, like the weights."""
        return replace(self, pending=None, seen=0, chunk_size=None, chunk_fill=None)
