"""The generation study's ``REPORT.md``, written from the JSON of ``study.run_study`` (nothing is recomputed).

Intervals: over prompts, 95% percentile bootstraps of the mean (``audio_quality.mean_interval``); LaCT minus a
baseline, the same bootstrap of the per-prompt differences (paired over prompts); NLL by position, Student-t
over held-out sequences (``ablations.statistics.seed_interval``), and the context where a model stops improving
is the first bin after which no later bin's NLL is lower by more than the t-interval of the paired difference.
"""

import json
import math
from pathlib import Path

import numpy as np

from ..ablations.statistics import seed_interval
from ..audio_quality import SPEAKER_SIMILARITY_TARGET, WER_RATIO_TARGET, mean_interval

METRICS = (
    ("speaker_similarity_mean", "speaker sim. to prompt", "higher"),
    ("speaker_similarity_slope_per_minute", "speaker sim. slope /min", "closer to 0"),
    ("pitch_jump_semitones_mean", "pitch jump (semitones)", "lower"),
    ("rolloff_cv", "rolloff CV", "lower"),
    ("flux_cv", "flux CV", "lower"),
    ("onset_rate_variance", "onset-rate variance", "lower"),
    ("dnsmos_ovrl_mean", "DNSMOS ovrl", "higher"),
)
TOKENIZER_SYSTEM = "mel_rvq K=8 + Griffin-Lim"
UNQUANTISED_SYSTEM = "log-mel + Griffin-Lim (no quantisation)"  # the same vocoder on the unquantised log-mel


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(mean, low, high, digits: int = 3) -> str:
    return f"{_fmt(mean, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def interval(values) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values [N]`` (NaN skipped): the 95% percentile bootstrap of the mean."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    low, high = mean_interval(x)
    return float(x.mean()), low, high


def paired_difference(a: dict, b: dict) -> dict:
    """``a - b`` over the keys (prompts) both hold a finite value for: ``{"diff", "ci", "n"}``, the mean of the
    per-key differences and its 95% bootstrap interval (paired over prompts)."""
    keys = sorted(k for k in a if k in b and np.isfinite(a[k]) and np.isfinite(b[k]))
    mean, low, high = interval([a[k] - b[k] for k in keys])
    return {"diff": mean, "ci": [low, high], "n": len(keys)}


# ---------------------------------------------------------------------------------------------- NLL


def nll_matrix(entry: dict, codebook0: bool = False) -> np.ndarray:
    """Per held-out sequence (rows) and position bin (columns), NLL per code in nats ``[S, bins]`` (NaN where a
    sequence has no frame in a bin or failed)."""
    sequences = [s for s in entry["sequences"] if "error" not in s]
    if not sequences:
        return np.zeros((0, 0))
    bins = max(len(s["sums"]) for s in sequences)
    out = np.full((len(sequences), bins), np.nan)
    codes_per_frame = 1 if codebook0 else entry["num_codebooks"]
    for i, s in enumerate(sequences):
        sums = np.asarray(s["sums_codebook0" if codebook0 else "sums"], dtype=np.float64)
        frames = np.asarray(s["frames_per_bin"], dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i, : len(sums)] = np.where(frames > 0, sums / (frames * codes_per_frame), np.nan)
    return out


def nll_curve(matrix: np.ndarray) -> list[dict]:
    """Per bin: ``{"mean", "ci", "n"}`` over the sequences that reach it (Student-t interval)."""
    out = []
    for column in matrix.T:
        values = column[np.isfinite(column)]
        mean, low, high = seed_interval(values)
        out.append({"mean": mean, "ci": [low, high], "n": int(len(values))})
    return out


def plateau_bin(matrix: np.ndarray) -> int:
    """The first bin ``b`` such that no later bin's NLL is significantly lower: for every ``j > b`` the paired
    t-interval of ``nll[:, j] - nll[:, b]`` over the sequences holding both (at least 2) reaches 0 or above."""
    bins = matrix.shape[1]
    for b in range(bins):
        improves = False
        for j in range(b + 1, bins):
            both = np.isfinite(matrix[:, b]) & np.isfinite(matrix[:, j])
            if both.sum() < 2:
                continue
            _, _, high = seed_interval(matrix[both, j] - matrix[both, b])
            if high < 0:
                improves = True
                break
        if not improves:
            return b
    return bins - 1


# ---------------------------------------------------------------------------------------------- loading


def load_results(results: Path) -> dict:
    """Every JSON of a results folder: ``{"models", "prompts", "nll": {kind: ..}, "generate": [item, ..],
    "cost": {kind: ..}, "stream": {kind: ..}, "command"}``."""
    out = {
        "models": _load(results / "models.json") or {},
        "prompts": _load(results / "prompts.json") or [],
        "command": _load(results / "command.json") or {},
    }
    for piece in ("nll", "cost", "stream"):
        out[piece] = {p.stem: json.loads(p.read_text()) for p in sorted((results / piece).glob("*.json"))}
    out["generate"] = [json.loads(p.read_text()) for p in sorted((results / "generate").glob("*.json"))]
    return out


def metric_table(items: list[dict], setting: str) -> dict:
    """``{system: {metric: {prompt: value}}}`` of the continuations of ``setting`` (the real ones: ``"-"``)."""
    table: dict = {}
    for item in items:
        if item["setting"] not in (setting, "-"):
            continue
        entry = table.setdefault(item["system"], {})
        for metric, _, _ in METRICS:
            value = item["metrics"].get(metric)
            entry.setdefault(metric, {})[item["prompt"]] = math.nan if value is None else float(value)
    return table


def tokenizer_round_trip(path: Path) -> dict | None:
    """The 8-codebook mel-RVQ's measured round trip from the tokenizer study's ``results.json``, with the
    targets and how far from them it is (``wer_ratio_excess``: ratio / 1.5; ``similarity_shortfall``: 0.8 - sim)."""
    study = _load(path)
    if study is None or TOKENIZER_SYSTEM not in study.get("systems", {}):
        return None
    system = study["systems"][TOKENIZER_SYSTEM]
    ratio, sim = system["whisper"]["wer_ratio"], system["speaker_similarity"]["mean"]
    return {
        "original_wer": system["whisper"]["original_wer"],
        "decoded_wer": system["whisper"]["decoded_wer"],
        "wer_ratio": ratio,
        "wer_ratio_ci": system["whisper"]["wer_ratio_ci"],
        "speaker_similarity": sim,
        "speaker_similarity_ci": system["speaker_similarity"]["ci"],
        "dnsmos_ovrl": system["dnsmos"]["ovrl_mos"]["mean"],
        "wer_ratio_excess": ratio / WER_RATIO_TARGET,
        "similarity_shortfall": SPEAKER_SIMILARITY_TARGET - sim,
        "met": ratio <= WER_RATIO_TARGET and sim >= SPEAKER_SIMILARITY_TARGET,
        "unquantised": (
            {
                "wer_ratio": study["systems"][UNQUANTISED_SYSTEM]["whisper"]["wer_ratio"],
                "speaker_similarity": study["systems"][UNQUANTISED_SYSTEM]["speaker_similarity"]["mean"],
            }
            if UNQUANTISED_SYSTEM in study["systems"]
            else None
        ),
    }


# ---------------------------------------------------------------------------------------------- plots


def _plots(results: Path, data: dict, curves: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if curves:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        for ax, key, title in zip(axes, ("all", "codebook0"), ("all codebooks", "codebook 0")):
            for kind, entry in curves.items():
                pts = entry[key]
                x = [(i + 0.5) * entry["bin_seconds"] for i in range(len(pts))]
                mean = np.array([p["mean"] for p in pts])
                low = np.array([p["ci"][0] for p in pts])
                high = np.array([p["ci"][1] for p in pts])
                ax.plot(x, mean, label=kind)
                ax.fill_between(x, low, high, alpha=0.15)
            ax.set_xlabel("target position (s)")
            ax.set_ylabel("NLL per code (nats)")
            ax.set_title(title)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results / "nll_by_position.png", dpi=90)
        plt.close(fig)
        written.append("nll_by_position.png")
    if data["cost"]:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        for kind, entry in data["cost"].items():
            pts = [p for p in entry["points"] if "error" not in p]
            x = [p["context_seconds"] for p in pts]
            axes[0].plot(x, [p["seconds_per_generated_second"] for p in pts], marker="o", label=kind)
            axes[1].plot(x, [p["cache_bytes"] / 2**20 for p in pts], marker="o", label=kind)
        axes[0].set_ylabel("decode s per generated s")
        axes[1].set_ylabel("cache (MiB)")
        for ax in axes:
            ax.set_xlabel("context (s)")
            ax.set_xscale("log")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results / "cost.png", dpi=90)
        plt.close(fig)
        written.append("cost.png")
    return written


# ---------------------------------------------------------------------------------------------- report


def write_report(results, tokenizer_results="eval/results/audio_tokenizer/results.json") -> Path:
    """Write ``<results>/REPORT.md`` (and its plots) from the JSON in ``results``; returns its path."""
    results = Path(results)
    data = load_results(results)
    kinds = list(data["models"]) or sorted(set(data["nll"]) | set(data["cost"]))
    baselines = [k for k in kinds if k != "lact"]
    lines = ["# Long-context audio generation: LaCT against attention baselines", ""]
    lines += ["Generated by `modeling_lact_audio/generation/report.py` from the JSON in this folder; do not edit.", ""]
    command = data["command"]
    lines += ["Commands:", ""]
    for name in ("train", "evaluate", "report"):
        entries = command.get(name) or []
        lines += [f"    {entry}" for entry in ([entries] if isinstance(entries, str) else entries)]
    lines += [""]
    lines += [
        "Data: the corpus has no 5-minute recordings (sessions of 1-4.5 min), so each sequence is the",
        "concatenation, in uid order, of one voice's sessions (the speaker name up to `@`: the same engine voice,",
        "whose rate/pitch setting may differ between sessions). Training: the `sessions_train` voices; held out:",
        "the `sessions_test_unseen` voices. Codes: mel-RVQ, K=8 codebooks of 256, 62.5 frames/s, decoded with",
        "Griffin-Lim. Conditioning: the Resemblyzer embedding of the session (training) or of the prompt audio.",
        "",
    ]
    # models
    if data["models"]:
        lines += [
            "## Models",
            "",
            "| model | class | parameters | train frames | steps | final loss | s/step | train min |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, info in data["models"].items():
            lines.append(
                f"| {kind} | {info['class']} | {info['parameters']:,} | {info['train_frames']} | {info['steps']} | "
                f"{_fmt(info['final_loss'])} | {_fmt(info['mean_step_seconds'], 2)} | "
                f"{_fmt(info['train_seconds'] / 60, 1)} |"
            )
        size = next(iter(data["models"].values()))["config"]
        lines += ["", f"Size (LaCT): {size}; the baselines' MLP width is fitted to the same parameter count.", ""]
    # tokenizer
    trip = tokenizer_round_trip(Path(tokenizer_results))
    lines += ["## The tokenizer's round trip", ""]
    if trip is None:
        lines += [f"No `{TOKENIZER_SYSTEM}` entry in `{tokenizer_results}`.", ""]
    else:
        lines += [
            f"Measured by `eval/audio_tokenizer_quality.py` ({TOKENIZER_SYSTEM}): Whisper WER "
            f"{trip['original_wer']:.1%} on the originals, {trip['decoded_wer']:.1%} decoded: ratio "
            f"{_ci(trip['wer_ratio'], *trip['wer_ratio_ci'], 2)} against a target of at most {WER_RATIO_TARGET} "
            f"({trip['wer_ratio_excess']:.2f}x the target); speaker similarity "
            f"{_ci(trip['speaker_similarity'], *trip['speaker_similarity_ci'])} against at least "
            f"{SPEAKER_SIMILARITY_TARGET} ({trip['similarity_shortfall']:.3f} short); DNSMOS overall "
            f"{trip['dnsmos_ovrl']:.2f}.",
            ("The targets are met." if trip["met"] else "The targets are missed.")
            + (
                " Why: the same Griffin-Lim on the unquantised log-mel scores WER"
                f" x{trip['unquantised']['wer_ratio']:.2f} and similarity"
                f" {trip['unquantised']['speaker_similarity']:.2f}, so the quantisation loses most."
                if trip["unquantised"] and not trip["met"]
                else ""
            )
            + " The `real_decoded` rows below show what the tokenizer costs every metric (the ceiling any generator"
            " reaches here), the `real_original` rows what real speech scores.",
            "",
        ]
    # NLL
    curves, plateaus = {}, {}
    if data["nll"]:
        lines += ["## Use of context: held-out NLL by position", ""]
        lines += [
            "| model | sequences | failed | NLL/code (all) | NLL/code (codebook 0) | stops improving after |",
            "|---|---:|---|---:|---:|---|",
        ]
        for kind in kinds:
            entry = data["nll"].get(kind)
            if entry is None:
                continue
            ok = [s for s in entry["sequences"] if "error" not in s]
            failed = [f"{s['voice']} ({s['frames']} frames)" for s in entry["sequences"] if "error" in s]
            total = sum(sum(s["sums"]) for s in ok) / max(
                sum(sum(s["frames_per_bin"]) for s in ok) * entry["num_codebooks"], 1
            )
            cb0 = sum(sum(s["sums_codebook0"]) for s in ok) / max(sum(sum(s["frames_per_bin"]) for s in ok), 1)
            matrix = nll_matrix(entry)
            if matrix.size == 0:
                continue
            curves[kind] = {
                "bin_seconds": entry["bin_seconds"],
                "all": nll_curve(matrix),
                "codebook0": nll_curve(nll_matrix(entry, codebook0=True)),
            }
            b = plateau_bin(matrix)
            plateaus[kind] = {"bin": b, "seconds": (b + 1) * entry["bin_seconds"]}
            lines.append(
                f"| {kind} | {len(ok)} | {', '.join(failed) or '-'} | {_fmt(total)} | {_fmt(cb0)} | "
                f"{b * entry['bin_seconds']:g}-{(b + 1) * entry['bin_seconds']:g} s |"
            )
        lines += [""]
        if curves:
            first = next(iter(curves.values()))
            header = "| bin (s) | n | " + " | ".join(curves) + " |"
            lines += [
                "NLL per code (all codebooks) by target position, mean [95% t-interval] over the sequences that",
                "reach the bin:",
                "",
                header,
                "|---|---:|" + "---:|" * len(curves),
            ]
            for i in range(len(first["all"])):
                cells = [
                    _ci(c["all"][i]["mean"], *c["all"][i]["ci"]) if i < len(c["all"]) else "-" for c in curves.values()
                ]
                lines.append(
                    f"| {i * first['bin_seconds']:g}-{(i + 1) * first['bin_seconds']:g} | "
                    f"{first['all'][i]['n']} | " + " | ".join(cells) + " |"
                )
            lines += ["", "![NLL by position](nll_by_position.png)", ""]
    # generation
    table = metric_table(data["generate"], "nucleus")
    systems = [k for k in kinds if k in table] + [r for r in ("real_decoded", "real_original") if r in table]
    if table:
        prompts = data["prompts"]
        lengths = sorted({p["prompt_seconds"] for p in prompts})
        lines += [
            "## Continuations",
            "",
            f"{len(prompts)} held-out prompts ("
            + ", ".join(f"{sum(p['prompt_seconds'] == s for p in prompts)} of {s:.0f} s" for s in lengths)
            + f"), each continued for {data['generate'][0]['continuation_seconds']:g} s; metrics over "
            f"{data['generate'][0].get('window_seconds', 5.0):g} s windows",
            "(`window_metrics.continuation_metrics`); mean [95% bootstrap interval] over prompts. Main setting:",
            "nucleus sampling, top_p 0.9, temperature 1.0.",
            "",
        ]
        lines += ["| system | " + " | ".join(m[1] for m in METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for system in systems:
            cells = [_ci(*interval(table[system].get(m, {}).values())) for m, _, _ in METRICS]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines += ["", "Better: " + "; ".join(f"{label}: {better}" for _, label, better in METRICS) + ".", ""]
        lines += [
            "Speaker similarity to the prompt by prompt length (main setting):",
            "",
            "| system | " + " | ".join(f"{s:.0f} s prompt" for s in lengths) + " |",
            "|---|" + "---:|" * len(lengths),
        ]
        by_prompt = {p["id"]: p["prompt_seconds"] for p in prompts}
        for system in systems:
            values = table[system].get("speaker_similarity_mean", {})
            cells = [_ci(*interval([v for k, v in values.items() if by_prompt.get(k) == s])) for s in lengths]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines += [""]
        if "lact" in table:
            lines += [
                "LaCT minus each baseline (paired over prompts, main setting):",
                "",
                "| metric | " + " | ".join(f"lact - {b}" for b in baselines if b in table) + " |",
                "|---|" + "---:|" * len([b for b in baselines if b in table]),
            ]
            for metric, label, _ in METRICS:
                cells = []
                for b in baselines:
                    if b in table:
                        d = paired_difference(table["lact"].get(metric, {}), table[b].get(metric, {}))
                        cells.append(f"{_ci(d['diff'], *d['ci'])} (n={d['n']})")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines += [""]
        others = sorted({i["setting"] for i in data["generate"]} - {"nucleus", "-"})
        if others:
            subset = sorted({i["prompt"] for i in data["generate"] if i["setting"] in others})
            lines += [
                f"Other decoding settings, on {len(subset)} prompts ({', '.join(subset)}): speaker similarity / "
                "DNSMOS ovrl / pitch jump, mean over those prompts:",
                "",
                "| model | " + " | ".join(["nucleus"] + others) + " |",
                "|---|" + "---:|" * (len(others) + 1),
            ]
            for kind in kinds:
                cells = []
                for setting in ["nucleus"] + others:
                    rows = [
                        i
                        for i in data["generate"]
                        if i["system"] == kind and i["setting"] == setting and i["prompt"] in subset
                    ]
                    vals = [
                        np.nanmean([r["metrics"].get(m, math.nan) for r in rows]) if rows else math.nan
                        for m in ("speaker_similarity_mean", "dnsmos_ovrl_mean", "pitch_jump_semitones_mean")
                    ]
                    cells.append(" / ".join(_fmt(v, 2) for v in vals))
                lines.append(f"| {kind} | " + " | ".join(cells) + " |")
            lines += [""]
    # cost
    if data["cost"]:
        contexts = sorted({p["context_seconds"] for e in data["cost"].values() for p in e["points"]})
        lines += [
            "## Cost of decoding after a long context",
            "",
            f"Greedy decoding of {next(iter(data['cost'].values()))['new_frames']} frames after random contexts "
            "(`decode_cost.decoding_cost`); seconds per generated second / cache MiB:",
            "",
            "| model | " + " | ".join(f"{c:g} s" for c in contexts) + " |",
            "|---|" + "---:|" * len(contexts),
        ]
        for kind, entry in data["cost"].items():
            points = {p["context_seconds"]: p for p in entry["points"]}
            cells = []
            for c in contexts:
                p = points.get(c)
                if p is None:
                    cells.append("-")
                elif "error" in p:
                    cells.append("does not fit")
                else:
                    cells.append(f"{p['seconds_per_generated_second']:.2f} / {p['cache_bytes'] / 2**20:.2f}")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines += ["", "![cost](cost.png)", ""]
    if data["stream"]:
        lines += [
            "## Streaming generation",
            "",
            "`streaming.stream_generate_audio` after the first prompt, nucleus sampling:",
            "",
            "| model | prompt | chunk frames | time to first audio (s) | mean chunk latency (s) | real-time factor |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for kind, s in data["stream"].items():
            lines.append(
                f"| {kind} | {s['prompt']} | {s['chunk_frames']} | {_fmt(s['time_to_first_audio_s'], 2)} | "
                f"{_fmt(s['mean_chunk_latency_s'], 2)} | {_fmt(s['real_time_factor'], 2)} |"
            )
        lines += [""]
    samples = [i for i in data["generate"] if i.get("sample")]
    if samples:
        lines += [
            "## Listening samples",
            "",
            "Each: the prompt's last seconds then the continuation, decoded together (16 kHz); the line on the",
            "spectrogram marks where the continuation starts.",
            "",
        ]
        for item in samples:
            lines.append(
                f"- {item['prompt']} / {item['system']}: [wav]({item['sample']['wav']}) "
                f"![{item['system']}]({item['sample']['png']})"
            )
        lines += [""]
    lines += _goal(data, table, plateaus, curves)
    _plots(results, data, curves)
    path = results / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _goal(data: dict, table: dict, plateaus: dict, curves: dict) -> list[str]:
    lines = ["## The goal, as measured", ""]
    window = "baseline_sliding_window"
    if "lact" in plateaus and window in plateaus:
        lact, win = plateaus["lact"], plateaus[window]
        entry = data["nll"]["lact"]
        matrix = nll_matrix(entry)
        reach = [i for i, p in enumerate(curves["lact"]["all"]) if p["n"] >= 2]
        last = reach[-1] if reach else win["bin"]
        both = np.isfinite(matrix[:, win["bin"]]) & np.isfinite(matrix[:, last])
        mean, low, high = (
            seed_interval(matrix[both, last] - matrix[both, win["bin"]]) if both.any() else (math.nan,) * 3
        )
        verdict = "yes" if lact["bin"] > win["bin"] and high < 0 else "no"
        lines.append(
            f"- LaCT's NLL keeps falling past the window baseline's plateau: **{verdict}**. The window baseline stops "
            f"improving after {win['seconds']:.0f} s, LaCT after {lact['seconds']:.0f} s; LaCT's NLL at "
            f"{last * entry['bin_seconds']:.0f}-{(last + 1) * entry['bin_seconds']:.0f} s minus at the window "
            f"baseline's plateau bin: {_ci(mean, low, high)} nats/code (n={int(both.sum())} sequences)."
        )
    else:
        lines.append("- NLL by position: not measured for both LaCT and the window baseline.")
    metric = "speaker_similarity_slope_per_minute"
    if "lact" in table:
        for b in [k for k in table if k not in ("lact", "real_decoded", "real_original")]:
            lact_abs = {k: abs(v) for k, v in table["lact"].get(metric, {}).items()}
            base_abs = {k: abs(v) for k, v in table[b].get(metric, {}).items()}
            d = paired_difference(lact_abs, base_abs)
            raw = paired_difference(table["lact"].get(metric, {}), table[b].get(metric, {}))
            verdict = "yes" if d["ci"][1] < 0 else "no"
            lines.append(
                f"- LaCT's speaker-similarity slope flatter than {b}'s: **{verdict}**: |slope| difference "
                f"{_ci(d['diff'], *d['ci'])} per minute, slope difference {_ci(raw['diff'], *raw['ci'])} (n={d['n']} "
                f"prompts; slopes over {data['generate'][0]['continuation_seconds']:.0f} s continuations, "
                "not 5 minutes)."
            )
    else:
        lines.append("- Speaker-similarity slopes: no LaCT continuations scored.")
    if "lact" in data["cost"]:
        pts = [p for p in data["cost"]["lact"]["points"] if "error" not in p]
        if pts:
            sizes = [p["cache_bytes"] for p in pts]
            growth = {k: [p["cache_bytes"] for p in e["points"] if "error" not in p] for k, e in data["cost"].items()}
            ratios = ", ".join(f"{k} x{v[-1] / max(v[0], 1):.1f}" for k, v in growth.items() if v)
            # LaCT's cache = fast weights + attention window + the pending (not yet applied) chunk, which holds
            # (context + new frames) mod chunk frames: a sawtooth of at most one chunk, not growth. Constant: within
            # a factor 2 over every context, and growing less than a tenth as much as full attention's KV cache.
            spread = max(sizes) / max(min(sizes), 1)
            full = growth.get("baseline_transformer") or []
            full_spread = full[-1] / max(full[0], 1) if full else math.inf
            constant = spread <= 2.0 and (spread - 1) <= 0.1 * (full_spread - 1)
            lines.append(
                f"- Constant memory: **{'yes' if constant else 'no'}**: LaCT's cache is {min(sizes) / 2**20:.2f}-"
                f"{max(sizes) / 2**20:.2f} MiB from {pts[0]['context_seconds']:.0f} s to "
                f"{pts[-1]['context_seconds']:.0f} s of context (largest / smallest context: {ratios}); its spread is "
                "the pending chunk of up to `lact_chunk_size` frames, which empties at every update (criterion: "
                "within 2x at every context and under a tenth of full attention's growth)."
            )
    return lines + [""]
