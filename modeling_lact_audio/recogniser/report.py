"""Tables and plots of a recogniser evaluation (``eval/recogniser_eval.py`` writes ``results.json``)."""

from pathlib import Path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(entry: dict, metric: str) -> str:
    low, high = entry[f"{metric}_ci"]
    return f"{_pct(entry[metric])} [{_pct(low)}, {_pct(high)}]"


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
    if reference:
        lines += [
            f"### Paired bootstrap p-values, WER: {reference} against each system (same utterances)",
            "",
            "| system | " + " | ".join(splits) + " |",
            "|---" * (len(splits) + 1) + "|",
        ]
        for name, system in results["systems"].items():
            if name == reference:
                continue
            cells = [f"{system['splits'][s]['p_vs_reference']:.3g}" if s in system["splits"] else "-" for s in splits]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "### Size and speed",
        "",
        "| system | trainable parameters | training minutes | RTF |",
        "|---|---|---|---|",
    ]
    for name, system in results["systems"].items():
        minutes = system.get("train_seconds")
        minutes = f"{minutes / 60:.1f}" if minutes else "-"
        rtf = f"{system['rtf']:.3f}" if system.get("rtf") is not None else "-"
        lines.append(f"| {name} | {system.get('parameters', 0) / 1e6:.2f}M | {minutes} | {rtf} |")
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
