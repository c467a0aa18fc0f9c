"""A study's outputs, rendered from its run results only: ``summary.json``, ``REPORT.md``, the plots and the
study's own recommendation table (``recommendations.json``).

A generation study (``task: lm``) reports NLL per code in nats instead of error rates in percentage points,
adds the NLL-by-position curves (``nll_by_position.png``, ``summary["nll_by_position"]``) and writes no
recommendation table (that table picks recognisers)."""

import math
from pathlib import Path

from .grid import Grid
from .recommendations import build_table, write_table
from .runner import load_results, write_json_atomic
from .statistics import position_curves, summarise

COST_LABELS = {
    "inference_seconds_per_audio_second": "inference s per audio s",
    "train_seconds": "training s",
    "peak_rss_mib": "peak RSS (MiB)",
}


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _pct(x) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.2f}"


def _nll(x) -> str:
    return "n/a" if math.isnan(x) else f"{x:.4f}"


def _is_rate(metric: str) -> bool:
    return metric.endswith(("_wer", "_cer"))


def _diff(entry: dict, metric: str) -> str:
    """A difference with its interval: percentage points for rates, plain numbers otherwise."""
    if _is_rate(metric) or metric == "adaptation_gain":
        return f"{_pct(entry['diff'])} [{_pct(entry['ci'][0])}, {_pct(entry['ci'][1])}]"
    return f"{_fmt(entry['diff'])} [{_fmt(entry['ci'][0])}, {_fmt(entry['ci'][1])}]"


def _verdict(entry: dict) -> str:
    return {None: "n/a (< 2 seeds)", True: "**yes**", False: "no"}[entry["matters"]]


def render_report(grid: Grid, summary: dict, results: dict, command: str, table: dict | None) -> str:
    """REPORT.md of a study."""
    metric, ref = grid.metric, grid.reference
    total, done = len(grid.runs()), len(results)
    if grid.task == "lm":
        units = "nats per code; differences in nats"
        data_line = _lm_data_line(grid, results)
        legend = (
            "Mean over seeds [95% Student-t interval]; NLL in nats per code (all K codebooks), "
            "`test_nll_last_minus_first` = the last position bin's NLL minus the first's (negative: context helps)."
        )
        pooled_what = "held-out windows"
    else:
        units = "differences in percentage points"
        data_line = (
            f"Data: cache `{grid.data['cache']}`, train rows {grid.data['train_rows']}, "
            f"validation rows {grid.data['validation_rows']}, test splits {grid.data['test_splits']} "
            f"({grid.data['test_rows']} rows each), adaptation {grid.data['adaptation']}."
        )
        legend = (
            "Mean over seeds [95% Student-t interval]; rates in %, `adaptation_gain` = relative WER change at "
            f"k={grid.data['adaptation']['k'] if grid.data['adaptation'] else '-'} carried vs reset (negative helps)."
        )
        pooled_what = "utterances"
    lines = [
        f"# Ablation study `{grid.name}`",
        "",
        grid.description.strip(),
        "",
        "Produced by:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Grid `{grid.path}`; task {grid.task}; {done} of {total} runs finished; seeds {grid.seeds}; "
        f"reference `{ref}`; headline metric `{metric}` (lower is better; {units}).",
        f"Budget (every run): {grid.budget}. {data_line}",
        "",
    ]
    if len(grid.seeds) < 3:
        lines += [f"**Fewer than 3 seeds ({len(grid.seeds)}): the intervals are wide and indicative only.**", ""]
    if done < total:
        lines += [f"**{total - done} runs are missing: the numbers below cover the finished runs only.**", ""]
    lines += [
        "## Does each component matter?",
        "",
        f"Difference to `{ref}` in `{metric}` (variant minus reference): mean over paired seeds with a 95% "
        "Student-t interval and the paired t-test p; *matters* = the seed interval excludes 0. The pooled column "
        f"resamples {pooled_what} (all shared seeds pooled): the test set's own noise.",
        "",
        "| component | variant | seeds | difference [95% CI] | relative | p (seeds) | pooled difference [95% CI] | "
        "p (pooled) | matters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in grid.variants:
        if v.name == ref:
            continue
        entry = summary["comparisons"].get(v.name, {}).get(metric)
        if entry is None:
            lines.append(f"| {v.component} | `{v.name}` | 0 | not run yet | | | | | |")
            continue
        pooled = entry["pooled"]
        pooled_text = "" if pooled is None else _diff(pooled, metric)
        pooled_p = "" if pooled is None else _fmt(pooled["p_value"], 2)
        lines.append(
            f"| {v.component} | `{v.name}` | {entry['n_seeds']} | {_diff(entry, metric)} | "
            f"{_pct(entry['relative'])}% | {_fmt(entry['p_value'], 2)} | {pooled_text} | {pooled_p} | "
            f"{_verdict(entry)} |"
        )
    lines += ["", "## Every variant, every metric", ""]
    shown = [m for m in _metric_order(summary) if m != "parameters"]
    lines += [
        legend,
        "",
        "| variant | parameters | " + " | ".join(shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for v in grid.variants:
        metrics = summary["variants"][v.name]["metrics"]
        cells = []
        for m in shown:
            e = metrics.get(m)
            if e is None:
                cells.append("")
            elif _is_rate(m) or m == "adaptation_gain":
                cells.append(f"{100 * e['mean']:.2f} [{_pct(e['ci'][0])}, {_pct(e['ci'][1])}]".replace("+", ""))
            elif m.startswith("test_nll"):
                cells.append(f"{_nll(e['mean'])} [{_nll(e['ci'][0])}, {_nll(e['ci'][1])}]")
            else:
                cells.append(f"{_fmt(e['mean'])} [{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]")
        params = metrics.get("parameters", {}).get("mean")
        lines.append(f"| `{v.name}` | {_fmt(params, 4)} | " + " | ".join(cells) + " |")
    lines += ["", "## Differences to the reference, every metric", ""]
    lines += ["| variant | metric | difference [95% CI] | p (seeds) | matters |", "|---|---|---|---|---|"]
    for v in grid.variants:
        for m, entry in summary["comparisons"].get(v.name, {}).items():
            if m == "parameters":
                continue
            lines.append(f"| `{v.name}` | {m} | {_diff(entry, m)} | {_fmt(entry['p_value'], 2)} | {_verdict(entry)} |")
    lines += ["", "![accuracy against cost](accuracy_vs_cost.png)", "", "![differences](components.png)", ""]
    if grid.task == "lm":
        lines += _position_section(grid, summary.get("nll_by_position", {}))
    if table is not None:
        lines += [
            "## Recommendation from this study alone",
            "",
            f"Budget tiers (inference s per audio s): {table['budgets']}. The shipped table "
            "(`presets.recommend`) is built from all studies with `--ship-recommendations`.",
            "",
            "| budget | input length (s) | streaming | configuration | error | cost |",
            "|---|---|---|---|---|---|",
        ]
        for row in table["rows"]:
            low, high = row["length"]
            length = f"{low:g}-" + ("" if high is None else f"{high:g}")
            if "none" in row:
                lines.append(f"| {row['budget']} | {length} | {row['streaming']} | none within budget | | |")
            else:
                lines.append(
                    f"| {row['budget']} | {length} | {row['streaming']} | `{row['name']}` | "
                    f"{100 * row['error']:.2f}% | {_fmt(row['cost'])} |"
                )
    return "\n".join(lines) + "\n"


def _lm_data_line(grid: Grid, results: dict) -> str:
    """The data of a generation study in words, with the frame rate and seconds its runs recorded."""
    d = grid.data
    rate = next((r["frame_rate"] for r in results.values()), None)
    seconds = "" if rate is None else f" ({d['train_frames'] / rate:.1f} s)"
    eval_seconds = "" if rate is None else f" ({d['eval_frames'] / rate:.1f} s)"
    windows = next((len(r["nll"]["window_ids"]) for r in results.values()), None)
    limit = d["eval_windows_per_session"]
    per_session = "all whole windows" if limit is None else f"at most {limit}"
    return (
        f"Data: corpus `{d['corpus']}`, mel-RVQ audio tokens (K={d['num_codebooks']} codebooks of "
        f"{d['codebook_size']} codes, fitted on `{d['train_split']}`"
        + ("" if rate is None else f", {rate:g} frames per second")
        + f"); training windows of {d['train_frames']} frames{seconds} at random offsets of `{d['train_split']}`; "
        f"held-out: {'' if windows is None else windows} windows of {d['eval_frames']} frames{eval_seconds} of "
        f"`{d['test_split']}` ({per_session} per session), NLL in bins of "
        f"{d['bin_frames']} target positions; `test_nll_long` counts the targets at positions >= {d['long_from']}."
    )


def _position_section(grid: Grid, curves: dict) -> list[str]:
    """REPORT.md's NLL-by-position table of a generation study (mean over seeds per bin)."""
    if not curves:
        return []
    starts = next(iter(curves.values()))["bin_starts"]
    lines = [
        "## NLL by position",
        "",
        f"Held-out NLL per code (nats, mean over seeds) of the targets in each bin of {grid.data['bin_frames']} "
        "positions from the window's start (columns: the bin's first position).",
        "",
        "| variant | " + " | ".join(str(s) for s in starts) + " |",
        "|---|" + "---|" * len(starts),
    ]
    for v in grid.variants:
        if v.name in curves:
            lines.append(f"| `{v.name}` | " + " | ".join(f"{m:.4f}" for m in curves[v.name]["mean"]) + " |")
    return lines + ["", "![NLL by position](nll_by_position.png)", ""]


def _metric_order(summary: dict) -> list[str]:
    names = sorted({m for v in summary["variants"].values() for m in v["metrics"]})
    first = [m for m in names if m.startswith("test_")]
    return first + [m for m in names if m not in first]


def _error_bar(entry: dict, scale: float = 1.0):
    """Matplotlib's ``[[below], [above]]`` of a mean and its interval, or None without an interval."""
    low, high = entry["ci"]
    if math.isnan(low):
        return None
    return [[scale * (entry["mean"] - low)], [scale * (high - entry["mean"])]]


def plot(grid: Grid, summary: dict, folder: Path) -> None:
    """``accuracy_vs_cost.png`` (metric against each cost, seed intervals both ways) and ``components.png``
    (difference to the reference per variant with its seed interval; filled: the interval excludes 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = grid.metric
    scale, unit = (1.0, "nats per code") if grid.task == "lm" else (100.0, "%")
    fig, axes = plt.subplots(1, len(COST_LABELS), figsize=(5 * len(COST_LABELS), 4), squeeze=False)
    for ax, (cost, label) in zip(axes[0], COST_LABELS.items()):
        for v in grid.variants:
            m = summary["variants"][v.name]["metrics"]
            if metric not in m or cost not in m:
                continue
            y, x = m[metric], m[cost]
            ax.errorbar(
                x["mean"],
                scale * y["mean"],
                xerr=_error_bar(x),
                yerr=_error_bar(y, scale),
                fmt="o",
                capsize=3,
                label=v.name,
            )
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} ({unit})")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{grid.name}: accuracy against cost (95% intervals over seeds)")
    fig.tight_layout()
    fig.savefig(folder / "accuracy_vs_cost.png", dpi=110)
    plt.close(fig)

    names = [v.name for v in grid.variants if metric in summary["comparisons"].get(v.name, {})]
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 4))
    for i, name in enumerate(names):
        e = summary["comparisons"][name][metric]
        low, high = e["ci"]
        yerr = None if math.isnan(low) else [[scale * (e["diff"] - low)], [scale * (high - e["diff"])]]
        ax.bar(i, scale * e["diff"], color="C3" if e["matters"] else "0.7", edgecolor="k")
        if yerr is not None:
            ax.errorbar(i, scale * e["diff"], yerr=yerr, fmt="none", ecolor="k", capsize=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} minus {grid.reference} ({'nats' if grid.task == 'lm' else 'points'})")
    ax.set_title(f"{grid.name}: difference to {grid.reference} (red: interval excludes 0)")
    fig.tight_layout()
    fig.savefig(folder / "components.png", dpi=110)
    plt.close(fig)
    if grid.task == "lm":
        plot_positions(grid, summary["nll_by_position"], folder, plt)


def plot_positions(grid: Grid, curves: dict, folder: Path, plt) -> None:
    """``nll_by_position.png``: each variant's held-out NLL per position bin, mean over seeds with its interval."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab20").colors  # distinct colours for up to 20 variants, line styles beyond
    for i, v in enumerate(grid.variants):
        if v.name not in curves:
            continue
        c = curves[v.name]
        x = [s + grid.data["bin_frames"] / 2 for s in c["bin_starts"]]
        line = ax.plot(
            x,
            c["mean"],
            marker="o",
            ms=3,
            label=v.name,
            color=colours[i % len(colours)],
            ls=("-", "--", ":")[(i // len(colours)) % 3],
            lw=2.2 if v.name == grid.reference else 1.2,
        )
        low, high = zip(*c["ci"])
        if not any(math.isnan(b) for b in low):
            ax.fill_between(x, low, high, color=line[0].get_color(), alpha=0.12)
    ax.axvline(grid.data["long_from"], color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"target position in the window (code frames; bins of {grid.data['bin_frames']})")
    ax.set_ylabel("held-out NLL (nats per code)")
    ax.set_title(f"{grid.name}: NLL by position (95% intervals over seeds; dashed: long_from)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "nll_by_position.png", dpi=110)
    plt.close(fig)


def write_report(grid: Grid, output: str, command: str) -> dict:
    """Summarise the finished runs of ``output`` and write ``summary.json``, ``REPORT.md``, the plots and
    ``recommendations.json``; returns the summary."""
    folder = Path(output)
    results = load_results(output)
    summary = summarise(
        results,
        grid.reference,
        [{"name": v.name, "component": v.component} for v in grid.variants],
        grid.data.get("test_splits", []),
    )
    if grid.task == "lm":
        summary["nll_by_position"] = position_curves(results, [v.name for v in grid.variants])
    summary.update(
        study=grid.name,
        grid=grid.path,
        reference=grid.reference,
        metric=grid.metric,
        command=command,
        runs_finished=len(results),
        runs_total=len(grid.runs()),
    )
    write_json_atomic(folder / "summary.json", summary)
    table = None
    if results and grid.task == "asr":
        table = build_table([(grid, output, summary)], [command])
        write_table(table, folder / "recommendations.json")
    text = render_report(grid, summary, results, command, table)
    tmp = folder / ".REPORT.md.tmp"
    tmp.write_text(text)
    tmp.replace(folder / "REPORT.md")
    if results:
        plot(grid, summary, folder)
    return summary
