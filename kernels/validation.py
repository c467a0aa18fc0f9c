"""Argument checks shared by every implementation of the LaCT op, with messages that say what to fix."""

import contextlib
import math
import os
from typing import Optional

import torch
from torch import Tensor

from .state import FastWeightState

ORDERS = ("apply_update", "update_apply", "bidirectional")
UPDATE_RULES = ("sgd", "adam")

_CHECK_VALUES = [os.environ.get("LACT_AUDIO_CHECK_VALUES", "0") not in ("", "0", "false", "False")]


def value_checks_enabled() -> bool:
    """Whether checks that read tensor *values* (NaN/Inf, rate signs, mask contents) run.

    Off by default: each one is a device-to-host sync on every layer call, which stalls CUDA streams
    and breaks ``torch.compile`` graphs and CUDA graphs. Shape, dtype and type checks always run.
    Turn them on with ``LACT_AUDIO_CHECK_VALUES=1`` or inside ``with check_values():``.
    """
    return _CHECK_VALUES[-1]


@contextlib.contextmanager
def check_values(enabled: bool = True):
    """Context manager that turns the value checks of :func:`value_checks_enabled` on (or off) inside it."""
    _CHECK_VALUES.append(bool(enabled))
    try:
        yield
    finally:
        _CHECK_VALUES.pop()


def _finite(name: str, t: Tensor) -> None:
    # A float32 sum is NaN/Inf exactly when an element is (short of overflowing 3e38), and unlike
    # isfinite(t).all() it allocates nothing of the input's size.
    if not bool(torch.isfinite(t.sum(dtype=torch.float32))) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"lact_swiglu: {name} contains NaN or Inf values; check the inputs upstream")


def check_lact_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    state: FastWeightState,
    chunk_size: int,
    order: str,
    muon_steps: int,
    momentum: Optional[Tensor],
    mask: Optional[Tensor],
    update_rule: str = "sgd",
    chunk_ends: Optional[Tensor] = None,
    adam_beta2: float = 0.99,
    adam_eps: float = 1e-8,
) -> None:
    """Raise ``ValueError`` naming the argument when an input of ``lact_swiglu`` is malformed.

    Expected: ``q, k, v: [B, T, H, D]``, ``lr: [B, T, H, 3]`` non-negative, ``momentum: [B, T, H]``
    in [0, 1) or None, ``mask: [B, T]`` bool or None, ``chunk_ends: [B, T]`` bool or None, ``update_rule``
    in ``UPDATE_RULES`` (``"adam"`` only with ``muon_steps == 0``, ``0 <= adam_beta2 < 1``, ``adam_eps > 0``),
    a ``FastWeightState`` with matching B, H, D.
    Types, shapes and dtypes are always checked (no tensor is read); the values (NaN/Inf, negative
    rates, momentum outside [0, 1)) only when ``value_checks_enabled()``, since reading them syncs the host.
    """
    if order not in ORDERS:
        raise ValueError(f"lact_swiglu: order must be one of {ORDERS}, got {order!r}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"lact_swiglu: chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(muon_steps, int) or muon_steps < 0:
        raise ValueError(f"lact_swiglu: muon_steps must be an int >= 0 (0 disables Muon), got {muon_steps!r}")
    if update_rule not in UPDATE_RULES:
        raise ValueError(f"lact_swiglu: update_rule must be one of {UPDATE_RULES}, got {update_rule!r}")
    if update_rule == "adam":
        if muon_steps > 0:
            raise ValueError(
                f"lact_swiglu: update_rule='adam' needs muon_steps=0, got {muon_steps}: Adam scales every element "
                "of the update by its own running RMS, and Newton-Schulz would then replace that matrix by its "
                "nearest orthogonal one, discarding exactly the per-element scaling Adam adds (and Adam's "
                "magnitudes with it); use update_rule='sgd' for Muon"
            )
        if not (isinstance(adam_beta2, (int, float)) and 0 <= adam_beta2 < 1):
            raise ValueError(f"lact_swiglu: adam_beta2 must lie in [0, 1), got {adam_beta2!r}")
        if not (isinstance(adam_eps, (int, float)) and adam_eps > 0 and math.isfinite(adam_eps)):
            raise ValueError(f"lact_swiglu: adam_eps must be a finite number > 0, got {adam_eps!r}")
    if not isinstance(state, FastWeightState):
        raise ValueError(
            "lact_swiglu: state must be a FastWeightState (build one with FastWeightState.from_weights), "
            f"got {type(state).__name__}"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"lact_swiglu: {name} must be a 4-d tensor [B, T, H, D], got {got}")
        if not t.is_floating_point():
            raise ValueError(f"lact_swiglu: {name} must be floating point, got {t.dtype}")
    B, T, H, D = q.shape
    if min(B, H, D) < 1:
        raise ValueError(f"lact_swiglu: q, k, v need B, H, D >= 1 (T may be 0), got [B, T, H, D] = {tuple(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"lact_swiglu: {name} must have the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    if (state.batch_size, state.num_heads, state.head_dim) != (B, H, D):
        raise ValueError(
            f"lact_swiglu: state holds fast weights for B={state.batch_size}, H={state.num_heads}, "
            f"D={state.head_dim}, but q is [B, T, H, D] = {tuple(q.shape)}"
        )
    if not isinstance(lr, Tensor) or lr.shape != (B, T, H, 3):
        got = tuple(lr.shape) if isinstance(lr, Tensor) else type(lr).__name__
        raise ValueError(f"lact_swiglu: lr must be [B, T, H, 3] = {(B, T, H, 3)} (rates for w0, w1, w2), got {got}")
    if not lr.is_floating_point():
        raise ValueError(f"lact_swiglu: lr must be floating point (softplus of a projection), got {lr.dtype}")
    if momentum is not None:
        if not isinstance(momentum, Tensor) or momentum.shape != (B, T, H):
            got = tuple(momentum.shape) if isinstance(momentum, Tensor) else type(momentum).__name__
            raise ValueError(f"lact_swiglu: momentum must be None or [B, T, H] = {(B, T, H)}, got {got}")
        if not momentum.is_floating_point():
            raise ValueError(f"lact_swiglu: momentum must be floating point in [0, 1), got {momentum.dtype}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.shape != (B, T):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"lact_swiglu: mask must be None or a bool tensor [B, T] = {(B, T)}, got {got}")
        if mask.dtype != torch.bool:
            raise ValueError(f"lact_swiglu: mask must be bool (True = real token, False = padding), got {mask.dtype}")
    if chunk_ends is not None:
        if not isinstance(chunk_ends, Tensor) or chunk_ends.shape != (B, T):
            got = tuple(chunk_ends.shape) if isinstance(chunk_ends, Tensor) else type(chunk_ends).__name__
            raise ValueError(
                f"lact_swiglu: chunk_ends must be None or a bool tensor [B, T] = {(B, T)} (True at the last token of "
                f"a chunk), got {got}"
            )
        if chunk_ends.dtype != torch.bool:
            raise ValueError(f"lact_swiglu: chunk_ends must be bool (True = a chunk ends here), got {chunk_ends.dtype}")
    if state.v0 is not None and update_rule != "adam":
        raise ValueError(
            f"lact_swiglu: the state carries Adam second moments (v0, v1, v2) of a stream updated with "
            f"update_rule='adam'; continue it with that rule (got {update_rule!r}) or start from fresh weights"
        )
    inputs = {"q": q, "k": k, "v": v, "lr": lr, "momentum": momentum, "mask": mask, "chunk_ends": chunk_ends}
    for name, t in inputs.items():
        if t is not None and t.device != state.w0.device:
            raise ValueError(
                f"lact_swiglu: {name} is on {t.device} but the state is on {state.w0.device}; move the state "
                "with state.to(device) (or the inputs) so that all are on one device"
            )
    if state.chunk_size is not None and state.chunk_size != chunk_size:
        raise ValueError(
            f"lact_swiglu: this stream was started with chunk_size={state.chunk_size}, got {chunk_size}: chunk "
            "boundaries would move in the middle of the stream; keep the chunk size, or start a new stream "
            "with state.reset_stream()"
        )
    if state.pending is not None and order != "apply_update":
        raise ValueError(
            f"lact_swiglu: the state holds {state.pending.length} tokens of an unfinished apply_update chunk; "
            f"continue it with order='apply_update' (got {order!r}) or call state.reset_stream()"
        )
    if value_checks_enabled():
        _check_state_finite(state, "the incoming state", "a previous call diverged or the state was corrupted")
    if T == 0 or not value_checks_enabled():
        return
    # One float32 sum over all four inputs is finite exactly when they all are (short of overflow):
    # a single host sync on the streaming path, then a per-input search only when something is wrong.
    total = sum(t.sum(dtype=torch.float32) for t in (q, k, v, lr))
    finite_total, lr_min = torch.stack([total, lr.min().float()]).tolist()
    if not math.isfinite(finite_total):
        for name, t in (("q", q), ("k", k), ("v", v), ("lr", lr)):
            _finite(name, t)
    if lr_min < 0:
        raise ValueError("lact_swiglu: lr must be non-negative (use softplus to produce rates)")
    if momentum is not None:
        _finite("momentum", momentum)
        low, high = torch.aminmax(momentum)
        if bool(low < 0) or bool(high >= 1):
            raise ValueError("lact_swiglu: momentum must lie in [0, 1) (use a sigmoid to produce it)")


def _check_state_finite(state: FastWeightState, what: str, cause: str) -> None:
    names = [n for n in ("w0", "w1", "w2", "m0", "m1", "m2", "v0", "v1", "v2") if getattr(state, n) is not None]
    tensors = [getattr(state, n) for n in names]
    if not bool(torch.isfinite(torch.stack([t.sum(dtype=torch.float32) for t in tensors]).sum())):
        bad = [n for n in names if not bool(torch.isfinite(getattr(state, n)).all())]
        if bad:
            raise ValueError(f"lact_swiglu: {what} holds NaN or Inf in {', '.join(bad)} ({cause})")


def check_lact_output(o: Tensor, state: FastWeightState, k: Tensor, lr: Tensor) -> None:
    """With value checks on (:func:`value_checks_enabled`), raise ``ValueError`` naming the cause when a call
    of ``lact_swiglu`` produced a non-finite state or output from finite inputs (one host sync)."""
    if not value_checks_enabled() or k.shape[1] == 0:
        return
    cause = (
        f"the update overflowed: largest |k| {float(k.detach().abs().max()):.3g}, largest lr "
        f"{float(lr.detach().max()):.3g}; normalise q and k, or lower the rates (base_lr)"
    )
    _check_state_finite(state, "the updated state", cause)
    if not bool(torch.isfinite(o.sum(dtype=torch.float32))) and not bool(torch.isfinite(o).all()):
        raise ValueError(f"lact_swiglu: the output holds NaN or Inf ({cause})")


def chunk_spans(start: int, length: int, chunk_size: int) -> list:
    """Split positions ``[start, start + length)`` of a stream at multiples of ``chunk_size``.

    Returns:
        List of ``(s, e, full)`` in coordinates relative to ``start``; ``full`` is True when the
        span reaches a chunk boundary (the chunk is complete).
    """
    spans = []
    s = 0
    while s < length:
        to_boundary = chunk_size - (start + s) % chunk_size
        e = min(length, s + to_boundary)
        spans.append((s, e, e - s == to_boundary))
        s = e
    return spans
