"""Tables and plots of a recogniser evaluation (``eval/recogniser_eval.py`` writes ``results.json``)."""

from pathlib import Path

import numpy as np


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(entry: dict, metric: str) -> str:
    low, high = entry[f"{metric}_ci"]
    return f"{_pct(entry[metric])} [{_pct(low)}, {_pct(high)}]"


def group_tables(results: dict) -> str:
    """WER % [95% interval] of every system per group of a split's utterances (noise type, SNR, domain)."""
    from ..asr import rate_interval

    lines = []
    for split, columns in results.get("groups", {}).items():
        for column, labels in columns.items():
            groups = sorted(set(labels), key=lambda g: (len(g), g))
            lines += [
                f"### {split} by {column}: WER % [95% interval]",
                "",
                "| system | " + " | ".join(f"{g} (n={labels.count(g)})" for g in groups) + " |",
                "|---" * (len(groups) + 1) + "|",
            ]
            for name, system in results["systems"].items():
                entry = system["splits"].get(split)
                if entry is None:
                    continue
                errors, words = np.asarray(entry["counts"]["word_errors"]), np.asarray(entry["counts"]["words"])
                cells = []
                for g in groups:
                    pick = np.asarray(labels) == g
                    low, high = rate_interval(errors[pick], words[pick])
                    rate = errors[pick].sum() / max(words[pick].sum(), 1)
                    cells.append(f"{_pct(rate)} [{_pct(low)}, {_pct(high)}]")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + ("\n" if lines else "")


def bar_checks(results: dict, system: str, whisper: str, real_wer_bar: float = 0.20) -> str:
    """The recogniser issue's bars for ``system``, as measured: WER below ``whisper``'s with non-overlapping
    95% intervals on test_seen / test_unseen_speakers / test_noise, and at most ``real_wer_bar`` on test_real."""
    systems = results["systems"]
    if system not in systems or whisper not in systems:
        return ""
    lines = [f"### Bars: {system} against {whisper}", "", "| split | bar | measured | met |", "|---|---|---|---|"]
    for split in ("test_seen", "test_unseen_speakers", "test_noise"):
        ours, theirs = systems[system]["splits"].get(split), systems[whisper]["splits"].get(split)
        if ours and theirs:
            met = ours["wer_ci"][1] < theirs["wer_ci"][0]
            lines.append(
                f"| {split} | WER interval below Whisper's | {_cell(ours, 'wer')} vs {_cell(theirs, 'wer')} | "
                f"{'yes' if met else 'no'} |"
            )
    real = systems[system]["splits"].get("test_real")
    if real:
        met = real["wer"] <= real_wer_bar
        lines.append(f"| test_real | WER <= {_pct(real_wer_bar)}% | {_cell(real, 'wer')} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def markdown_tables(results: dict) -> str:
    """WER and CER tables (rows: systems, columns: splits; % with 95% bootstrap intervals), p-values."""
    splits = results["splits"]
    lines = []
    for metric in ("wer", "cer"):
        lines += [
            f"### {metric.upper()} % [95% bootstrap interval]",
            "",
            "| system | " + " | ".join(splits) + " |",
            "|---" * (len(splits) + 1) + "|",
        ]
        for name, system in results["systems"].items():
            cells = [_cell(system["splits"][s], metric) if s in system["splits"] else "-" for s in splits]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    reference = results.get("reference_system")
    if reference in results["systems"]:
        lines += [
            f"### Paired bootstrap p-values, WER: {reference} against each system (same utterances)",
            "",
            "| system | " + " | ".join(splits) + " |",
            "|---" * (len(splits) + 1) + "|",
        ]
        for name, system in results["systems"].items():
            if name == reference:
                continue
            cells = [
                f"{system['splits'][s]['p_vs_reference']:.3g}"
                if "p_vs_reference" in system["splits"].get(s, {})
                else "-"
                for s in splits
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "### Size, training budget and speed",
        "",
        "| system | trainable parameters | training steps | train utterances | training minutes | RTF |",
        "|---|---|---|---|---|---|",
    ]
    for name, system in results["systems"].items():
        minutes = system.get("train_seconds")
        minutes = f"{minutes / 60:.1f}" if minutes else "-"
        rtf = f"{system['rtf']:.3f}" if system.get("rtf") is not None else "-"
        steps, rows = (system.get(k) or "-" for k in ("train_steps", "train_rows"))
        mark = " (kept)" if system.get("kept_from") else ""
        lines.append(
            f"| {name}{mark} | {system.get('parameters', 0) / 1e6:.2f}M | {steps} | {rows} | {minutes} | {rtf} |"
        )
    kept = sorted({s["kept_from"] for s in results["systems"].values() if s.get("kept_from")})
    if kept:
        lines += [
            "",
            "Systems marked *(kept)* were scored on the same utterances by an earlier evaluation, copied from its "
            "results.json (their p-values are against this evaluation's reference):",
            "",
            *[f"    {command}" for command in kept],
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Grouped WER bars with 95% intervals, one group per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits, systems = results["splits"], list(results["systems"])
    width = 0.8 / len(systems)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(splits)), 4.2))
    for ax, metric in zip(axes, ("wer", "cer")):
        for i, name in enumerate(systems):
            entries = [results["systems"][name]["splits"].get(s) for s in splits]
            values = [100 * e[metric] if e else np.nan for e in entries]
            errors = np.array(
                [
                    [100 * (e[metric] - e[f"{metric}_ci"][0]), 100 * (e[f"{metric}_ci"][1] - e[metric])]
                    if e
                    else [0, 0]
                    for e in entries
                ]
            ).T
            ax.bar(np.arange(len(splits)) + i * width, values, width, yerr=errors, capsize=2, label=name)
        ax.set_xticks(np.arange(len(splits)) + width * (len(systems) - 1) / 2)
        ax.set_xticklabels(splits, rotation=20, ha="right")
        ax.set_ylabel(f"{metric.upper()} %")
        ax.set_ylim(0, min(150, ax.get_ylim()[1]))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_report(results: dict) -> str:
    """``REPORT.md`` of a recogniser evaluation: what was measured and how, the bars, every table."""
    lines = [
        "# Recogniser evaluation",
        "",
        f"{results['rows_per_split']} utterances per split (a fixed random subset, seed 0), the same utterances "
        "for every system; WER/CER after the tokenizer's normalisation, 95% percentile bootstrap intervals over "
        "utterances, paired bootstrap p-values on the same utterances. LM settings tuned on validation only.",
        "",
    ]
    if results.get("command"):
        lines += ["Command:", "", f"    {results['command']}", ""]
    for note in results.get("notes", []):
        lines += [note, ""]
    reference = results.get("reference_system")
    whispers = [n for n in results["systems"] if n.startswith("whisper")]
    if reference:
        for name in (reference, f"{reference} + LM"):
            for whisper in whispers:
                lines.append(bar_checks(results, name, whisper))
    return "\n".join(lines) + "\n" + markdown_tables(results) + "\n" + group_tables(results)
