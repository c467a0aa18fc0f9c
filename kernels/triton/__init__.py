"""Triton kernels for the LaCT op (installed as ``modeling_lact_audio.kernels.triton``).

The out-of-place steps of ``kernels.chunk`` as fused kernels, each a differentiable function with
the PyTorch step's contract (working layout ``W02 [BH, 2Dh, D]`` = w0 over w2, ``W1t [BH, Dh, D]``
= w1 transposed)::

    o = read_chunk(W02, W1t, q)                       # q [BH, n, D] -> o [BH, n, D]
    x02, y1 = chunk_gradient(W02, W1t, k, v, lr)      # k, v [BH, C, D], lr [BH, C, 3]
                                                      # -> x02 [BH, C, 2Dh], y1 [BH, C, Dh]
    W02, W1t = renormalise(W02, W1t, norm02, norm1t)  # norm02 [BH, 2Dh, 1], norm1t [BH, 1, D]

``lact_swiglu(..., backend="triton")`` runs its chunk loop with these (momentum, Muon and the
weight update stay in PyTorch). Any D and Dh (tiles are padded with masks), any strides; float32,
float64, or bf16/fp16 (bf16 products with fp32 accumulation on CUDA, see ``launch``). Results come
in the autocast dtype under autocast, else in the inputs' promoted dtype. Backwards: ``read_chunk``
recomputes its gate with a Triton kernel and runs its three gradient GEMMs with ``torch.bmm``;
``chunk_gradient`` and ``renormalise`` recompute the PyTorch expression and differentiate it.
No double backward.

Triton decides at import whether kernels run compiled (CUDA) or in its numpy interpreter: set
``TRITON_INTERPRET=1`` before importing this package to run them on CPU tensors (slowly; for tests).
"""

from .gradient import chunk_gradient
from .launch import INTERPRETED
from .read import read_chunk
from .renorm import renormalise

__all__ = ["INTERPRETED", "chunk_gradient", "read_chunk", "renormalise"]
