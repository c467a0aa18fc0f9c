"""The LaCT SwiGLU fast-weight op (installed as ``modeling_lact_audio.kernels``).

Public API, one contract for every implementation::

    state = FastWeightState.from_weights(w0, w1, w2)   # w0, w2: [B,H,Dh,D]; w1: [B,H,D,Dh]
    o, state = lact_swiglu(q, k, v, lr, state, *, chunk_size, order="apply_update",
                           muon_steps=5, weight_norm=True, momentum=None, mask=None, backend="auto",
                           update_rule="sgd", chunk_ends=None)   # update_rule: "sgd" | "adam"
    lact_swiglu_reference(...)   # same signature without backend, plain per-chunk loop, the test oracle
    newton_schulz(x, steps)
    with check_values(): ...     # also check input values (NaN/Inf, rate ranges); each check syncs the host

``lact_swiglu`` is the fast chunked implementation (``chunk.py``); ``naive.py`` is the readable
reference. ``backend`` picks the steps of its chunk loop: ``"torch"`` (PyTorch, in place in eager
inference), ``"triton"`` (fused Triton kernels of ``kernels/triton`` for the read, the chunk gradient
and the renormalisation: CUDA, or CPU tensors under ``TRITON_INTERPRET=1``), or ``"auto"`` (Triton
for CUDA inputs in eager mode where triton imports, else PyTorch). Importing this package never
imports the Triton kernels; the op imports them on first use.
"""

from .chunk import lact_swiglu
from .naive import lact_swiglu_reference
from .newton_schulz import newton_schulz
from .state import FastWeightState, PendingChunk
from .validation import ORDERS, UPDATE_RULES, check_values, value_checks_enabled

__all__ = [
    "FastWeightState",
    "PendingChunk",
    "ORDERS",
    "UPDATE_RULES",
    "lact_swiglu",
    "lact_swiglu_reference",
    "check_values",
    "newton_schulz",
    "value_checks_enabled",
]
