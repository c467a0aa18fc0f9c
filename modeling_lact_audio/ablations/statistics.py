"""Statistics of a study: each variant against the reference, over seeds and over utterances.

- Over seeds (the bar: "matters" when the interval excludes 0): the per-seed difference ``d_s = x_variant,s -
  x_reference,s`` on the seeds both finished; its mean with a 95% Student-t interval ``mean +- t_{0.975, n-1}
  * sd / sqrt(n)`` and the paired t-test p-value (``scipy.stats.ttest_rel``).
- Over utterances, seeds pooled: for error rates, each utterance's errors summed over the shared seeds for
  both systems; the difference of corpus-level rates with a 95% paired percentile bootstrap over utterances
  (``scipy.stats.bootstrap``) and the paired bootstrap p-value (``recogniser.evaluation``). It shows how much
  of the seed interval is the test set's noise; the verdict stays the seed interval's.

A generation study's runs (``result["task"] == "lm"``) are measured in NLL per code (nats; lower is better):
there the "utterances" of the pooled bootstrap are the held-out windows, each with its summed NLL and its code
count in place of edit counts and reference lengths, so the pooled difference is that of corpus-level NLL.
"""

import math

import numpy as np
from scipy import stats

from ..recogniser.evaluation import paired_bootstrap_pvalue

COST_METRICS = (
    "train_seconds",
    "inference_seconds_per_audio_second",
    "peak_rss_mib",
    "peak_rss_increase_mib",
    "parameters",
)
# lower is better for every metric here (error rates, adaptation's relative WER change, costs)


def seed_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` ``[n]`` and its Student-t interval; NaN bounds for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, float(mean - half), float(mean + half)


def paired_seed_difference(variant, reference, confidence: float = 0.95) -> dict:
    """``variant - reference`` over paired seeds: ``{"diff", "ci", "p_value", "n_seeds", "relative", "matters"}``.

    ``relative`` is ``diff / mean(reference)``; ``matters`` is whether the interval excludes 0 (None with fewer
    than 2 seeds). Identical differences on every seed give a zero-width interval and p = 0 (or 1 for all 0).
    """
    v, r = np.asarray(variant, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    d = v - r
    mean, low, high = seed_interval(d, confidence)
    p = math.nan
    if len(d) >= 2:
        if np.allclose(d, d[0]):
            p = 1.0 if d[0] == 0 else 0.0
        else:
            p = float(stats.ttest_rel(v, r).pvalue)
    ref_mean = float(r.mean()) if len(r) else math.nan
    return {
        "diff": mean,
        "ci": [low, high],
        "p_value": p,
        "n_seeds": int(len(d)),
        "relative": mean / ref_mean if ref_mean not in (0.0,) and not math.isnan(ref_mean) else math.nan,
        "matters": None if math.isnan(low) else bool(low > 0 or high < 0),
    }


def pooled_bootstrap(errors_v, errors_r, totals, samples: int = 2000, seed: int = 0) -> dict:
    """Difference of corpus-level error rates, utterances resampled, seeds pooled.

    Args:
        errors_v, errors_r: ``[S, N]`` edit counts of the variant and the reference on the same N utterances,
            one row per shared seed.
        totals: ``[N]`` reference lengths.

    Returns:
        ``{"diff", "ci", "p_value", "utterances"}``: ``diff = (sum E_v - sum E_r) / (S * sum totals)``.
    """
    ev, er = np.asarray(errors_v, dtype=np.float64).sum(0), np.asarray(errors_r, dtype=np.float64).sum(0)
    t = np.asarray(totals, dtype=np.float64) * np.asarray(errors_v).shape[0]
    if len(t) == 0 or t.sum() == 0:
        return {"diff": math.nan, "ci": [math.nan, math.nan], "p_value": math.nan, "utterances": len(t)}
    diff = float((ev.sum() - er.sum()) / t.sum())
    if len(t) < 2:
        return {"diff": diff, "ci": [diff, diff], "p_value": math.nan, "utterances": len(t)}
    result = stats.bootstrap(
        (ev, er, t),
        lambda a, b, c, axis=-1: (a.sum(axis) - b.sum(axis)) / np.maximum(c.sum(axis), 1),
        paired=True,
        vectorized=True,
        n_resamples=samples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return {"diff": diff, "ci": ci, "p_value": paired_bootstrap_pvalue(er, ev, t), "utterances": len(t)}


def _nll_arrays(result: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(nll sums [N, bins], code counts [N, bins])`` of an LM run's held-out windows."""
    nll = result["nll"]
    return np.asarray(nll["sums"], dtype=np.float64), np.asarray(nll["tokens"], dtype=np.float64)


def _lm_window_counts(result: dict, metric: str):
    """``(nll [N], codes [N])`` per held-out window behind ``test_nll`` / ``test_nll_long``, else None."""
    sums, tokens = _nll_arrays(result)
    if metric == "test_nll":
        return sums.sum(1), tokens.sum(1)
    if metric == "test_nll_long":
        first = result["long_from"] // result["bin_frames"]
        return sums[:, first:].sum(1), tokens[:, first:].sum(1)
    return None


def nll_by_position(result: dict) -> np.ndarray:
    """An LM run's held-out NLL per code in each bin of target positions ``[bins]`` (windows pooled)."""
    sums, tokens = _nll_arrays(result)
    return sums.sum(0) / np.maximum(tokens.sum(0), 1)


def lm_metrics(result: dict) -> dict:
    """The scalar metrics of an LM run: ``test_nll`` (all positions), ``test_nll_long`` (targets at positions
    >= ``long_from``), ``test_nll_last_minus_first`` (negative: the longer context helps), plus the costs."""
    out = {}
    for metric in ("test_nll", "test_nll_long"):
        nll, codes = _lm_window_counts(result, metric)
        out[metric] = float(nll.sum() / max(codes.sum(), 1))
    curve = nll_by_position(result)
    out["test_nll_last_minus_first"] = float(curve[-1] - curve[0])
    for name in COST_METRICS:
        out[name] = result[name]
    return out


def position_curves(results: dict, variants: list[str]) -> dict:
    """Per variant of an LM study, its NLL by position over seeds: ``{name: {"bin_starts" [bins], "seeds",
    "mean" [bins], "ci" [[low, high]] * bins}}`` (Student-t over seeds, as :func:`seed_interval`)."""
    out = {}
    for name in variants:
        runs = sorted((r for r in results.values() if r["spec"]["variant"] == name), key=lambda r: r["spec"]["seed"])
        if not runs:
            continue
        curves = np.stack([nll_by_position(r) for r in runs])  # [seeds, bins]
        intervals = [seed_interval(curves[:, i]) for i in range(curves.shape[1])]
        out[name] = {
            "bin_starts": [i * runs[0]["bin_frames"] for i in range(curves.shape[1])],
            "seeds": [r["spec"]["seed"] for r in runs],
            "mean": [m for m, _, _ in intervals],
            "ci": [[low, high] for _, low, high in intervals],
        }
    return out


def _rate(entries: list[dict], kind: str) -> float:
    errors = sum(sum(e["counts"][f"{kind}_errors"]) for e in entries)
    totals = sum(sum(e["counts"]["words" if kind == "word" else "chars"]) for e in entries)
    return errors / max(totals, 1)


def run_metrics(result: dict, test_splits: list[str]) -> dict:
    """Every scalar metric of one run's result (lower is better for all)."""
    if result.get("task") == "lm":
        return lm_metrics(result)
    out = {}
    for split, entry in result["splits"].items():
        out[f"{split}_wer"], out[f"{split}_cer"] = entry["wer"], entry["cer"]
    tests = [result["splits"][s] for s in test_splits if s in result["splits"]]
    if tests:
        out["test_wer"], out["test_cer"] = _rate(tests, "word"), _rate(tests, "char")
    if result.get("adaptation"):
        out["adaptation_gain"] = result["adaptation"]["relative_change"]
    for name in COST_METRICS:
        out[name] = result[name]
    return out


def utterance_counts(result: dict, metric: str, test_splits: list[str]):
    """``(errors [N], totals [N])`` behind an error-rate metric of one run (an LM run: NLL sums and code counts
    per held-out window), or None for other metrics."""
    if result.get("task") == "lm":
        return _lm_window_counts(result, metric)
    kind = metric.rsplit("_", 1)[-1]
    if kind not in ("wer", "cer"):
        return None
    split = metric[: -len(kind) - 1]
    entries = [result["splits"][s] for s in test_splits] if split == "test" else [result["splits"].get(split)]
    if any(e is None for e in entries):
        return None
    key = "word" if kind == "wer" else "char"
    errors = np.concatenate([np.asarray(e["counts"][f"{key}_errors"]) for e in entries])
    totals = np.concatenate([np.asarray(e["counts"]["words" if key == "word" else "chars"]) for e in entries])
    return errors, totals


def summarise(results: dict, reference: str, variants: list[dict], test_splits: list[str]) -> dict:
    """Per variant: each metric's seed values, mean and interval; per non-reference variant: the differences.

    Args:
        results: run id -> result (``runner.load_results``).
        reference: the reference variant's name.
        variants: ``[{"name", "component"}]`` in grid order.
        test_splits: the splits pooled into ``test_wer`` / ``test_cer``.

    Returns:
        ``{"variants": {name: {"component", "seeds", "metrics": {m: {"values", "mean", "ci"}}}},
        "comparisons": {name: {m: paired_seed_difference + {"pooled": pooled_bootstrap or None}}}}``.
    """
    by_variant = {v["name"]: {} for v in variants}
    for result in results.values():
        name = result["spec"]["variant"]
        if name in by_variant:
            by_variant[name][result["spec"]["seed"]] = result
    summary = {"variants": {}, "comparisons": {}}
    metrics_of = {n: {s: run_metrics(r, test_splits) for s, r in runs.items()} for n, runs in by_variant.items()}
    for v in variants:
        name, seeds = v["name"], sorted(by_variant[v["name"]])
        metrics = {}
        for m in sorted({k for s in seeds for k in metrics_of[name][s]}):
            values = [metrics_of[name][s][m] for s in seeds if metrics_of[name][s].get(m) is not None]
            mean, low, high = seed_interval(values)
            metrics[m] = {"values": values, "mean": mean, "ci": [low, high]}
        summary["variants"][name] = {"component": v["component"], "seeds": seeds, "metrics": metrics}
    ref_runs = by_variant.get(reference, {})
    for v in variants:
        name = v["name"]
        if name == reference:
            continue
        shared = sorted(set(by_variant[name]) & set(ref_runs))
        comparison = {}
        for m in summary["variants"][name]["metrics"]:
            pairs = [
                (metrics_of[name][s].get(m), metrics_of[reference][s].get(m))
                for s in shared
                if metrics_of[name][s].get(m) is not None and metrics_of[reference][s].get(m) is not None
            ]
            if not pairs:
                continue
            entry = paired_seed_difference([a for a, _ in pairs], [b for _, b in pairs])
            counts = [
                (utterance_counts(by_variant[name][s], m, test_splits), utterance_counts(ref_runs[s], m, test_splits))
                for s in shared
            ]
            entry["pooled"] = None
            if counts and all(a is not None and b is not None for a, b in counts):
                entry["pooled"] = pooled_bootstrap(
                    np.stack([a[0] for a, _ in counts]), np.stack([b[0] for _, b in counts]), counts[0][1][1]
                )
            comparison[m] = entry
        summary["comparisons"][name] = comparison
    return summary
