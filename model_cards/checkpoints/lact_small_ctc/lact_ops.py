"""Where the models get the LaCT op from.

The installed ``modeling_lact_audio.kernels`` package (reference-tested, and the place for GPU kernels)
when lact-audio is installed; the generated flat copy ``lact_kernels.py`` in a Hub folder loaded with
``trust_remote_code`` where it is not.
"""

try:
    from modeling_lact_audio.kernels import FastWeightState, lact_swiglu
except ImportError:
    from .lact_kernels import FastWeightState, lact_swiglu

__all__ = ["FastWeightState", "lact_swiglu"]
