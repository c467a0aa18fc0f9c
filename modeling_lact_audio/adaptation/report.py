"""REPORT.md and plots of the adaptation protocols (``eval/adaptation/run_adaptation.py`` writes ``results.json``).

The report states both bars as measured, met or not: the seed's success threshold (a carried LaCT state
cuts WER by more than 5% relative at less than half the gradient method's adaptation time) and the issue's
goal (carrying over 5 utterances of a new speaker cuts WER by at least 15% relative with a 95% interval
excluding 0, at less than 1 s extra compute per utterance, and gains at least what SUTA gains at a tenth
of its time).
"""

import math
import re
from pathlib import Path

import numpy as np

from .gradient_protocols import SUTA
from .protocols import CARRY_ALL

GOAL_SPLIT = "test_unseen_speakers"
TITLES = {
    "speaker": "Speaker adaptation: k previous utterances of the speaker (k = 0: reset)",
    "noise": "Noise adaptation: k previous utterances of the noise condition (sessions of mixed speakers)",
    "domain": "Domain adaptation: k previous utterances of the domain (sessions of mixed speakers)",
    "conversation": "Conversations: interleaved speakers, one state per speaker vs one shared state vs reset",
    "failure": "Speaker change: a state carried over speaker A, kept on speaker B",
    "presets": "Presets: a state adapted on a group's first utterances, loaded for each new utterance",
    "gradient": "Gradient baselines on the same utterances (timed on one CPU thread)",
    "evolution": "Fast-weight evolution over a stream, carried vs reset",
    "reliance": "Is the fast-weight branch used at all? The LaCT branch's output scaled (x1: the trained model)",
}


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _signed(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _seconds(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _rate(entry: dict, metric: str) -> str:
    low, high = entry[f"{metric}_ci"]
    return f"{_pct(entry[metric])} [{_pct(low)}, {_pct(high)}]"


def _change(paired: dict) -> str:
    low, high = paired["relative_change_ci"]
    return f"{_signed(paired['relative_change'])} [{_signed(low)}, {_signed(high)}]"


def _yes(flag) -> str:
    return "not measured" if flag is None else ("**yes**" if flag else "**no**")


def condition_table(scored: dict) -> str:
    """One protocol on one head and split as a markdown table: a row per condition.

    Columns: utterances, WER and CER % [95% interval] on the condition's utterances, then paired with the
    baseline on the utterances both cover: the baseline's WER there, the relative WER change % [95%
    interval], the p-value, seconds per utterance (forward plus context) and extra seconds over the baseline.
    """
    base = scored["baseline"]
    lines = [
        f"| condition | n | WER % | CER % | {base} WER % (same utts) | rel. WER change % | p | s/utt | extra s/utt |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in scored["conditions"].items():
        seconds = _seconds(entry["seconds_per_utterance"] + entry["context_seconds_per_utterance"])
        paired = entry.get("vs_baseline")
        if paired is None:
            cells = ["", "(baseline)", "", seconds, "0"]
        else:
            p = "n/a" if math.isnan(paired["p_value"]) else f"{paired['p_value']:.3f}"
            extra = _seconds(paired["extra_seconds_per_utterance"])
            cells = [_pct(paired["reference_wer"]), _change(paired), p, seconds, extra]
        rates = f"{_rate(entry, 'wer')} | {_rate(entry, 'cer')}"
        lines.append(f"| {name} | {entry['utterances']} | {rates} | " + " | ".join(cells) + " |")
    for c in scored.get("comparisons", []):
        lines.append(
            f"\n{c['condition']} against {c['reference']} on {c['utterances']} shared utterances: WER "
            f"{_pct(c['reference_wer'])} -> {_pct(c['wer'])} %, relative change {_change(c)} %, p = {c['p_value']:.3f}."
        )
    return "\n".join(lines) + "\n"


def position_table(scored: dict, label: str = "position") -> str:
    """WER % [95% interval] by position (rows) of every condition (columns)."""
    curves = scored["positions"]
    names = list(curves)
    positions = sorted({p["position"] for c in curves.values() for p in c})
    lines = [f"| {label} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for pos in positions:
        cells = []
        for n in names:
            point = next((p for p in curves[n] if p["position"] == pos), None)
            cells.append("" if point is None else f"{_rate(point, 'wer')} (n={point['utterances']})")
        lines.append(f"| {pos} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _lact_entries(results: dict, protocol: str):
    """``(head, split, scored)`` of the heads that carry a state, for one protocol."""
    entry = results.get("protocols", {}).get(protocol, {})
    for head, splits in entry.get("heads", {}).items():
        if entry["systems"][head]["carries_state"]:
            for split, scored in splits.items():
                yield head, split, scored


def _goal_split(results: dict, protocol: str, head: str):
    splits = results.get("protocols", {}).get(protocol, {}).get("heads", {}).get(head, {})
    return splits.get(GOAL_SPLIT) or (next(iter(splits.values())) if splits else None)


def evaluate_bars(results: dict) -> list[dict]:
    """The seed's threshold and the issue's goal for every head that carries a state, as measured.

    Returns:
        rows ``{"bar", "head", "check", "measured", "met"}``; ``met`` is None where the protocol it needs
        (``speaker`` on test_unseen_speakers, or the first split it ran; ``gradient``) has not run.
    """
    heads = {h for p in ("speaker", "gradient") for h, _, _ in _lact_entries(results, p)}
    rows = []
    for head in sorted(heads):
        speaker, gradient = _goal_split(results, "speaker", head), _goal_split(results, "gradient", head)
        carry = suta = None
        if gradient and CARRY_ALL in gradient["conditions"] and SUTA in gradient["conditions"]:
            carry, suta = gradient["conditions"][CARRY_ALL]["vs_baseline"], gradient["conditions"][SUTA]["vs_baseline"]
        if carry is not None:
            extra, suta_extra = max(carry["extra_seconds_per_utterance"], 0.0), suta["extra_seconds_per_utterance"]
            met = carry["relative_change"] < -0.05 and extra < 0.5 * suta_extra
            measured = (
                f"carry: {_change(carry)} % relative WER at {_seconds(extra)} s extra per utterance; SUTA adapts "
                f"in {_seconds(suta_extra)} s per utterance ({suta['utterances']} utterances)"
            )
        else:
            met, measured = None, "run the gradient protocol"
        rows.append(
            {
                "bar": "seed",
                "head": head,
                "check": "> 5% relative WER improvement at < 50% of SUTA's adaptation time",
                "measured": measured,
                "met": met,
            }
        )
        k5 = speaker["conditions"].get("k=5", {}).get("vs_baseline") if speaker else None
        if k5 is not None:
            met = k5["relative_change"] <= -0.15 and k5["relative_change_ci"][1] < 0
            measured = f"{_change(k5)} % on {k5['utterances']} utterances (p = {k5['p_value']:.3f})"
        else:
            met, measured = None, "run the speaker protocol with k = 5"
        rows.append(
            {
                "bar": "goal",
                "head": head,
                "check": "carrying over 5 utterances of a new speaker cuts WER >= 15% relative, interval excluding 0",
                "measured": measured,
                "met": met,
            }
        )
        stream = speaker["conditions"].get(CARRY_ALL, {}).get("vs_baseline") if speaker else None
        if stream is not None:
            met = stream["extra_seconds_per_utterance"] < 1.0
            window = (
                f"; re-running 5 utterances as context: {_seconds(k5['extra_seconds_per_utterance'])} s" if k5 else ""
            )
            measured = f"carried state: {_seconds(stream['extra_seconds_per_utterance'])} s per utterance{window}"
        else:
            met, measured = None, "run the speaker protocol"
        rows.append(
            {
                "bar": "goal",
                "head": head,
                "check": "< 1 s extra compute per utterance",
                "measured": measured,
                "met": met,
            }
        )
        if carry is not None:
            extra, suta_extra = max(carry["extra_seconds_per_utterance"], 0.0), suta["extra_seconds_per_utterance"]
            met = carry["relative_change"] <= suta["relative_change"] and extra <= 0.1 * suta_extra
            measured = (
                f"carry {_change(carry)} % at {_seconds(extra)} s; SUTA {_change(suta)} % at {_seconds(suta_extra)} s"
            )
            if all(c["relative_change_ci"][0] <= 0 <= c["relative_change_ci"][1] for c in (carry, suta)):
                measured += " (neither changes WER: both intervals include 0, so this says nothing about adaptation)"
        else:
            met, measured = None, "run the gradient protocol"
        rows.append(
            {
                "bar": "goal",
                "head": head,
                "check": "at least SUTA's WER gain at a tenth of its adaptation time",
                "measured": measured,
                "met": met,
            }
        )
    return rows


def bars_section(results: dict) -> str:
    """The two bars as markdown tables, each with an overall verdict per head."""
    rows = evaluate_bars(results)
    if not rows:
        return "No head with a carried state was evaluated: the bars are not measured.\n"
    lines = []
    for bar, title in (("seed", "The seed's success threshold"), ("goal", "The issue's goal")):
        lines += [f"### {title}", "", "| head | check | measured | met |", "|---|---|---|---|"]
        for r in (r for r in rows if r["bar"] == bar):
            lines.append(f"| {r['head']} | {r['check']} | {r['measured']} | {_yes(r['met'])} |")
        lines.append("")
        for head in sorted({r["head"] for r in rows}):
            flags = [r["met"] for r in rows if r["bar"] == bar and r["head"] == head]
            verdict = "not fully measured" if None in flags else ("met" if all(flags) else "not met")
            lines.append(f"{title} for {head}: **{verdict}**.")
        lines.append("")
    return "\n".join(lines)


def render_report(results: dict) -> str:
    """REPORT.md: the bars, then one section per protocol (a table per head and split), then the commands."""
    lines = [
        "# Test-time adaptation, measured",
        "",
        "Relative WER change is against the baseline condition on the same utterances (negative: fewer errors), "
        "with a 95% paired bootstrap interval over utterances and a paired bootstrap p-value. Seconds are wall "
        "seconds per transcribed utterance; *extra* is the mean over those utterances of the condition's seconds "
        "(its forwards, gradient steps and context runs) minus the baseline's. A carried state's own update is "
        "part of transcribing the previous utterance, so carrying it in a stream costs no extra forward; the k-context "
        "rows re-run k utterances and count them.",
        "",
        "## Bars",
        "",
        bars_section(results),
    ]
    for protocol in TITLES:
        entry = results.get("protocols", {}).get(protocol)
        if not entry:
            continue
        lines += [f"## {TITLES[protocol]}", ""]
        for head, splits in entry["heads"].items():
            decoding = entry["systems"][head]
            for split, scored in splits.items():
                title = f"### {head} on {split} ({decoding['method']} decoding, {scored['wall_seconds']:.0f} s wall)"
                lines += [title, "", condition_table(scored)]
                info = scored.get("info", {})
                if protocol in ("failure", "evolution"):
                    label = "utterance after the change" if protocol == "failure" else "position in stream"
                    lines += [position_table(scored, label)]
                if protocol == "gradient" and "suta_steps" in info:
                    rate = f" at AdamW lr {info['suta_lr']:g}" if "suta_lr" in info else ""
                    lines += [f"SUTA: {info['suta_steps']} steps per utterance{rate}, reset after each.", ""]
                if protocol == "gradient" and info.get("finetune_seconds"):
                    spent = {s: np.mean(list(v.values())) for s, v in info["finetune_seconds"].items() if v}
                    if spent:
                        text = ", ".join(f"{s}: {_seconds(v)} s" for s, v in spent.items())
                        lines += [f"Fine-tuning on {info['labelled']} labelled utterances, per stream: {text}.", ""]
                if protocol == "presets" and info.get("adapt_seconds"):
                    lines += [
                        f"Presets adapted on the first {info['adapt']} utterances of each group "
                        f"({_seconds(float(np.mean(list(info['adapt_seconds'].values()))))} s each), saved in "
                        f"`{next(iter(info['preset_folders'].values()))}` and beside it.",
                        "",
                    ]
                if info.get("skipped"):
                    lines += [f"Streams too short for this protocol: {len(info['skipped'])}.", ""]
    produced = {}
    for protocol, command in results.get("commands", {}).items():
        produced.setdefault(command, []).append(protocol)
    lines += ["## Commands", ""] + [f"- {', '.join(p)}: `{c}`" for c, p in produced.items()] + [""]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _band(ax, x, points, label, **style):
    """A WER line with its 95% interval as a band; ``points`` are dicts with ``wer`` and ``wer_ci``."""
    y = [100 * p["wer"] for p in points]
    low = [100 * p["wer_ci"][0] for p in points]
    high = [100 * p["wer_ci"][1] for p in points]
    (line,) = ax.plot(x, y, marker="o", label=label, **style)
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)


def _k_curve(results: dict, protocol: str, folder: Path, plt) -> list[Path]:
    written = []
    for head, split, scored in _lact_entries(results, protocol):
        ks = sorted(int(n[2:]) for n in scored["conditions"] if n.startswith("k="))
        if len(ks) < 2:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        conds = [scored["conditions"][f"k={k}"] for k in ks]
        _band(left, ks, conds, "k previous utterances")
        paired = [c.get("vs_baseline") for c in conds]
        base = [100 * (p["reference_wer"] if p else c["wer"]) for p, c in zip(paired, conds)]
        left.plot(ks, base, "k--", label="reset, same utterances")
        left.set(xlabel="k (utterances of context)", ylabel="WER %", title=f"{head}: {split}")
        left.legend()
        pts = [(0, 0.0, 0.0, 0.0)] + [
            (k, p["relative_change"], *p["relative_change_ci"])
            for k, p in zip(ks, paired)
            if p is not None and not math.isnan(p["relative_change"])
        ]
        x, rel, low, high = (np.asarray(v, dtype=float) for v in zip(*pts))
        right.plot(x, 100 * rel, marker="o", label="k previous utterances")
        right.fill_between(x, 100 * low, 100 * high, alpha=0.2)
        carry = scored["conditions"].get(CARRY_ALL, {}).get("vs_baseline")
        if carry is not None and not math.isnan(carry["relative_change"]):
            right.axhline(100 * carry["relative_change"], color="tab:red", ls="--", label="carried from stream start")
            right.axhspan(*(100 * np.asarray(carry["relative_change_ci"])), color="tab:red", alpha=0.08)
        right.axhline(0, color="k", lw=0.8)
        right.set(xlabel="k", ylabel="relative WER change vs reset %", title="paired with reset, 95% interval")
        right.legend()
        for ax in (left, right):
            ax.set_xticks(ks)
        fig.tight_layout()
        path = folder / f"k_context_{protocol}_{_safe(head)}_{_safe(split)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _position_plot(results: dict, protocol: str, folder: Path, plt, xlabel: str) -> list[Path]:
    written = []
    for head, split, scored in _lact_entries(results, protocol):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in scored["positions"].items():
            if curve:
                _band(ax, [p["position"] for p in curve], curve, name)
        ax.set(xlabel=xlabel, ylabel="WER %", title=f"{head}: {split}")
        ax.legend()
        fig.tight_layout()
        path = folder / f"{protocol}_by_position_{_safe(head)}_{_safe(split)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _fast_weight_plot(results: dict, folder: Path, plt) -> list[Path]:
    written = []
    for head, split, scored in _lact_entries(results, "evolution"):
        trace = scored.get("trace")
        if not trace or not trace["streams"]:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for s in trace["streams"]:
            x = np.arange(1, len(s["update_norm"]) + 1)
            axes[0].plot(x, s["relative_distance"], marker=".", alpha=0.7)
            axes[1].plot(x, s["relative_update_norm"], marker=".", alpha=0.7)
        axes[0].set(xlabel="utterances carried", ylabel="||v_i - v_0|| / ||v_0||", title="distance from initial")
        axes[1].set(xlabel="utterance", ylabel="||v_i - v_{i-1}|| / ||v_{i-1}||", title="update norm")
        proj = trace["projection"]
        points = np.asarray(proj["points"])
        labels = proj["label"]
        groups = sorted({g for g in labels if g is not None})
        colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for i, g in enumerate(groups):
            streams = sorted({s for s, lab in zip(proj["stream"], labels) if lab == g})
            for n, stream in enumerate(streams):
                pick = [j for j, s in enumerate(proj["stream"]) if s == stream]
                path = np.vstack([points[:1], points[pick]])  # every stream starts from the initial weights
                style = dict(marker=".", color=colours(i % colours.N), alpha=0.8, label=g if n == 0 else None)
                axes[2].plot(path[:, 0], path[:, 1], **style)
        axes[2].scatter(points[:1, 0], points[:1, 1], color="k", marker="*", s=120, label="initial", zorder=3)
        axes[2].set(xlabel="PC 1", ylabel="PC 2", title=f"fast weights by {trace['label_column']}")
        axes[2].legend(fontsize=6)
        fig.suptitle(f"{head}: {split}")
        fig.tight_layout()
        path = folder / f"fast_weights_{_safe(head)}_{_safe(split)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _conditions_plot(results: dict, protocol: str, folder: Path, plt) -> list[Path]:
    entry = results.get("protocols", {}).get(protocol, {})
    panels = [(h, s, sc) for h, splits in entry.get("heads", {}).items() for s, sc in splits.items()]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (head, split, scored) in zip(axes[0], panels):
        names = list(scored["conditions"])
        wer = np.array([100 * scored["conditions"][n]["wer"] for n in names])
        ci = np.array([[100 * v for v in scored["conditions"][n]["wer_ci"]] for n in names])
        ax.bar(range(len(names)), wer, yerr=[wer - ci[:, 0], ci[:, 1] - wer], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set(ylabel="WER %", title=f"{head}: {split}")
    fig.tight_layout()
    path = folder / f"{protocol}_conditions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _gain_vs_time_plot(results: dict, folder: Path, plt) -> list[Path]:
    entry = results.get("protocols", {}).get("gradient", {})
    written = []
    for head, splits in entry.get("heads", {}).items():
        for split, scored in splits.items():
            points = [(n, e["vs_baseline"]) for n, e in scored["conditions"].items() if "vs_baseline" in e]
            points = [(n, p) for n, p in points if not math.isnan(p["relative_change"])]
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for name, p in points:
                rel, (low, high) = 100 * p["relative_change"], p["relative_change_ci"]
                x = max(p["extra_seconds_per_utterance"], 1e-4)
                ax.errorbar(x, rel, yerr=[[rel - 100 * low], [100 * high - rel]], marker="o", capsize=3, label=name)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xscale("log")
            ax.set(
                xlabel="extra seconds per utterance (one thread; floor 1e-4)",
                ylabel="relative WER change vs reset %",
                title=f"{head}: {split}",
            )
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"gradient_gain_vs_time_{_safe(head)}_{_safe(split)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def plot(results: dict, folder) -> list[Path]:
    """Write the plots of every protocol in ``results`` into ``folder``; returns their paths.

    ``k_context_<protocol>_<head>_<split>.png``: WER against k with 95% bands and the reset WER on the same
    utterances, and the paired relative change against k (speaker, noise, domain);
    ``failure_by_position_*.png``: WER by utterance after a speaker change per policy;
    ``evolution_by_position_*.png``: WER by position in a stream, carried vs reset;
    ``fast_weights_*.png``: relative distance from the initial fast weights and update norm per utterance,
    and the states' 2-D projection coloured by speaker / condition / domain;
    ``<protocol>_conditions.png``: WER with intervals per condition (conversation, presets, gradient);
    ``gradient_gain_vs_time_*.png``: each method's relative WER change against its extra seconds per utterance.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for protocol in ("speaker", "noise", "domain"):
        written += _k_curve(results, protocol, folder, plt)
    written += _position_plot(results, "failure", folder, plt, "utterance of speaker B after the change")
    written += _position_plot(results, "evolution", folder, plt, "position in stream")
    written += _fast_weight_plot(results, folder, plt)
    for protocol in ("conversation", "presets", "gradient", "reliance"):
        written += _conditions_plot(results, protocol, folder, plt)
    written += _gain_vs_time_plot(results, folder, plt)
    return written
