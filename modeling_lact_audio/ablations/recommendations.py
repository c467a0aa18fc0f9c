"""The recommendation table: which measured configuration for which budget, input length and streaming need.

How it is derived (also written into the table's ``how`` field):

- every variant of the given studies with at least one finished run is a *candidate*; its ``cost`` is the
  mean over seeds of the head's inference seconds per second of audio on the test splits (one thread, the
  machine recorded in ``machine``), its ``error`` the mean over seeds of the study's metric (e.g. test CER);
- ``error_by_length[i]``: the corpus-level error rate (the metric's kind, WER or CER) of the test utterances
  whose duration lies in ``length_bins[i]``, every seed's counts pooled (None: no utterance that long);
- a candidate streams when its resolved LaCT order and attention pattern are both not bidirectional;
- budget tiers: ``low`` and ``medium`` are the costs a third and two thirds of the way up the candidates'
  sorted costs, ``high`` is unlimited;
- ``presets.recommend`` keeps the candidates within the budget (and streaming if asked) and returns the one
  with the lowest error in the input's length bin (ties: the cheaper one). ``rows`` lists its answer for
  every tier, bin and streaming need, as the report prints it.
"""

import math
from pathlib import Path

import numpy as np

from ..presets import recommend
from .grid import Grid
from .runner import load_results, machine, write_json_atomic

LENGTH_BINS = ((0.0, 5.0), (5.0, 15.0), (15.0, None))


def _bin_rates(results: list[dict], kind: str, test_splits: list[str]) -> list[float | None]:
    key = "word" if kind == "wer" else "char"
    errors, totals = np.zeros(len(LENGTH_BINS)), np.zeros(len(LENGTH_BINS))
    for result in results:
        for split in test_splits:
            entry = result["splits"][split]
            seconds = np.asarray(entry["seconds"])
            e = np.asarray(entry["counts"][f"{key}_errors"])
            t = np.asarray(entry["counts"]["words" if key == "word" else "chars"])
            for i, (low, high) in enumerate(LENGTH_BINS):
                pick = (seconds >= low) & (seconds < (math.inf if high is None else high))
                errors[i] += e[pick].sum()
                totals[i] += t[pick].sum()
    return [float(errors[i] / totals[i]) if totals[i] > 0 else None for i in range(len(LENGTH_BINS))]


def candidates(grid: Grid, output: str, summary: dict) -> list[dict]:
    """The candidates of one study (see the module docstring)."""
    results = load_results(output)
    kind = grid.metric.rsplit("_", 1)[-1]
    out = []
    for variant in grid.variants:
        runs = [r for r in results.values() if r["spec"]["variant"] == variant.name]
        metrics = summary["variants"][variant.name]["metrics"]
        if not runs or grid.metric not in metrics:
            continue
        config = runs[0]["resolved_config"]
        streaming = variant.model != "bilstm" and "bidirectional" not in (
            config.get("lact_order"),
            config.get("attention_pattern"),
        )
        out.append(
            {
                "name": f"{grid.name}/{variant.name}",
                "component": variant.component,
                "model": variant.model,
                "config": config,
                "chunk_boundaries": (variant.boundaries or {}).get("mode", "fixed"),
                "streaming": streaming,
                "cost": metrics["inference_seconds_per_audio_second"]["mean"],
                "train_seconds": metrics["train_seconds"]["mean"],
                "peak_rss_mib": metrics["peak_rss_mib"]["mean"],
                "error": metrics[grid.metric]["mean"],
                "error_by_length": _bin_rates(runs, kind, grid.data["test_splits"]),
                "seeds": len(runs),
                "machine": runs[0]["machine"],
            }
        )
    return out


def build_table(studies: list[tuple[Grid, str, dict]], commands: list[str]) -> dict:
    """The table from ``(grid, output folder, summary)`` of each study; ``commands`` that produced them."""
    pool = [c for grid, output, summary in studies for c in candidates(grid, output, summary)]
    if not pool:
        raise ValueError("no finished run in the given studies: nothing to recommend from")
    metrics = {grid.metric for grid, _, _ in studies}
    costs = np.sort([c["cost"] for c in pool])
    table = {
        "metric": sorted(metrics)[0] if len(metrics) == 1 else " / ".join(sorted(metrics)),
        "cost": "inference seconds per audio second (head only, 1 thread)",
        "length_bins": [list(b) for b in LENGTH_BINS],
        "budgets": {
            "low": float(np.quantile(costs, 1 / 3)),
            "medium": float(np.quantile(costs, 2 / 3)),
            "high": None,
        },
        "candidates": pool,
        "studies": [grid.name for grid, _, _ in studies],
        "commands": commands,
        "machine": machine(),
        "how": __doc__.split("How it is derived (also written into the table's ``how`` field):")[1].strip(),
    }
    rows = []
    for budget in table["budgets"]:
        for low, high in LENGTH_BINS:
            for streaming in (False, True):
                seconds = low if high is None else (low + high) / 2
                try:
                    pick = recommend(budget, seconds, streaming, table=table)
                    rows.append({"budget": budget, "length": [low, high], "streaming": streaming, **pick})
                except ValueError as error:
                    rows.append({"budget": budget, "length": [low, high], "streaming": streaming, "none": str(error)})
    table["rows"] = rows
    return table


def write_table(table: dict, path: str | Path) -> None:
    """Write the table as JSON (atomically)."""
    write_json_atomic(Path(path), table)
