"""Evaluate saved ASR model folders on corpus splits: WER/CER with 95% bootstrap intervals, real-time factor.

The library behind ``eval/asr_eval.py``: :func:`evaluate_models` transcribes with the shared
:class:`~modeling_lact_audio.asr.Transcriber`, normalises both sides with
:func:`~modeling_lact_audio.asr.normalize_for_scoring` and scores with the local WER/CER modules;
:func:`write_report` writes ``results.json``, ``results.md`` and ``results.png``.
"""

import json
import time
from pathlib import Path

import datasets
import numpy as np

from .asr import Transcriber, load_metrics, normalize_for_scoring, per_utterance_errors, rate_interval
from .data import SAMPLING_RATE, load_split, read_audio


def evaluate_split(transcriber: Transcriber, rows: datasets.Dataset, batch_size: int, metrics, samples: int) -> dict:
    """Transcribe ``rows`` (longest first, ``batch_size`` at a time) and score them.

    Returns:
        ``examples``, ``audio_seconds``, corpus-level ``wer`` and ``cer`` with their 95% intervals
        ``wer_ci95`` / ``cer_ci95`` (``(low, high)``, ``samples`` bootstrap resamples of the utterances),
        ``rtf`` (transcription seconds / audio seconds) and three reference/prediction ``samples``.
    """
    audio = [read_audio(cell) for cell in rows["audio"]]
    references = [normalize_for_scoring(t) for t in rows["text"]]
    order = np.argsort([-len(a) for a in audio], kind="stable")
    predictions = [""] * len(audio)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        picked = order[i : i + batch_size]
        for j, text in zip(picked, transcriber([audio[j] for j in picked])):
            predictions[j] = normalize_for_scoring(text)
    seconds = time.perf_counter() - start
    audio_seconds = sum(len(a) for a in audio) / SAMPLING_RATE
    counts = per_utterance_errors(references, predictions)
    wer, cer = metrics
    return {
        "examples": len(rows),
        "audio_seconds": audio_seconds,
        "wer": wer.compute(predictions=predictions, references=references),
        "wer_ci95": rate_interval(counts["word_errors"], counts["words"], samples, seed=0),
        "cer": cer.compute(predictions=predictions, references=references),
        "cer_ci95": rate_interval(counts["char_errors"], counts["chars"], samples, seed=1),
        "rtf": seconds / max(audio_seconds, 1e-9),
        "samples": [{"reference": r, "prediction": p} for r, p in list(zip(references, predictions))[:3]],
    }


def evaluate_models(
    models: dict[str, str],
    corpus: str,
    splits: list[str],
    max_examples: int | None = None,
    batch_size: int = 16,
    samples: int = 1000,
    device: str = "cpu",
) -> dict:
    """Every model folder on every split: ``{name: {"folder", "kind", "num_parameters", "splits": {split:
    evaluate_split(...)}}}``. ``max_examples`` takes a fixed random subset of each split (seed 0).

    Raises:
        ValueError: a split that is not in the corpus (from ``load_split``).
        FileNotFoundError: a model folder that does not exist.
    """
    metrics = load_metrics()
    results = {}
    for name, folder in models.items():
        transcriber = Transcriber.from_pretrained(folder, device)
        entry = {"folder": folder, "kind": transcriber.kind, "num_parameters": transcriber.num_parameters, "splits": {}}
        for split in splits:
            rows = load_split(corpus, split, max_rows=max_examples, shuffle_seed=0)
            entry["splits"][split] = r = evaluate_split(transcriber, rows, batch_size, metrics, samples)
            print(
                f"{name:24s} {split:22s} WER {100 * r['wer']:6.1f}% [{100 * r['wer_ci95'][0]:.1f}, "
                f"{100 * r['wer_ci95'][1]:.1f}]  CER {100 * r['cer']:6.1f}%  RTF {r['rtf']:.3f}",
                flush=True,
            )
        results[name] = entry
    return results


def markdown_table(results: dict) -> str:
    """One row per model and split: parameters, utterances, WER and CER in % with intervals, RTF."""
    lines = [
        "| model | parameters | split | utterances | WER % [95% CI] | CER % [95% CI] | RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        for split, r in entry["splits"].items():
            lines.append(
                f"| {name} | {entry['num_parameters'] / 1e6:.2f}M | {split} | {r['examples']} | "
                f"{100 * r['wer']:.1f} [{100 * r['wer_ci95'][0]:.1f}, {100 * r['wer_ci95'][1]:.1f}] | "
                f"{100 * r['cer']:.1f} [{100 * r['cer_ci95'][0]:.1f}, {100 * r['cer_ci95'][1]:.1f}] | {r['rtf']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """WER (top) and CER (bottom) per split with 95% intervals; training loss and the validation curves
    when a run log is next to the model. CER carries the signal while WER sits at 100% early in training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {n: Path(e["folder"]).parent / "log.jsonl" for n, e in results.items()}
    logs = {n: p for n, p in logs.items() if p.exists()}
    fig, axes = plt.subplots(2, 3 if logs else 1, figsize=(16 if logs else 7, 8), squeeze=False)
    names = list(results)
    splits = list(dict.fromkeys(s for e in results.values() for s in e["splits"]))  # first-seen order
    width = 0.8 / max(1, len(names))
    for row, metric in enumerate(("wer", "cer")):
        ax = axes[row, 0]
        for i, name in enumerate(names):
            rs = [results[name]["splits"].get(s) for s in splits]
            x = np.arange(len(splits)) + i * width
            val = np.array([100 * r[metric] if r else np.nan for r in rs])
            low = np.array([100 * (r[metric] - r[f"{metric}_ci95"][0]) if r else 0 for r in rs])
            high = np.array([100 * (r[f"{metric}_ci95"][1] - r[metric]) if r else 0 for r in rs])
            ax.bar(x, val, width, yerr=[low, high], capsize=3, label=name)
        ax.set_xticks(np.arange(len(splits)) + width * (len(names) - 1) / 2, splits, rotation=20, fontsize=8)
        ax.set_ylabel(f"{metric.upper()} % (95% bootstrap CI)")
        ax.set_ylim(0, 150)  # untrained models insert without bound; the interesting range is below 100%
        ax.legend(fontsize=8)
    if logs:
        for name, log in logs.items():
            rows = [json.loads(line) for line in log.read_text().splitlines()]
            steps = [r["step"] for r in rows if "loss" in r]
            axes[0, 1].plot(steps, [r["loss"] for r in rows if "loss" in r], label=name)
            for row, metric in enumerate(("wer", "cer")):
                evals = [r for r in rows if "eval" in r and metric in r["eval"]]
                if evals:
                    axes[row, 2].plot(
                        [r["step"] for r in evals], [100 * r["eval"][metric] for r in evals], "o-", label=name
                    )
        axes[0, 1].set(xlabel="step", ylabel="training loss", yscale="log")
        axes[0, 1].legend(fontsize=8)
        axes[1, 1].axis("off")
        for row, metric in enumerate(("wer", "cer")):
            axes[row, 2].set(xlabel="step", ylabel=f"validation {metric.upper()} %", ylim=(0, 150))
            axes[row, 2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict, output_dir: str) -> Path:
    """``results.json``, ``results.md`` (the table) and ``results.png`` (the plot) in ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_table(results))
    plot(results, out / "results.png")
    return out
