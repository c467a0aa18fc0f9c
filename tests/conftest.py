"""Shared pytest setup: deterministic seeds, offline hub, a bounded thread count on 2-core CI."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Without CUDA, the Triton kernels (tests/ops/test_lact_triton.py) run in Triton's numpy interpreter. Triton
# reads TRITON_INTERPRET when it decorates a function with @triton.jit, its own library functions (tl.zeros, ...)
# included, i.e. when triton is first imported: set it here, before any test module (or torchao, or a compiler
# import) can import triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
