"""Evaluate saved ASR model folders on corpus splits: WER/CER with 95% bootstrap intervals, real-time factor.

    python eval/asr_eval.py --models lact=outputs/small_cpu/lact/best base=outputs/small_cpu/baseline_transformer/best \
        --corpus data/corpus --splits test_seen test_unseen_speakers test_noise test_real \
        --max_examples 200 --output_dir eval/results/small_cpu

Each model folder is what run_scripts/train.py saves (``save_pretrained`` model + processor): a
lact-audio or Wav2Vec2 CTC model, a Whisper trained on characters, or a converted pretrained Whisper.
Writes ``results.json``, ``results.md`` (one table) and ``results.png`` (WER per split with its
interval; training curves when the folder's run has a ``log.jsonl``). Texts are normalised with
``normalize_text`` on both sides before scoring.
"""

import argparse
import json
import time
from pathlib import Path

import datasets
import evaluate
import numpy as np

import modeling_lact_audio  # noqa: F401  (registers the lact-audio Auto classes)
from modeling_lact_audio.asr import Transcriber, per_utterance_errors
from modeling_lact_audio.asr import normalize_for_scoring as normalize_text
from modeling_lact_audio.data import SAMPLING_RATE, load_split, read_audio

METRICS = Path(__file__).resolve().parent / "metrics"


def bootstrap_ci(errors: np.ndarray, totals: np.ndarray, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``sum(errors) / sum(totals)`` over utterances resampled with replacement."""
    if len(errors) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(errors), size=(samples, len(errors)))
    rates = errors[picks].sum(1) / np.maximum(totals[picks].sum(1), 1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def evaluate_split(transcriber: Transcriber, rows: datasets.Dataset, batch_size: int, metrics, samples: int) -> dict:
    """Transcribe ``rows`` (longest first) and score them; RTF = transcription seconds / audio seconds."""
    audio = [read_audio(cell) for cell in rows["audio"]]
    references = [normalize_text(t) for t in rows["text"]]
    order = np.argsort([-len(a) for a in audio], kind="stable")
    predictions = [""] * len(audio)
    start = time.perf_counter()
    for i in range(0, len(order), batch_size):
        picked = order[i : i + batch_size]
        for j, text in zip(picked, transcriber([audio[j] for j in picked])):
            predictions[j] = normalize_text(text)
    seconds = time.perf_counter() - start
    counts = per_utterance_errors(references, predictions)
    wer, cer = metrics
    return {
        "examples": len(rows),
        "audio_seconds": sum(len(a) for a in audio) / SAMPLING_RATE,
        "wer": wer.compute(predictions=predictions, references=references),
        "wer_ci95": bootstrap_ci(counts["word_errors"], counts["words"], samples),
        "cer": cer.compute(predictions=predictions, references=references),
        "cer_ci95": bootstrap_ci(counts["char_errors"], counts["chars"], samples, seed=1),
        "rtf": seconds / max(sum(len(a) for a in audio) / SAMPLING_RATE, 1e-9),
        "samples": [{"reference": r, "prediction": p} for r, p in list(zip(references, predictions))[:3]],
    }


def markdown_table(results: dict) -> str:
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="FOLDER or NAME=FOLDER, one per model")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", default=["test_seen", "test_unseen_speakers", "test_noise", "test_real"])
    parser.add_argument("--max_examples", type=int, default=None, help="a fixed random subset of each split")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--output_dir", default="eval/results/asr")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    metrics = (evaluate.load(str(METRICS / "wer")), evaluate.load(str(METRICS / "cer")))
    results = {}
    for spec in args.models:
        name, _, folder = spec.rpartition("=")
        name = name or Path(folder).parent.name or folder
        transcriber = Transcriber.from_pretrained(folder, args.device)
        entry = {"folder": folder, "kind": transcriber.kind, "num_parameters": transcriber.num_parameters, "splits": {}}
        for split in args.splits:
            rows = load_split(args.corpus, split, max_rows=args.max_examples, shuffle_seed=0)
            entry["splits"][split] = r = evaluate_split(transcriber, rows, args.batch_size, metrics, args.bootstrap)
            print(
                f"{name:24s} {split:22s} WER {100 * r['wer']:6.1f}% [{100 * r['wer_ci95'][0]:.1f}, "
                f"{100 * r['wer_ci95'][1]:.1f}]  CER {100 * r['cer']:6.1f}%  RTF {r['rtf']:.3f}",
                flush=True,
            )
        results[name] = entry
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_table(results))
    plot(results, out / "results.png")
    print(markdown_table(results))
    print(f"plot: {(out / 'results.png').resolve()}")
    return results


if __name__ == "__main__":
    main()
