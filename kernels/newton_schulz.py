"""Newton-Schulz orthogonalisation, the update rule of Muon."""

import torch
from torch import Tensor

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
