"""Residual vector quantisation with codebooks fitted by k-means (k-means++ seeding, Lloyd steps)."""

import torch


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword: ``x [N, D]``, ``codebook [C, D]`` -> ``[N]`` int64."""
    # ||x - c||^2 without the ||x||^2 term, which does not change the argmin.
    scores = codebook.pow(2).sum(1)[None] - 2 * x @ codebook.T
    return scores.argmin(1)


def kmeans(x: torch.Tensor, num_clusters: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means over ``x [N, D]`` float32; returns the centroids ``[num_clusters, D]``.

    k-means++ seeding, then ``iters`` Lloyd steps; a cluster that empties is re-seeded with the point
    farthest from its centroid, so every codeword stays in use. If ``N < num_clusters`` points repeat.
    """
    if len(x) < num_clusters:
        x = x[torch.randint(len(x), (num_clusters,), generator=generator)]
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    distances = (x - centroids[0]).pow(2).sum(1)
    for _ in range(1, num_clusters):
        probabilities = distances / distances.sum() if distances.sum() > 0 else torch.ones_like(distances)
        chosen = x[torch.multinomial(probabilities, 1, generator=generator)]
        centroids = torch.cat([centroids, chosen])
        distances = torch.minimum(distances, (x - chosen[0]).pow(2).sum(1))
    for _ in range(iters):
        assign = _nearest(x, centroids)
        counts = torch.bincount(assign, minlength=num_clusters).to(x)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            error = (x - centroids[assign]).pow(2).sum(1)
            centroids[empty] = x[error.topk(int(empty.sum())).indices]
    return centroids


class ResidualVectorQuantizer(torch.nn.Module):
    """K codebooks of C codewords over D-dimensional vectors, each coding the previous residual.

    ``encode(x [..., D] float32) -> codes [..., K] int64``; ``decode(codes) -> [..., D]`` is the sum
    of the chosen codewords (a prefix ``codes[..., :k]`` decodes at a lower bitrate).

    Args:
        num_codebooks: K.
        codebook_size: C.
        dim: D.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, dim: int):
        super().__init__()
        # A frozen parameter rather than a buffer: they are the weights (fitted by k-means, not by SGD).
        self.codebooks = torch.nn.Parameter(torch.zeros(num_codebooks, codebook_size, dim), requires_grad=False)

    def fit(self, x: torch.Tensor, iters: int = 20, seed: int = 0) -> "ResidualVectorQuantizer":
        """Fit every codebook by k-means on the residual left by the ones before; ``x [N, D]``."""
        generator = torch.Generator().manual_seed(seed)
        residual = x.float()
        for k in range(self.codebooks.shape[0]):
            codebook = kmeans(residual, self.codebooks.shape[1], iters, generator)
            self.codebooks.data[k] = codebook
            residual = residual - codebook[_nearest(residual, codebook)]
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., K]`` int64 of ``x [..., D]``."""
        residual = x.reshape(-1, x.shape[-1]).float()
        codes = []
        for codebook in self.codebooks:
            index = _nearest(residual, codebook)
            codes.append(index)
            residual = residual - codebook[index]
        return torch.stack(codes, -1).reshape(*x.shape[:-1], len(codes))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of codewords ``[..., D]`` for ``codes [..., k]`` int64 (the first ``k <= K`` codebooks)."""
        picked = [self.codebooks[k][codes[..., k]] for k in range(codes.shape[-1])]
        return torch.stack(picked).sum(0)
