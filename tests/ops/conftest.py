"""Op tests: without CUDA, Triton kernels run in Triton's numpy interpreter.

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates a kernel, i.e. when
``modeling_lact_audio.kernels.triton`` is first imported; this conftest loads before any test module
of this folder, and nothing imports the Triton kernels earlier (the op imports them on first use).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
