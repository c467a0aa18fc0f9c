"""Context managers that scale a LaCT model's fast-weight branch or its per-token rates for a block of code.

The adaptation study uses them to ask whether a trained head reads its fast weights at all
(``scaled_lact_branch``) and to freeze the fast weights (``scaled_lact_rates(model, 0)``); the recogniser's
training uses the frozen read for its carried-state loss (``training.session_loss``).
"""

import math
from contextlib import contextmanager

from ..mixer_lact_audio import LaCTAudioMixer


@contextmanager
def scaled_lact_branch(model, scale: float):
    """Within the block, every ``LaCTAudioMixer`` of ``model`` multiplies its LaCT branch's output by ``scale``
    (restored afterwards, also on error)."""
    mixers = [m for m in model.modules() if isinstance(m, LaCTAudioMixer)]
    saved = [m.lact_output_scale for m in mixers]
    try:
        for m in mixers:
            m.lact_output_scale = float(scale)
        yield model
    finally:
        for m, s in zip(mixers, saved):
            m.lact_output_scale = s


@contextmanager
def scaled_lact_rates(model, scale: float):
    """Within the block every ``LaCTAudioMixer`` of ``model`` multiplies its per-token fast-weight rates by
    ``scale`` (>= 0; 0 freezes the fast weights at their initial values); restored afterwards, also on error.

    With Muon (``muon_steps > 0``) any factor > 0 changes nothing: Newton-Schulz divides each chunk's update by
    its norm before orthogonalising it, so only the rates' relative weights within a chunk count and the step's
    size is fixed. Without Muon (or with Adam's rule) the factor scales the steps.

    Raises:
        ValueError: ``scale`` is negative or not finite.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"the rate scale must be a finite number >= 0, got {scale}")
    mixers = [m for m in model.modules() if isinstance(m, LaCTAudioMixer)]
    saved = [m.lact_rate_scale for m in mixers]
    try:
        for m in mixers:
            m.lact_rate_scale = scale
        yield model
    finally:
        for m, s in zip(mixers, saved):
            m.lact_rate_scale = s
