"""Newton-Schulz orthogonalisation, the update rule of Muon, dense and for low-rank updates."""

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# Quintic iteration coefficients from Muon: they push every singular value towards ~1 in a few steps.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(x: Tensor, steps: int) -> Tensor:
    """Approximately orthogonalise each matrix in ``x`` (Muon's Newton-Schulz iteration).

    Per matrix: transpose when rows > cols, divide by (Frobenius norm + 1e-7), repeat
    ``A = X X^T; X = a X + (b A + c A A) X`` with ``(a, b, c) = (3.4445, -4.7750, 2.0315)``,
    transpose back.

    Args:
        x: ``[..., m, n]`` floating tensor (any leading batch dims).
        steps: number of iterations (0 returns the normalised input).

    Returns:
        Tensor of the same shape; its singular values lie roughly in [0.7, 1.2] after 5 steps.
        Runs in ``x``'s dtype (bf16 under autocast, which is how Muon runs it).
    """
    if steps < 0:
        raise ValueError(f"newton_schulz: steps must be >= 0, got {steps}")
    if x.dim() < 2:
        raise ValueError(f"newton_schulz: x must have at least 2 dims [..., m, n], got {tuple(x.shape)}")
    a, b, c = NS_COEFFS
    lead, (m, n) = x.shape[:-2], x.shape[-2:]
    transpose = m > n
    X = x.reshape(-1, m, n)
    if transpose:
        X = X.mT
    # The norm in at least float32: a bf16 sum of squares over a large matrix loses digits.
    norm = torch.linalg.matrix_norm(X.to(torch.promote_types(X.dtype, torch.float32)), keepdim=True)
    X = X / (norm.to(X.dtype) + 1e-7)
    for _ in range(steps):
        A = torch.bmm(X, X.mT)
        Bm = torch.baddbmm(A, A, A, beta=b, alpha=c)
        X = torch.baddbmm(X, Bm, X, beta=a)
    if transpose:
        X = X.mT
    return X.reshape(*lead, m, n)


def newton_schulz_flops(m: int, n: int, steps: int, rank: int | None = None) -> int:
    """Matmul flops of one ``m x n`` Newton-Schulz call: dense, or factored for a ``rank``-r input.

    Dense: ``steps * (4 m'^2 n' + 2 m'^3)`` with ``m' = min(m, n)``. Factored (``rank`` given, see
    ``newton_schulz_factored``): two Gram matrices ``2 r^2 (m + n)``, ``10 r^3`` a step, and the
    product back to ``m x n``: ``2 m r^2 + 2 m n r``.
    """
    if rank is None:
        lo, hi = min(m, n), max(m, n)
        return steps * (4 * lo * lo * hi + 2 * lo**3)
    r = rank
    return 2 * r * r * (m + n) + 10 * steps * r**3 + 2 * m * r * r + 2 * m * n * r


def factored_is_cheaper(m: int, n: int, rank: int, steps: int) -> bool:
    """Whether ``newton_schulz_factored`` should replace the dense iteration for a rank-``rank`` input.

    True when it needs at most half the dense flops: its r x r products are small, less efficient GEMMs.
    """
    return steps > 0 and 2 * newton_schulz_flops(m, n, steps, rank) <= newton_schulz_flops(m, n, steps)


def _factor_iterations(C: Tensor, K: Tensor, G: Tensor, steps: int) -> Tensor:
    """``steps`` Newton-Schulz steps on the ``r x r`` factor: ``S = C G C^T K; C = (a I + b S + c S^2) C``."""
    a, b, c = NS_COEFFS
    for _ in range(steps):
        S = torch.bmm(torch.bmm(torch.bmm(C, G), C.mT), K)  # C G C^T K
        P = torch.baddbmm(S, S, S, beta=b, alpha=c)  # b S + c S^2
        C = torch.baddbmm(C, P, C, beta=a)  # (a I + b S + c S^2) C
    return C


def newton_schulz_factored(left: Tensor, right: Tensor, steps: int, add_to: Tensor | None = None) -> Tensor:
    """``newton_schulz(left @ right, steps)`` computed through the ``r x r`` factor space.

    A rank-r input ``X = L R`` stays ``L C R`` under the iteration: with ``K = L^T L`` and
    ``G = R R^T`` (``r x r``), ``X X^T X = L (C G C^T K) C R``, so each step is
    ``S = C G C^T K; C = (a I + b S + c S^2) C`` on ``r x r`` matrices, starting from
    ``C = I / (||X||_F + 1e-7)`` with ``||X||_F^2 = trace(K G)``. Exact in exact arithmetic (the
    dense iteration's transpose for tall matrices changes nothing: the polynomial is odd in X).
    A fast-weight gradient over a chunk of r < Dh tokens has this form, so short chunks (streaming,
    small presets) orthogonalise for ``O(r^3)`` a step instead of ``O(Dh^2 D)``.

    Args:
        left: ``[N, m, r]``; right: ``[N, r, n]`` floating point.
        steps: Newton-Schulz iterations (>= 0).
        add_to: optional ``[N, m, n]``; when given, returns ``add_to + result`` in one fused product, in
            the wider of ``add_to``'s and ``left``'s dtypes (autocast does not narrow it).

    Returns:
        ``[N, m, n]`` in ``left``'s dtype (the autocast dtype under autocast; with ``add_to``, the
        promoted dtype). The ``r x r`` algebra
        runs in at least float32 (it is tiny); only the final ``[m, r] x [r, n]`` product is dense.
    """
    if steps < 0:
        raise ValueError(f"newton_schulz_factored: steps must be >= 0, got {steps}")
    if left.dim() != 3 or right.dim() != 3 or left.shape[0] != right.shape[0] or left.shape[2] != right.shape[1]:
        raise ValueError(
            f"newton_schulz_factored: need left [N, m, r] and right [N, r, n], got {tuple(left.shape)} "
            f"and {tuple(right.shape)}"
        )
    r = left.shape[2]
    dtype = torch.promote_types(left.dtype, torch.float32)
    with torch.autocast(left.device.type, enabled=False):
        L, R = left.to(dtype), right.to(dtype)
        K = torch.bmm(L.mT, L)  # [N, r, r]
        G = torch.bmm(R, R.mT)  # [N, r, r]
        sq = (K * G).sum(dim=(1, 2))  # ||L R||_F^2 = trace(K G), G symmetric
        # Clamped: a zero update (a fully padded chunk) gets a zero gradient, not sqrt's infinite one;
        # its L is zero, so the result is zero either way, as in the dense path.
        norm = sq.clamp(min=1e-30).sqrt()
        C0 = torch.eye(r, dtype=dtype, device=left.device) / (norm + 1e-7)[:, None, None]
        if torch.is_grad_enabled() and (C0.requires_grad or K.requires_grad or G.requires_grad):
            # Recompute the r x r loop in backward: it is cheap, and keeping its ~25 intermediates per
            # update would hold most of a training step's memory (840 MB of 2.4 GB for `small` at 2k frames).
            C = checkpoint(_factor_iterations, C0, K, G, steps, use_reentrant=False)
        else:
            C = _factor_iterations(C0, K, G, steps)
        LC = torch.bmm(L, C)  # [N, m, r]
        if add_to is not None:  # in add_to's precision: a float32 state must not round through bf16
            out = torch.promote_types(add_to.dtype, left.dtype)
            return torch.baddbmm(add_to.to(out), LC.to(out), right.to(out))
    return torch.bmm(LC.to(left.dtype), right)
