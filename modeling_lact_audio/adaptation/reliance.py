"""How much a trained LaCT head relies on its fast-weight branch at all.

A carried state can only help if the model reads its fast weights: if the LaCT branch's output can be
scaled away with little loss, the sliding-window attention does the work and no state carried across
utterances can change much. :func:`branch_reliance` transcribes the same utterances with the LaCT branch's
output scaled by each factor (1 = the trained model, the baseline; 0 = the branch removed).
"""

import math
from contextlib import contextmanager

import datasets
from tqdm.auto import tqdm

from ..mixer_lact_audio import LaCTAudioMixer
from .protocols import ProtocolResult, Transcribed, _require_carry, row_table
from .streams import Stream, UtteranceReader, run_utterance


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


def condition_name(scale: float) -> str:
    """``"lact branch x<scale>"``; ``x1`` is the trained model."""
    return f"lact branch x{scale:g}"


def branch_reliance(head, dataset: datasets.Dataset, streams: list[Stream], scales=(1.0, 0.5, 0.0)) -> ProtocolResult:
    """Transcribe every utterance of ``streams`` from a reset state with the LaCT branch scaled by each factor.

    Args:
        head: a recogniser head with LaCT fast weights (``CachedStatesCTC``, mixer ``"lact"``), eval mode.
        dataset: the cached split; streams: which rows (their order does not matter: no state is carried).
        scales: factors of the branch's output; must include 1.0 (the baseline).

    Returns:
        a :class:`ProtocolResult` with conditions ``"lact branch x<scale>"`` and baseline ``"lact branch x1"``.
    """
    _require_carry(head, "branch_reliance")
    scales = sorted({float(s) for s in scales}, reverse=True)
    if 1.0 not in scales:
        raise ValueError(f"scales must include 1.0 (the trained model, the baseline), got {scales}")
    reader, table = UtteranceReader(dataset), row_table(dataset)
    result = ProtocolResult(
        conditions={condition_name(s): {} for s in scales}, baseline=condition_name(1.0), info={"scales": scales}
    )
    for stream in tqdm(streams, desc="lact branch reliance"):
        for n, row in enumerate(stream.rows):
            uid = table[row]["uid"]
            result.rows[uid] = {**table[row], "stream": stream.name, "position": n}
            for scale in scales:
                with scaled_lact_branch(head, scale):
                    log_probs, _, seconds = run_utterance(head, reader[row], None)
                result.conditions[condition_name(scale)][uid] = Transcribed(log_probs, seconds)
    return result
