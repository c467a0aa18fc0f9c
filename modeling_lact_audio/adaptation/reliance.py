"""How much a trained LaCT head relies on its fast-weight branch at all.

A carried state can only help if the model reads its fast weights: if the LaCT branch's output can be
scaled away with little loss, the sliding-window attention does the work and no state carried across
utterances can change much. :func:`branch_reliance` transcribes the same utterances with the LaCT branch's
output scaled by each factor (1 = the trained model, the baseline; 0 = the branch removed).
"""

import datasets
from tqdm.auto import tqdm

from ..recogniser.fast_weight_scales import scaled_lact_branch, scaled_lact_rates
from .protocols import ProtocolResult, Transcribed, _require_carry, row_table
from .streams import Stream, UtteranceReader, run_utterance

# the scale context managers live with the recogniser's training, which uses them too; importable from here
__all__ = ["branch_reliance", "condition_name", "scaled_lact_branch", "scaled_lact_rates"]


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
