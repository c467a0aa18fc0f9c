"""Scores of an adaptation protocol: WER/CER per condition with 95% intervals, paired relative changes, p-values.

Every condition is scored with :func:`modeling_lact_audio.recogniser.evaluation.score_split` (corpus-level
rates, percentile bootstrap intervals over utterances, the per-utterance counts kept so that every number
can be recomputed); a condition is compared with the baseline on the utterances both transcribed, by the
relative change of the corpus-level WER (:func:`relative_change_interval`) and the paired bootstrap p-value
(:func:`~modeling_lact_audio.recogniser.evaluation.paired_bootstrap_pvalue`).
"""

import numpy as np

from ..asr import normalize_for_scoring, rate_interval
from ..recogniser.evaluation import paired_bootstrap_pvalue, score_split
from .protocols import ProtocolResult

# Row metadata kept in results.json (the transcript text is not: the counts are what the rates need).
KEPT_ROW_FIELDS = ("stream", "position", "speaker", "condition", "snr_db", "domain", "speaker_label", "speaker_turn")


def relative_change_interval(
    errors_a, errors_b, totals, samples: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """Relative change of system b's corpus-level error rate against system a's, with a 95% paired interval.

    ``rel = (sum(errors_b) / sum(totals)) / (sum(errors_a) / sum(totals)) - 1``, i.e. ``sum(errors_b) /
    sum(errors_a) - 1`` on the same utterances: -0.15 means b makes 15% fewer errors than a. The interval
    is the 2.5th and 97.5th percentile of ``rel`` over ``samples`` resamples of the N utterances with
    replacement (the same resampling as ``paired_bootstrap_pvalue``: ``rng.integers(0, N, (samples, N))``
    with ``np.random.default_rng(seed)``); resamples in which a makes no error are left out.

    Args:
        errors_a, errors_b: ``[N]`` edit counts of the two systems on the same N utterances.
        totals: ``[N]`` reference lengths.
        samples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``(rel, low, high)`` as floats; NaNs when there is no utterance or a makes no error at all.
    """
    errors_a, errors_b, totals = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, totals))
    if not errors_a.shape == errors_b.shape == totals.shape or errors_a.ndim != 1:
        raise ValueError(
            f"errors_a, errors_b and totals must be [N] arrays of one length, got shapes "
            f"{errors_a.shape}, {errors_b.shape}, {totals.shape}"
        )
    n = len(totals)
    if n == 0 or errors_a.sum() == 0:
        return float("nan"), float("nan"), float("nan")

    def rel_of(e_a, e_b, t):
        words = np.maximum(t.sum(-1), 1)
        rate_a, rate_b = e_a.sum(-1) / words, e_b.sum(-1) / words
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(rate_a > 0, rate_b / rate_a - 1, np.nan)

    point = float(rel_of(errors_a, errors_b, totals))
    picks = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    resampled = np.concatenate(
        [rel_of(errors_a[p], errors_b[p], totals[p]) for p in np.array_split(picks, max(1, samples * n // 2_000_000))]
    )
    low, high = np.nanpercentile(resampled, [2.5, 97.5])
    return point, float(low), float(high)


def paired_comparison(reference: dict, condition: dict, reference_seconds: dict, condition_seconds: dict) -> dict:
    """``condition`` against ``reference`` on the utterances both scored.

    Args:
        reference, condition: scored conditions (:func:`score_protocol`'s entries: ``uids`` and ``counts``).
        reference_seconds, condition_seconds: uid -> seconds of each (its forwards plus its context).

    Returns:
        ``{"utterances", "reference_wer", "wer", "relative_change", "relative_change_ci", "p_value",
        "extra_seconds_per_utterance"}``: WERs on the shared utterances, the relative change of the WER
        (:func:`relative_change_interval`), the paired bootstrap p-value and the mean extra seconds per
        utterance of the condition over the reference.
    """
    ref_index = {u: i for i, u in enumerate(reference["uids"])}
    cond_rows = [i for i, u in enumerate(condition["uids"]) if u in ref_index]
    ref_rows = [ref_index[condition["uids"][i]] for i in cond_rows]
    e_r = np.asarray(reference["counts"]["word_errors"], dtype=np.int64)[ref_rows]
    e_c = np.asarray(condition["counts"]["word_errors"], dtype=np.int64)[cond_rows]
    words = np.asarray(condition["counts"]["words"], dtype=np.int64)[cond_rows]
    rel, low, high = relative_change_interval(e_r, e_c, words)
    uids = [condition["uids"][i] for i in cond_rows]
    extra = [condition_seconds[u] - reference_seconds[u] for u in uids]
    return {
        "utterances": len(uids),
        "reference_wer": float(e_r.sum() / max(words.sum(), 1)),
        "wer": float(e_c.sum() / max(words.sum(), 1)),
        "relative_change": rel,
        "relative_change_ci": [low, high],
        "p_value": paired_bootstrap_pvalue(e_r, e_c, words) if uids else float("nan"),
        "extra_seconds_per_utterance": float(np.mean(extra)) if extra else float("nan"),
    }


def position_curve(scored: dict, positions: dict) -> list[dict]:
    """WER by position of one scored condition: ``[{"position", "utterances", "wer", "wer_ci"}]``, ascending.

    ``positions``: uid -> position (``ProtocolResult.rows[uid]["position"]``).
    """
    errors, words = np.asarray(scored["counts"]["word_errors"]), np.asarray(scored["counts"]["words"])
    where = np.asarray([positions[u] for u in scored["uids"]])
    curve = []
    for p in sorted(set(where.tolist())):
        pick = where == p
        curve.append(
            {
                "position": int(p),
                "utterances": int(pick.sum()),
                "wer": float(errors[pick].sum() / max(words[pick].sum(), 1)),
                "wer_ci": list(rate_interval(errors[pick], words[pick])),
            }
        )
    return curve


def score_protocol(result: ProtocolResult, decode) -> dict:
    """Score every condition of a protocol and compare it with the baseline (and the extra comparisons).

    Args:
        result: a protocol's :class:`~modeling_lact_audio.adaptation.protocols.ProtocolResult`.
        decode: ``decode(log_probs: list[Tensor [T'_i, V]]) -> list[str]`` (greedy or LM beam search).

    Returns:
        a JSON-ready dict: ``baseline``; ``conditions[name]``: :func:`score_split`'s entry (``wer``, ``wer_ci``,
        ``cer``, ``cer_ci``, ``utterances``, ``counts``) with ``uids`` (the order of the counts),
        ``seconds_per_utterance``, ``context_seconds_per_utterance`` and, except for the baseline,
        ``vs_baseline`` (:func:`paired_comparison`); ``comparisons``: ``[{"reference", "condition", ...}]``;
        ``positions[name]``: :func:`position_curve`; ``rows``: uid -> kept row metadata; ``info``.
    """
    if result.baseline not in result.conditions:
        raise ValueError(f"the baseline {result.baseline!r} is none of the conditions {list(result.conditions)}")
    conditions, seconds = {}, {}
    for name, done in result.conditions.items():
        if not done:
            continue
        uids = list(done)
        texts = decode([done[u].log_probs for u in uids])
        references = [normalize_for_scoring(result.rows[u]["text"]) for u in uids]
        entry = score_split(references, [normalize_for_scoring(t) for t in texts])
        entry.update(
            uids=uids,
            seconds_per_utterance=float(np.mean([done[u].seconds for u in uids])),
            context_seconds_per_utterance=float(np.mean([done[u].context_seconds for u in uids])),
        )
        conditions[name] = entry
        seconds[name] = {u: done[u].seconds + done[u].context_seconds for u in uids}
    base = conditions.get(result.baseline)
    comparisons = []
    if base is not None:
        for name, entry in conditions.items():
            if name != result.baseline:
                entry["vs_baseline"] = paired_comparison(base, entry, seconds[result.baseline], seconds[name])
        for reference, name in result.comparisons:
            if reference in conditions and name in conditions:
                paired = paired_comparison(conditions[reference], conditions[name], seconds[reference], seconds[name])
                comparisons.append({"reference": reference, "condition": name, **paired})
    positions = {u: row["position"] for u, row in result.rows.items()}
    return {
        "baseline": result.baseline,
        "conditions": conditions,
        "comparisons": comparisons,
        "positions": {name: position_curve(entry, positions) for name, entry in conditions.items()},
        "rows": {u: {k: row[k] for k in KEPT_ROW_FIELDS if k in row} for u, row in result.rows.items()},
        "info": result.info,
    }
