"""The fast LaCT op: batched matmuls over (batch x heads), a Python loop over chunks only.

``lact_swiglu`` is a loop over chunks of three pure steps, the units that GPU kernels mirror:

- ``read_chunk``: ``o = f_W(q)`` for a chunk's queries;
- ``chunk_gradient``: the chunk's update ``-sum_t lr_t dL_t/dW`` as rank-C factors;
- ``apply_update``: momentum, Newton-Schulz (Muon) or Adam's step (``update_rule="adam"``) and row
  renormalisation, giving the next weights.

With variable chunk boundaries (``chunk_ends``) the same steps run over slots, one chunk of every example
per slot (``segment_layout``).

Working layout: the fast weights of every (example, head) as ``W02 [BH, 2Dh, D]`` (w0 over w2, so
``w0 x`` and ``w2 x`` are one GEMM) and ``W1t [BH, Dh, D]`` (w1 transposed, so that every block of
the update is a ``[Dh, C] x [C, D]`` GEMM over the whole chunk).

In eager inference (autograd records nothing, no autocast, not compiling: streaming, test-time
adaptation, evaluation) the op hands the steps a workspace: they work in place in buffers reused
from chunk to chunk, and on the CPU the projections and elementwise passes run over token blocks
sized from this machine's caches (``CPU_BLOCK_BYTES``), so that a GEMM's output is still in cache when
the elementwise passes read it; the update's GEMMs always run over the whole chunk. Otherwise the
steps are plain out-of-place expressions (autograd records them; a compiler fuses them itself).

``backend="triton"`` runs the same loop with fused Triton kernels for the read, the chunk gradient and
the renormalisation (``kernels/triton``, imported only then; always out of place): see ``backend_steps``.
"""

import functools
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .newton_schulz import factored_is_cheaper, newton_schulz, newton_schulz_factored
from .state import FastWeightState, PendingChunk
from .validation import check_lact_inputs, check_lact_output, chunk_spans


def _parse_cache_size(text: str) -> int:
    """Bytes of a sysfs cache ``size`` such as ``512K`` or ``32768K``."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def _count_cpus(cpu_list: str) -> int:
    """Number of CPUs in a sysfs list such as ``0-7,16-23``."""
    count = 0
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def cpu_cache_bytes_per_core(cache_dir: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """The largest per-core share of a data cache of CPU 0: ``size / CPUs sharing it`` over its levels.

    Read from sysfs (Linux); 1 MiB where the machine does not say.
    """
    best = 0
    for index in cache_dir.glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            size = _parse_cache_size((index / "size").read_text())
            best = max(best, size // max(1, _count_cpus((index / "shared_cpu_list").read_text())))
        except (OSError, ValueError):
            continue
    return best or 1 << 20


# CPU: token blocks whose elementwise intermediates (about 5 [BH, n, Dh] arrays) fit in this many bytes;
# read once at import, so that a traced or compiled op never touches the file system.
CPU_BLOCK_BYTES = cpu_cache_bytes_per_core()
MIN_TOKEN_BLOCK = 64  # below this, the projections are GEMMs too thin to run near peak


def token_block(x: Tensor, bytes_per_token: int) -> int:
    """Tokens per block for the elementwise-heavy parts of a chunk ``x [BH, n, ...]``: all of them off the CPU.

    On the CPU the largest power of two with ``n * bytes_per_token <= CPU_BLOCK_BYTES``, at least
    ``MIN_TOKEN_BLOCK``.
    """
    if x.device.type != "cpu":
        return x.shape[1]
    fit = max(1, CPU_BLOCK_BYTES // max(1, bytes_per_token))
    return max(MIN_TOKEN_BLOCK, 1 << (fit.bit_length() - 1))


def _records_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _out_of_place(*tensors: Optional[Tensor]) -> bool:
    # In-place work into buffers of our own is for eager mode: it needs tensors autograd does not
    # record and dtypes autocast does not change per op; a compiler plans buffers and fusions itself.
    return _records_grad(*tensors) or torch.is_autocast_enabled(tensors[0].device.type) or torch.compiler.is_compiling()


def _blocks(n: int, block: int):
    return [(s, min(n, s + block)) for s in range(0, n, block)]


def _scratch(workspace: dict, name: str, like: Tensor, n: int, width: int) -> Tensor:
    """``[BH, n, width]`` in ``like``'s dtype and device from ``workspace``: allocated once, then reused.

    Reuse is what makes the in-place path fast on the CPU: a fresh multi-MiB tensor per chunk is new
    memory the kernel has to fault in page by page (glibc hands large blocks back on free).
    """
    buf = workspace.get(name)
    if buf is None or buf.shape[1] < n:
        buf = workspace[name] = like.new_empty(like.shape[0], n, width)
    return buf[:, :n]


def read_chunk(
    W02: Tensor, W1t: Tensor, q: Tensor, workspace: Optional[dict] = None, out: Optional[Tensor] = None
) -> Tensor:
    """Read: ``f_W(q) = w1 (silu(w0 q) * (w2 q))`` for ``q [BH, n, D]`` -> ``[BH, n, D]`` (6·n·D·Dh flops per head).

    W02: ``[BH, 2Dh, D]`` (w0 over w2); W1t: ``[BH, Dh, D]`` (w1 transposed).
    workspace: None (out of place, differentiable), or a dict of buffers that this and the other steps
    reuse from chunk to chunk (in place, in token blocks: inference only, outside autocast). The
    result then lives in the workspace until the next read, or in ``out`` (``[BH, n, D]``, any strides).
    """
    Dh = W1t.shape[1]
    if workspace is None:
        gh = torch.bmm(q, W02.mT)  # [BH, n, 2Dh]
        return torch.bmm(F.silu(gh[..., :Dh]) * gh[..., Dh:], W1t)
    BH, n, D = q.shape
    block = token_block(q, BH * (3 * Dh + D) * q.element_size())
    out = _scratch(workspace, "read_out", q, n, D) if out is None else out
    for s, e in _blocks(n, block):
        gh = torch.bmm(q[:, s:e], W02.mT, out=_scratch(workspace, "read_gh", q, e - s, 2 * Dh))
        a = F.silu(gh[..., :Dh], inplace=True).mul_(gh[..., Dh:])
        torch.bmm(a, W1t, out=out[:, s:e])
    return out


def chunk_gradient(W02: Tensor, W1t: Tensor, k: Tensor, v: Tensor, lr: Tensor, workspace: Optional[dict] = None):
    """The chunk's update ``-sum_t lr_t dL_t/dW``, ``L_t = -<f_W(k_t), v_t>``, as token-major factors.

    Args:
        W02: ``[BH, 2Dh, D]``; W1t: ``[BH, Dh, D]``.
        k, v: ``[BH, C, D]``; lr: ``[BH, C, 3]`` rates for (w0, w1, w2), zero on padding.
        workspace: as in ``read_chunk``; the factors then live in it until the next call.

    Returns:
        ``(x02 [BH, C, 2Dh], y1 [BH, C, Dh])`` with the rates folded in: ``dW02 = x02^T k`` and
        ``dW1t = y1^T v`` (``dense_update``), so every block of the update has rank <= C.
        12·C·D·Dh flops per head with ``dense_update``.
    """
    Dh = W1t.shape[1]
    BH, C, D = k.shape
    if workspace is None:
        gh = torch.bmm(k, W02.mT)  # [BH, C, 2Dh]
        g, h = gh[..., :Dh], gh[..., Dh:]
        dh = torch.bmm(v, W1t.mT)  # w1^T v: [BH, C, Dh]
        sig = torch.sigmoid(g)
        silu_g = g * sig
        dsilu = torch.addcmul(sig, silu_g, 1 - sig)  # silu'(g) = sig + silu(g) (1 - sig)
        x02 = torch.cat([dh * h * dsilu, dh * silu_g], dim=-1).view(BH, C, 2, Dh) * lr[..., 0::2, None]
        return x02.view(BH, C, 2 * Dh), silu_g * h * lr[..., 1:2]
    block = token_block(k, BH * (5 * Dh + 2 * D) * k.element_size())
    x02, y1 = _scratch(workspace, "x02", k, C, 2 * Dh), _scratch(workspace, "y1", k, C, Dh)
    for s, e in _blocks(C, block):
        n, lr_b = e - s, lr[:, s:e]
        gh = torch.bmm(k[:, s:e], W02.mT, out=_scratch(workspace, "gh", k, n, 2 * Dh))
        dh = torch.bmm(v[:, s:e], W1t.mT, out=_scratch(workspace, "dh", k, n, Dh))
        g, h = gh[..., :Dh], gh[..., Dh:]
        sig = torch.sigmoid(g, out=_scratch(workspace, "sig", k, n, Dh))
        silu_g = g.mul_(sig)
        torch.mul(silu_g, h, out=y1[:, s:e]).mul_(lr_b[..., 1:2])
        dsilu = sig.addcmul_(silu_g, sig, value=-1).add_(silu_g)
        torch.mul(dsilu.mul_(h), dh, out=x02[:, s:e, :Dh]).mul_(lr_b[..., 0:1])
        torch.mul(silu_g, dh, out=x02[:, s:e, Dh:]).mul_(lr_b[..., 2:3])
    return x02, y1


def dense_update(x02: Tensor, y1: Tensor, k: Tensor, v: Tensor):
    """The factors of ``chunk_gradient`` multiplied out: ``(dW02 [BH, 2Dh, D], dW1t [BH, Dh, D])``."""
    return torch.bmm(x02.mT, k), torch.bmm(y1.mT, v)


def _add_products(W02: Tensor, W1t: Tensor, x02: Tensor, y1: Tensor, k: Tensor, v: Tensor, inplace: bool):
    """``(W02 + x02^T k, W1t + y1^T v)`` in the weights' precision (under autocast only the products are
    narrowed, never the state); into ``W02, W1t`` themselves when ``inplace``."""
    if inplace:
        return W02.baddbmm_(x02.mT, k), W1t.baddbmm_(y1.mT, v)
    if torch.is_autocast_enabled(W02.device.type):
        return tuple(w + d for w, d in zip((W02, W1t), dense_update(x02, y1, k, v)))
    return torch.baddbmm(W02, x02.mT, k), torch.baddbmm(W1t, y1.mT, v)


def _add_orthogonalised_update(W02: Tensor, W1t: Tensor, x02: Tensor, y1: Tensor, k: Tensor, v: Tensor, steps: int):
    """``W`` plus the Newton-Schulz of each block of the rank-C update, run in the ``C x C`` factor
    space (``newton_schulz_factored``), the addition fused into the last product: ``(W02, W1t)``."""
    BH, C, Dh = y1.shape
    left = torch.cat([x02, y1], dim=-1).view(BH, C, 3, Dh).permute(0, 2, 3, 1).reshape(BH * 3, Dh, C)
    right = torch.stack([k, k, v], dim=1).reshape(BH * 3, C, k.shape[-1])
    W = torch.cat([W02.view(BH, 2, Dh, -1), W1t.view(BH, 1, Dh, -1)], dim=1).view(BH * 3, Dh, -1)
    new = newton_schulz_factored(left, right, steps, add_to=W).view(BH, 3 * Dh, -1)
    return new[:, : 2 * Dh], new[:, 2 * Dh :]


def _renormalise(W02: Tensor, W1t: Tensor, norm02: Tensor, norm1t: Tensor):
    """Rows of w0, w2 and w1 (the columns of W1t) rescaled to the initial weights' norms ``norm02 [BH, 2Dh, 1]``,
    ``norm1t [BH, 1, D]``; in place on tensors that autograd does not record (always fresh ones here)."""
    scale02 = norm02 / (W02.norm(dim=-1, keepdim=True) + 1e-5)
    scale1t = norm1t / (W1t.norm(dim=-2, keepdim=True) + 1e-5)
    if _records_grad(W02, W1t):
        return W02 * scale02, W1t * scale1t
    return W02.mul_(scale02), W1t.mul_(scale1t)


class Steps(NamedTuple):
    """A backend's out-of-place steps, with the signatures of this module's functions minus ``workspace``."""

    read: Callable  # (W02, W1t, q) -> o
    gradient: Callable  # (W02, W1t, k, v, lr) -> (x02, y1)
    renormalise: Callable  # (W02, W1t, norm02, norm1t) -> (W02, W1t)


TORCH_STEPS = Steps(read_chunk, chunk_gradient, _renormalise)
BACKENDS = ("auto", "torch", "triton")


@functools.cache
def _triton_kernels():
    """The package's ``kernels/triton``, or the ModuleNotFoundError that importing it raised: without triton, or
    in a flat copy of this file (an exported Hub folder's ``lact_kernels.py``), which has no such subpackage.
    Cached, so that such a copy does not search for it on every call."""
    try:
        if not __package__:
            raise ModuleNotFoundError(f"{__name__} is not in a package: no Triton kernels next to it", name="triton")
        return importlib.import_module(".triton", __package__)
    except ModuleNotFoundError as error:
        if error.name != "triton" and not (error.name or "").endswith(".triton"):
            raise  # something else is missing: not a fallback case
        return error


def backend_steps(backend: str, device: torch.device) -> Steps:
    """The steps of ``lact_swiglu(..., backend=...)`` for inputs on ``device``.

    ``"torch"``: this module's (in place in eager inference). ``"triton"``: the fused kernels of
    ``kernels/triton`` (CUDA; CPU tensors only under ``TRITON_INTERPRET=1``, Triton's interpreter).
    ``"auto"``: Triton on CUDA where triton and the kernels import, else this module's; under
    ``torch.compile`` always this module's (the compiler generates its own fused kernels from them).
    """
    if backend not in BACKENDS:
        raise ValueError(f"lact_swiglu: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and (device.type != "cuda" or torch.compiler.is_compiling())):
        return TORCH_STEPS
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(
            f"lact_swiglu: backend='triton' runs on CUDA tensors, got tensors on {device}: move the inputs and "
            "the state to CUDA, use backend='torch' (or 'auto'), or set TRITON_INTERPRET=1 before the first "
            "import of triton to run the kernels in Triton's interpreter (slow; for tests)"
        )
    kernels = _triton_kernels()
    if isinstance(kernels, ModuleNotFoundError):
        if backend == "auto":
            return TORCH_STEPS
        raise ImportError(
            f"lact_swiglu: backend='triton' needs triton and the Triton kernels of the installed lact-audio "
            f"(modeling_lact_audio.kernels.triton; `pip install -e .[kernels]`), and {__name__} has none "
            f"({kernels}); use backend='torch' or 'auto'"
        ) from kernels
    if device.type != "cuda" and not kernels.INTERPRETED:
        raise ValueError(
            "lact_swiglu: backend='triton' on CPU tensors needs Triton's interpreter, but TRITON_INTERPRET=1 was "
            "set after kernels/triton was imported: set it before the first import"
        )
    return Steps(kernels.read_chunk, kernels.chunk_gradient, kernels.renormalise)


class SecondMoment(NamedTuple):
    """``update_rule="adam"``'s state in the working layout: running means of the squared chunk updates
    ``V02 [BH, 2Dh, D]`` and ``V1t [BH, Dh, D]`` (in the weights' dtype), and ``count [BH]`` int64, the
    chunk updates folded into them so far (for the bias correction)."""

    V02: Tensor
    V1t: Tensor
    count: Tensor


def adam_step(first: tuple, G: tuple, V: SecondMoment, rates: Tensor, beta2: float, eps: float):
    """Adam's per-element normalised step for one chunk.

    Args:
        first: ``(F02 [BH, 2Dh, D], F1t [BH, Dh, D])``, the first moment: the momentum buffer after this
            chunk (``M = beta M + G``), or ``G`` itself without momentum.
        G: ``(G02, G1t)``, the chunk's rate-weighted update ``-sum_t lr_t dL_t/dW`` (what ``update_rule="sgd"``
            adds), in the weights' dtype.
        V: the second moment before this chunk; rates: ``[BH, 3]`` the chunk's mean rate of (w0, w1, w2)
            over its real tokens.
        beta2, eps: Adam's second-moment decay and epsilon.

    Returns:
        ``(dW, V)``: ``dW_i = r_i * F_i / sqrt(V_i / (1 - beta2^n) + eps^2)`` per element, with
        ``V_i = beta2 V_i + (1 - beta2) G_i^2``, ``n = V.count + 1`` and ``r_i`` the chunk's mean rate of
        matrix i; the new ``SecondMoment``.
    """
    Dh = G[1].shape[1]
    count = V.count + 1
    new_V = tuple(torch.addcmul(v * beta2, g, g, value=1 - beta2) for v, g in zip(V[:2], G))
    correction = (1 - beta2 ** count.to(G[0].dtype))[:, None, None]  # [BH, 1, 1]
    scale02 = torch.cat([rates[:, 0:1].expand(-1, Dh), rates[:, 2:3].expand(-1, Dh)], 1)[..., None]  # [BH, 2Dh, 1]
    scales = (scale02, rates[:, 1, None, None])
    dW = tuple(r * f * torch.rsqrt(v / correction + eps**2) for r, f, v in zip(scales, first, new_V))
    return dW, SecondMoment(*new_V, count)


def apply_update(
    W: tuple,
    M: Optional[tuple],
    factors: tuple,
    *,
    beta: Optional[Tensor],
    has: Optional[Tensor],
    norms: Optional[tuple],
    muon_steps: int,
    inplace: bool = False,
    renormalise: Callable = _renormalise,
    second_moment: Optional[SecondMoment] = None,
    rates: Optional[Tensor] = None,
    adam_beta2: float = 0.99,
    adam_eps: float = 1e-8,
):
    """One chunk's update of the fast weights: momentum, Newton-Schulz or Adam, ``W += dW``, renormalisation.

    Args:
        W: ``(W02 [BH, 2Dh, D], W1t [BH, Dh, D])``; M: momentum buffers of the same shapes, or None
            without momentum.
        factors: ``(x02, y1, k, v)`` of ``chunk_gradient`` (``dW02 = x02^T k``, ``dW1t = y1^T v``).
        beta: ``[BH]`` momentum of this chunk (with M); has: ``[BH, 1, 1]`` bool, False where the chunk
            holds no real token (those weights and buffers stay as they were), or None.
        norms: ``(norm02 [BH, 2Dh, 1], norm1t [BH, 1, D])`` to renormalise to, or None (no renormalisation).
        muon_steps: Newton-Schulz iterations (0: none).
        inplace: W and M may be overwritten (tensors the caller owns, outside autograd and autocast).
        renormalise: the renormalisation step (``Steps.renormalise``).
        second_moment: None (``update_rule="sgd"``), or Adam's ``SecondMoment`` (``update_rule="adam"``, never
            with ``muon_steps > 0``): the step is then ``adam_step``'s, with the momentum buffer as first moment.
        rates: ``[BH, 3]`` the chunk's mean rates over its real tokens (with ``second_moment``).
        adam_beta2, adam_eps: Adam's second-moment decay and epsilon (with ``second_moment``).

    Returns:
        ``(W, M, V)``: new tensors, or with ``inplace`` possibly the updated inputs; ``V`` the new
        ``SecondMoment`` (None without). Without momentum a short chunk's rank-C update is orthogonalised in
        its ``C x C`` factor space (``newton_schulz_factored``).
    """
    (W02, W1t), (x02, y1, k, v) = W, factors
    Dh, D, C = W1t.shape[1], W1t.shape[2], k.shape[1]
    inplace = inplace and has is None  # a chunk without real tokens keeps the old values: torch.where below
    new_M = new_V = None
    if second_moment is not None:
        # Under autocast the products come in the autocast dtype; the moments stay in the weights' dtype.
        G = tuple(d.to(W02.dtype) for d in dense_update(x02, y1, k, v))
        first = G
        if M is not None:
            b = beta[:, None, None]
            new_M = first = tuple(m * b + g for m, g in zip(M, G))
        dW, new_V = adam_step(first, G, second_moment, rates, adam_beta2, adam_eps)
        new_W = tuple(w + d for w, d in zip(W, dW))
    elif M is None and factored_is_cheaper(Dh, D, C, muon_steps):
        new_W = _add_orthogonalised_update(W02, W1t, x02, y1, k, v, muon_steps)
    elif M is None and muon_steps == 0:
        new_W = _add_products(W02, W1t, x02, y1, k, v, inplace)
    else:
        if M is None:
            dW = dense_update(x02, y1, k, v)
        else:
            b = beta[:, None, None]
            decayed = tuple(m.mul_(b) if inplace else m * b for m in M)
            new_M = dW = _add_products(*decayed, x02, y1, k, v, inplace)
        if muon_steps > 0:  # per matrix: w0's and w2's blocks of dW02 separately
            dW02, dW1t = dW
            dW02 = newton_schulz(dW02.reshape(-1, Dh, D), muon_steps).reshape(dW02.shape)
            dW = dW02, newton_schulz(dW1t, muon_steps)
        new_W = tuple(w.add_(d) if inplace else w + d for w, d in zip(W, dW))
    if norms is not None:
        new_W = renormalise(*new_W, *norms)
    if has is not None:
        new_W = tuple(torch.where(has, n, w) for n, w in zip(new_W, W))
        new_M = None if new_M is None else tuple(torch.where(has, n, m) for n, m in zip(new_M, M))
        if new_V is not None:
            new_V = SecondMoment(
                *(torch.where(has, n, o) for n, o in zip(new_V[:2], second_moment[:2])),
                torch.where(has[:, 0, 0], new_V.count, second_moment.count),
            )
    return new_W, new_M, new_V


def to_heads(x: Tensor, H: int) -> Tensor:
    """``[B, n, H, *F] -> [B*H, n, *F]`` (a copy unless H == 1): one batched GEMM over every (example, head)."""
    return x.transpose(1, 2).reshape(x.shape[0] * H, x.shape[1], *x.shape[3:])


def _stack_heads(w0: Tensor, w1: Tensor, w2: Tensor):
    """``w0, w2 [B, H, Dh, D]``, ``w1 [B, H, D, Dh]`` -> ``(W02 [BH, 2Dh, D], W1t [BH, Dh, D])`` (copies)."""
    B, H, Dh, D = w0.shape
    return torch.cat([w0, w2], dim=2).reshape(B * H, 2 * Dh, D), w1.mT.reshape(B * H, Dh, D)


def working_layout(state: FastWeightState):
    """``(W02 [BH, 2Dh, D], W1t [BH, Dh, D])`` of a state's weights (kept from the call that made the state)."""
    return state.working if state.working is not None else _stack_heads(state.w0, state.w1, state.w2)


def from_working_layout(W02: Tensor, W1t: Tensor, B: int, H: int):
    """``w0, w1, w2`` as ``[B, H, ...]`` views of the working layout (inverse of ``working_layout``)."""
    Dh, D = W1t.shape[1:]
    w02 = W02.view(B, H, 2 * Dh, D)
    return w02[:, :, :Dh], W1t.view(B, H, Dh, D).mT, w02[:, :, Dh:]


def _update_stream(name: str, new: Optional[Tensor], pend: Optional[PendingChunk]) -> Optional[Tensor]:
    """The tokens that update the weights, ``[B, n_pending + T, ...]``: the pending chunk's first."""
    if new is None or pend is None:
        return new
    old = getattr(pend, name)
    if name == "lr" and pend.mask is not None:
        old = old * pend.mask[:, :, None, None]
    return torch.cat([old.to(new.dtype), new], 1)


STREAM_INPUTS = ("k", "v", "lr", "momentum", "mask")


def update_chunk(
    W: tuple,
    M: Optional[tuple],
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    momentum: Optional[Tensor],
    mask: Optional[Tensor],
    *,
    norms: Optional[tuple],
    muon_steps: int,
    workspace: Optional[dict] = None,
    steps: Steps = TORCH_STEPS,
    second_moment: Optional[SecondMoment] = None,
    adam_beta2: float = 0.99,
    adam_eps: float = 1e-8,
):
    """One chunk's update in the working layout: ``chunk_gradient`` then ``apply_update``.

    Args:
        W, M, norms, muon_steps, second_moment, adam_beta2, adam_eps: as in ``apply_update``; with a
            ``workspace`` (see ``read_chunk``) W and M are updated in place.
        k, v: ``[BH, C, D]``; lr: ``[BH, C, 3]`` (zero on padding); momentum: ``[BH, C]`` or None;
            mask: bool ``[BH, C]`` or None (False = padding: left out of the chunk's mean momentum and mean rates).
        steps: the backend's steps (``backend_steps``); used when ``workspace`` is None.

    Returns:
        The new ``(W, M, V)`` (``V`` None without ``second_moment``).
    """
    x02, y1 = steps.gradient(*W, k, v, lr) if workspace is None else chunk_gradient(*W, k, v, lr, workspace)
    beta = has = rates = None
    if mask is not None:
        count = mask.sum(1)
        has = (count > 0)[:, None, None]
    if M is not None:
        beta = momentum.mean(1) if mask is None else (momentum * mask).sum(1) / count.clamp(min=1)
    if second_moment is not None:  # lr is zero on padding: its sum over the real tokens, over their number
        real = k.shape[1] if mask is None else count.clamp(min=1)[:, None].to(W[0].dtype)
        rates = lr.to(W[0].dtype).sum(1) / real
    return apply_update(
        W,
        M,
        (x02, y1, k, v),
        beta=beta,
        has=has,
        norms=norms,
        muon_steps=muon_steps,
        inplace=workspace is not None,
        renormalise=steps.renormalise,
        second_moment=second_moment,
        rates=rates,
        adam_beta2=adam_beta2,
        adam_eps=adam_eps,
    )


def _read(W: tuple, q: Tensor, mask: Optional[Tensor], B: int, H: int, workspace=None, out=None, steps=TORCH_STEPS):
    """``read_chunk`` of ``q [BH, n, D]`` in the op's layout ``[B, n, H, D]`` (into ``out`` when given), zero
    where ``mask [B, n]`` is False; ``steps.read`` without a workspace."""
    n, D = q.shape[1:]
    if out is not None and (B == 1 or H == 1):  # out [B, n, H, D] is then a [BH, n, D] view: no copy
        read_chunk(*W, q, workspace, out=out.transpose(1, 2).view(B * H, n, D))
        return out if mask is None else out.mul_(mask[:, :, None, None])
    o = (steps.read(*W, q) if workspace is None else read_chunk(*W, q, workspace)).view(B, H, n, D).transpose(1, 2)
    if out is not None:
        return out.copy_(o) if mask is None else torch.mul(o, mask[:, :, None, None], out=out)
    return o if mask is None else o * mask[:, :, None, None].to(o.dtype)


def _working_state(state: FastWeightState, weight_norm: bool, use_momentum: bool, update_rule: str):
    """The op's working copies of a state: ``(W, norms, M, V)`` (see ``apply_update``), ``[BH, ...]`` each."""
    B, H, D = state.batch_size, state.num_heads, state.head_dim
    W = working_layout(state)
    norms = None
    if weight_norm:
        norms = (
            torch.cat([state.w0_norm, state.w2_norm], dim=2).reshape(B * H, 2 * state.hidden_dim, 1),
            state.w1_norm.reshape(B * H, 1, D),  # w1's row norms are W1t's column norms
        )
    M = None
    if use_momentum:
        M = tuple(map(torch.zeros_like, W)) if state.m0 is None else _stack_heads(state.m0, state.m1, state.m2)
    V = None
    if update_rule == "adam":
        if state.v0 is None:
            count = torch.zeros(B * H, dtype=torch.long, device=W[0].device)
            V = SecondMoment(*map(torch.zeros_like, W), count)
        else:
            V = SecondMoment(*_stack_heads(state.v0, state.v1, state.v2), state.v_count.reshape(B * H))
    return W, norms, M, V


def _final_state(state: FastWeightState, W, M, V, B: int, H: int, T: int, chunk_size: int, pending, chunk_fill=None):
    """The ``FastWeightState`` after a call of ``T`` tokens from its working tensors."""
    w0, w1, w2 = from_working_layout(*W, B, H)
    m0, m1, m2 = (None, None, None) if M is None else from_working_layout(*M, B, H)
    v0, v1, v2 = (None, None, None) if V is None else from_working_layout(V.V02, V.V1t, B, H)
    return FastWeightState(
        w0=w0,
        w1=w1,
        w2=w2,
        w0_norm=state.w0_norm,
        w1_norm=state.w1_norm,
        w2_norm=state.w2_norm,
        m0=m0,
        m1=m1,
        m2=m2,
        v0=v0,
        v1=v1,
        v2=v2,
        v_count=None if V is None else V.count.view(B, H),
        pending=pending,
        seen=state.seen + T,
        chunk_size=chunk_size,
        chunk_fill=chunk_fill,
        working=W,
    )


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
    output_final_state: bool = True,
    backend: str = "auto",
    update_rule: str = "sgd",
    chunk_ends: Optional[Tensor] = None,
    adam_beta2: float = 0.99,
    adam_eps: float = 1e-8,
):
    """LaCT SwiGLU fast-weight op: read the fast weights with ``q`` and update them chunk by chunk.

    Fast weight function ``f_W(x) = w1 (silu(w0 x) * (w2 x))`` per head. Each chunk of tokens
    computes ``G = -sum_t lr_t dL_t/dW`` of ``L_t = -<f_W(k_t), v_t>`` (per-token rates, one for
    each of w0, w1, w2) and turns it into the step ``dW`` by ``update_rule``:

    - ``"sgd"``: optionally through momentum (``M = beta M + G``, ``beta`` the chunk mean of
      ``momentum``, ``dW = M``; else ``dW = G``), then Newton-Schulz orthogonalisation of each matrix
      (Muon, ``muon_steps > 0``).
    - ``"adam"`` (needs ``muon_steps=0``): per element, ``V = b2 V + (1 - b2) G^2`` (``b2 = adam_beta2``;
      ``V`` lives in the state across chunks and calls), ``V_hat = V / (1 - b2^n)`` with ``n`` the number
      of updates so far (bias correction), ``dW_i = r_i * F_i / sqrt(V_hat_i + eps^2)`` for each matrix
      i of (w0, w1, w2), where ``F = M`` with momentum (the momentum buffer is Adam's first moment, in
      the heavy-ball form above: no ``1 - beta`` factor and no bias correction, so as with ``"sgd"`` a
      steady step is about ``1 / (1 - beta)`` times larger) and ``F = G`` without, and ``r_i`` is the
      chunk's mean rate of matrix i over its real tokens. Normalising ``G`` alone would make the
      rates' overall size irrelevant (the first step would be ``sign(G)``); ``r_i`` keeps the learned
      rates meaningful: each element moves by about ``r_i`` per chunk. ``eps`` sits inside the root
      (``adam_eps``, default 1e-8) so that the step is differentiable where ``V = 0`` (an element no
      token touched), where ``sqrt`` has an infinite derivative and would give NaN gradients.

    Then ``W += dW`` and, with ``weight_norm``, every row is rescaled to its norm in the initial weights.

    Chunk boundaries sit at multiples of ``chunk_size`` from the start of the stream
    (``state.seen`` counts the tokens consumed so far), unless ``chunk_ends`` is given. ``order``:

    - ``"apply_update"`` (generation): chunk i is read with the weights built from chunks < i, then
      updates them. A trailing partial chunk is read with the current weights and held in the
      state; it updates once a later call completes it, so a stream split anywhere equals one call.
      **Hazard**: a sequence no longer than one chunk is read with the initial weights only; no
      update ever reaches its own outputs. Do not use this order for single-utterance ASR.
    - ``"update_apply"`` (streaming ASR): each chunk updates the weights, then is read with them;
      a trailing partial chunk updates as a short chunk. Splits at chunk boundaries equal one call.
    - ``"bidirectional"`` (offline ASR): every chunk updates in turn, then every token is read
      with the final weights.

    Variable chunk boundaries: with ``chunk_ends`` a chunk ends at every True of its example's row and
    also once it holds ``chunk_size`` positions (padding included), counted from the chunk's own start,
    so ``chunk_size`` stays the longest chunk; rows may differ. The stream keeps each example's fill of
    its current chunk in ``state.chunk_fill`` (later calls continue it, with or without ``chunk_ends``),
    and with ``apply_update`` its partial chunk in ``state.pending`` (right-aligned, per example), so
    a stream split anywhere still equals one call. Implementation: every chunk (segment) of every
    example gets a slot of ``width`` positions (the longest segment of the call), padded and masked,
    and the chunk loop runs over slots; since an update is a sum over the unmasked tokens of its chunk
    this is exact. It costs one host sync per call (the number of segments) and runs out of place.
    With ``chunk_ends`` all False and a fresh stream the chunks are the fixed ones.

    Args:
        q, k, v: ``[B, T, H, D]`` floating point.
        lr: ``[B, T, H, 3]`` non-negative learning rates for (w0, w1, w2); float32 recommended.
        state: ``FastWeightState`` with weights ``w0, w2: [B, H, Dh, D]``, ``w1: [B, H, D, Dh]``.
        chunk_size: tokens per update (>= 1), e.g. 512..4096 for audio frames; with ``chunk_ends``, the
            longest chunk.
        order: ``"apply_update"``, ``"update_apply"`` or ``"bidirectional"``.
        muon_steps: Newton-Schulz iterations (0 disables Muon; must be 0 with ``update_rule="adam"``).
        weight_norm: renormalise rows to the initial weights' norms after each update.
        momentum: None or ``[B, T, H]`` in [0, 1).
        mask: None or bool ``[B, T]``, False = padding: padded tokens never update the state and
            their outputs are zero. A chunk without real tokens changes nothing.
        output_final_state: False when the caller drops the state (a forward without cache): returns
            ``(o, None)``, and ``apply_update`` then skips the last chunk's update, which no output reads
            (like the official ``block_causal_lact_swiglu``, which returns no state).
        backend: ``"torch"`` (the PyTorch steps of this module), ``"triton"`` (fused Triton kernels for the
            read, the chunk gradient and the renormalisation; CUDA, or CPU under ``TRITON_INTERPRET=1``) or
            ``"auto"`` (Triton for CUDA inputs in eager mode where it imports, else PyTorch). See ``backend_steps``.
            Both update rules and ``chunk_ends`` run on every backend (Adam's step is PyTorch on all of them).
        update_rule: ``"sgd"`` (default) or ``"adam"``, see above. A state with second moments (``v0``) must
            continue with ``"adam"``.
        chunk_ends: None or bool ``[B, T]``, True at the last token of a chunk.
        adam_beta2: Adam's second-moment decay in [0, 1) (default 0.99: a memory of about 100 chunks, the
            length of a long stream, where 0.999 would barely move from its bias-corrected start).
        adam_eps: Adam's epsilon (> 0), inside the square root.

    Returns:
        ``(o, new_state)``: ``o`` ``[B, T, H, D]`` (the state's dtype, or the autocast dtype under
        autocast); the input state is never modified.

    Cost: 18·T·H·D·Dh flops (read, gradient recomputation, three gradient products) plus
    ``muon_steps`` Newton-Schulz iterations per chunk. Without momentum a chunk's update has rank
    <= its length C, and when C is small next to ``min(D, Dh)`` (streaming, small presets) the
    iteration runs on ``C x C`` factors (``newton_schulz_factored``), not on ``Dh x D`` matrices.
    Values are read on the host only under ``check_values()`` (see ``validation``) and with variable
    chunk boundaries. Differentiable with respect to q, k, v, lr, momentum and the initial weights.
    Under bf16 autocast the matmuls run in bf16 while the state stays in float32.
    """
    check_lact_inputs(
        q, k, v, lr, state, chunk_size, order, muon_steps, momentum, mask, update_rule, chunk_ends, adam_beta2, adam_eps
    )
    steps = backend_steps(backend, q.device)
    B, T, H, D = q.shape
    if T == 0:
        return q.new_zeros(B, 0, H, D), state
    autocast = torch.is_autocast_enabled(q.device.type)
    if not autocast:
        q, k, v = (t.to(state.dtype) for t in (q, k, v))
    lr = lr.to(state.dtype)  # the rates scale state-dtype gradients (float32, or float64 for gradcheck)
    adam = dict(adam_beta2=adam_beta2, adam_eps=adam_eps)
    if chunk_ends is not None or state.chunk_fill is not None:
        return _lact_swiglu_segments(
            q, k, v, lr, state, momentum, mask, chunk_ends, chunk_size, order, muon_steps, weight_norm,
            output_final_state, steps, update_rule, adam,
        )  # fmt: skip

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

    spans = chunk_spans(state.seen - n_p, n_p + T, chunk_size)
    # The update stream (pending tokens first), in the working layout and split once per input: the backward
    # of one split is a single cat, where slicing per chunk would zero-fill a whole [B, T, H, D]
    # gradient for every chunk (quadratic in T during training).
    inputs = {"k": k, "v": v, "lr": lr, "momentum": momentum, "mask": mask}
    stream = {name: _update_stream(name, inputs[name], pend) for name in STREAM_INPUTS}
    span_sizes = [e - s for s, e, _ in spans]
    lr_dtype = torch.get_autocast_dtype(q.device.type) if autocast else lr.dtype
    per_head = {**stream, "mask": None if mask is None else stream["mask"][:, :, None].expand(-1, -1, H)}
    heads = {name: None if t is None else to_heads(t, H).split(span_sizes, 1) for name, t in per_head.items()}
    if autocast:
        heads["lr"] = tuple(t.to(lr_dtype) for t in heads["lr"])
    sizes = [e - max(s, n_p) for s, e, _ in spans]  # this call's tokens in each span (all > 0)
    q_heads = to_heads(q, H)
    q_spans = q_heads.split(sizes, 1)

    W, norms, M, V = _working_state(state, weight_norm, momentum is not None, update_rule)

    # Eager inference works in place in buffers of its own (see read_chunk); autograd, autocast and
    # compilers get the out-of-place steps.
    out_of_place = steps is not TORCH_STEPS or _out_of_place(q, k, v, lr, momentum, *W, *(norms or ()), *(M or ()))
    workspace = None if out_of_place else {}
    o = None
    if workspace is not None:
        o = q.new_empty(B, T, H, D)
        if order != "apply_update" or any(full for *_, full in spans):
            W = tuple(w.clone() for w in W)  # updated in place from here on: the input state is never modified
            M = None if M is None else tuple(m.clone() for m in M)

    mask_pieces = (None,) * len(spans) if mask is None else mask.split(sizes, 1)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    outs, new_pending = [], None
    for i, (s, e, full) in enumerate(spans):
        out_i = None if o is None else o[:, starts[i] : starts[i] + sizes[i]]
        if order == "apply_update":
            outs.append(_read(W, q_spans[i], mask_pieces[i], B, H, workspace, out_i, steps))
        if order != "apply_update" or (full and (output_final_state or i < len(spans) - 1)):
            chunk = (None if heads[name] is None else heads[name][i] for name in STREAM_INPUTS)
            W, M, V = update_chunk(
                W, M, *chunk, norms=norms, muon_steps=muon_steps, workspace=workspace, steps=steps,
                second_moment=V, **adam,
            )  # fmt: skip
        elif not full and output_final_state:
            new_pending = PendingChunk(**{name: None if t is None else t[:, s:e] for name, t in stream.items()})
        if order == "update_apply":
            outs.append(_read(W, q_spans[i], mask_pieces[i], B, H, workspace, out_i, steps))
    if order == "bidirectional":
        outs.append(_read(W, q_heads, mask, B, H, workspace, o, steps))
    if o is None:
        o = torch.cat(outs, 1) if len(outs) > 1 else outs[0].contiguous()  # [B, T, H, D]

    if not output_final_state:
        return o, None
    new_state = _final_state(state, W, M, V, B, H, T, chunk_size, new_pending)
    check_lact_output(o, new_state, k, lr)
    return o, new_state


def segment_layout(chunk_ends: Tensor, fill: Tensor, pending: Tensor, chunk_size: int, apply_update_order: bool):
    """Where the chunks of a call with variable boundaries lie: one segment per chunk, per example.

    Args:
        chunk_ends: bool ``[B, T]``, True at the last token of a chunk (this call's tokens).
        fill: int64 ``[B]``, positions of each example's current chunk before this call (``< chunk_size``).
        pending: int64 ``[B]``, how many of those are still pending tokens (``fill`` with ``apply_update``
            and a pending chunk, else 0): they lead the example's first segment.
        chunk_size: the longest chunk.
        apply_update_order: an unfinished last segment does not update (``apply_update``).

    Returns:
        dict of int64 tensors ``segment [B, T]`` (segment index of each token), ``offset [B, T]`` (its
        place in its segment, pending tokens first), ``segments [B]`` (how many segments each row has),
        ``updating [B]`` (how many of them update now), ``fill [B]`` (positions of the chunk left open at
        the end, 0 when the last token ends a chunk).
    """
    B, T = chunk_ends.shape
    t = torch.arange(T, device=chunk_ends.device)

    def last_start(starts: Tensor) -> Tensor:  # index of the latest True at or before each position
        return torch.where(starts, t, 0).cummax(1).values

    after = lambda ends: torch.cat([torch.ones_like(ends[:, :1]), ends[:, :-1]], 1)
    run_start = last_start(after(chunk_ends))  # runs between explicit ends
    # positions of the chunk before t: the first run continues the chunk the stream left open
    before = t - run_start + torch.where(run_start == 0, fill[:, None], 0)
    ends = chunk_ends | ((before + 1) % chunk_size == 0)  # within a run a chunk also ends every chunk_size
    segment = ends.long().cumsum(1) - ends.long()
    offset = t - last_start(after(ends)) + torch.where(segment == 0, pending[:, None], 0)
    is_open = ~ends[:, -1]
    segments = segment[:, -1] + 1
    return {
        "segment": segment,
        "offset": offset,
        "segments": segments,
        "updating": segments - (is_open & apply_update_order).long(),
        "fill": torch.where(is_open, (before[:, -1] + 1) % chunk_size, 0),  # chunks within a run are chunk_size long
    }


def _lact_swiglu_segments(
    q, k, v, lr, state, momentum, mask, chunk_ends, chunk_size, order, muon_steps, weight_norm,
    output_final_state, steps, update_rule, adam,
):  # fmt: skip
    """``lact_swiglu`` with variable chunk boundaries (inputs already checked and cast): every segment of every
    example gets a slot of ``width`` positions, and the chunk loop runs over the slots (see ``lact_swiglu``)."""
    B, T, H, D = q.shape
    dev = q.device
    pend = state.pending
    n_p = 0 if pend is None else pend.length
    if pend is not None and (pend.momentum is None) != (momentum is None):
        raise ValueError("lact_swiglu: momentum must be given in every call of a stream or in none")
    fill = state.chunk_fill
    if fill is None:  # the stream so far had fixed chunks: its current chunk holds seen % chunk_size positions
        fill = torch.full((B,), state.seen % chunk_size, dtype=torch.long, device=dev)
    n_pending = fill if pend is not None else torch.zeros_like(fill)
    mask = torch.ones(B, T, dtype=torch.bool, device=dev) if mask is None else mask
    lr = lr * mask[:, :, None, None]  # padded tokens learn nothing
    if chunk_ends is None:
        chunk_ends = torch.zeros(B, T, dtype=torch.bool, device=dev)

    # The update stream [B, n_p + T, ...]: pending tokens (right-aligned per example) first.
    stream = {"k": k, "v": v, "lr": lr, "momentum": momentum, "mask": mask}
    if pend is not None:
        pend_mask = pend.mask if pend.mask is not None else torch.ones(B, n_p, dtype=torch.bool, device=dev)
        old = {"k": pend.k, "v": pend.v, "lr": pend.lr * pend_mask[:, :, None, None], "momentum": pend.momentum}
        old["mask"] = pend_mask
        stream = {n: None if t is None else torch.cat([old[n].to(t.dtype), t], 1) for n, t in stream.items()}

    layout = segment_layout(chunk_ends, fill, n_pending, chunk_size, order == "apply_update")
    S, width, S_upd, n_open = torch.stack(
        [layout["segments"].max(), layout["offset"].max() + 1, layout["updating"].max(), layout["fill"].max()]
    ).tolist()  # the one host sync: how many slots, how wide
    # src [B, S * width]: the stream position each slot position holds, -1 where it holds none
    t = torch.arange(T, device=dev)
    slot_pos = layout["segment"] * width + layout["offset"]  # [B, T]
    src = torch.full((B, S * width + 1), -1, dtype=torch.long, device=dev)  # the last column takes the discards
    src.scatter_(1, slot_pos, (n_p + t).expand(B, T))
    if pend is not None:
        p = torch.arange(n_p, device=dev)
        first = n_p - n_pending[:, None]  # [B, 1]: the example's first pending token
        src.scatter_(1, torch.where(p >= first, p - first, S * width), p.expand(B, n_p))
    src = src[:, : S * width]
    rows = torch.arange(B, device=dev)[:, None]
    idx = src.clamp(min=0)
    slot_updates = (torch.arange(S, device=dev) < layout["updating"][:, None]).repeat_interleave(width, 1)
    update_mask = (src >= 0) & stream["mask"][rows, idx] & slot_updates  # [B, S * width]

    n_u = S_upd * width
    gathered = {n: None if stream[n] is None else stream[n][rows, idx[:, :n_u]] for n in ("k", "v", "lr", "momentum")}
    gathered["lr"] = gathered["lr"] * update_mask[:, :n_u, None, None]
    gathered["mask"] = update_mask[:, :n_u, None].expand(-1, -1, H)
    if torch.is_autocast_enabled(dev.type):
        gathered["lr"] = gathered["lr"].to(torch.get_autocast_dtype(dev.type))
    heads = {n: None if x is None else to_heads(x, H).split(width, 1) for n, x in gathered.items()}

    W, norms, M, V = _working_state(state, weight_norm, momentum is not None, update_rule)
    q_slots = None
    if order != "bidirectional":
        q_slots = to_heads(q[rows, (src - n_p).clamp(min=0)], H).split(width, 1)
    outs = []
    for j in range(S if order != "bidirectional" else S_upd):
        if order == "apply_update":
            outs.append(_read(W, q_slots[j], None, B, H, steps=steps))
        if j < S_upd and (output_final_state or order != "apply_update" or j < S - 1):
            chunk = (None if heads[n] is None else heads[n][j] for n in STREAM_INPUTS)
            W, M, V = update_chunk(
                W, M, *chunk, norms=norms, muon_steps=muon_steps, steps=steps, second_moment=V, **adam
            )
        if order == "update_apply":
            outs.append(_read(W, q_slots[j], None, B, H, steps=steps))
    if order == "bidirectional":
        o = _read(W, to_heads(q, H), mask, B, H, steps=steps)
    else:
        o = torch.cat(outs, 1)[rows, slot_pos] * mask[:, :, None, None].to(outs[0].dtype)  # [B, T, H, D]

    if not output_final_state:
        return o, None
    new_pending = None
    if order == "apply_update" and n_open > 0:  # each example's open chunk, right-aligned
        i = torch.arange(n_open, device=dev)
        keep = i >= n_open - layout["fill"][:, None]  # [B, n_open]
        at = n_p + T - n_open + i
        take = lambda x: x[:, at] * keep.view(B, n_open, *(1,) * (x.dim() - 2)).to(x.dtype)
        new_pending = PendingChunk(
            k=take(stream["k"]),
            v=take(stream["v"]),
            lr=take(stream["lr"]),
            momentum=None if momentum is None else take(stream["momentum"]),
            mask=stream["mask"][:, at] & keep,
        )
    new_state = _final_state(state, W, M, V, B, H, T, chunk_size, new_pending, layout["fill"])
    check_lact_output(o, new_state, k, lr)
    return o, new_state
