"""What every kernel launch of the LaCT op decides from its inputs: dtypes, block sizes, precision.

Kernels load any floating dtype and cast it in registers to ``COMPUTE`` (the ``tl.dot`` operand dtype),
accumulating in ``ACC``:

- float64 inputs: float64 operands and accumulators (for tight tests; slow on GPUs);
- bf16 / fp16 results on CUDA: bf16 / fp16 operands, float32 accumulators;
- otherwise (float32, and every case under ``TRITON_INTERPRET=1``, whose numpy ``tl.dot`` mishandles
  bf16): float32 operands, float32 accumulators, with TF32 products on CUDA exactly when PyTorch's
  float32 matmuls use them (``torch.get_float32_matmul_precision() != "highest"``).
"""

import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

_TL = {torch.float64: tl.float64, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


# Triton reads TRITON_INTERPRET when @triton.jit decorates a kernel, i.e. when this package is imported.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


def result_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype of a kernel's result: autocast's inside autocast (like a matmul), else the promoted input dtype."""
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


class Precision(NamedTuple):
    """Constexpr arguments of the kernels (``tl.dot`` operand dtype, accumulator dtype, ``input_precision``)
    and whether the products run on tensor cores (or in the interpreter): 64-wide tiles then; FMA products
    (float32 "ieee", float64) hold their operands in registers and take 32-wide ones (no spills on sm_90)."""

    compute: tl.dtype
    acc: tl.dtype
    dot: str
    wide_tiles: bool


def precision(dtype: torch.dtype, device: torch.device) -> Precision:
    """The kernels' arithmetic for results in ``dtype`` on ``device`` (see the module docstring)."""
    compiled = device.type == "cuda" and not INTERPRETED
    if dtype == torch.float64:
        return Precision(tl.float64, tl.float64, "ieee", not compiled)
    if dtype in (torch.bfloat16, torch.float16) and compiled:
        return Precision(_TL[dtype], tl.float32, "ieee", True)
    tf32 = compiled and torch.get_float32_matmul_precision() != "highest"
    return Precision(tl.float32, tl.float32, "tf32" if tf32 else "ieee", tf32 or not compiled)


def block(size: int, cap: int) -> int:
    """A power-of-two tile edge covering ``size`` up to ``cap``, at least 16 (``tl.dot``'s smallest)."""
    return max(16, min(cap, triton.next_power_of_2(size)))


def strides(t: Tensor) -> tuple:
    """``t.stride()`` of a 3-d tensor (kernels index every operand through its strides: views need no copies)."""
    if t.dim() != 3:
        raise ValueError(f"LaCT Triton kernels take 3-d [BH, rows, cols] operands, got {tuple(t.shape)}")
    return t.stride()
