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
import io
import json
import time
from pathlib import Path

import datasets
import evaluate
import jiwer
import numpy as np
import soundfile as sf
import torch

import modeling_lact_audio  # noqa: F401  (registers the lact-audio Auto classes)
from modeling_lact_audio.processors import normalize_text

METRICS = Path(__file__).resolve().parent / "metrics"
SAMPLING_RATE = 16000


def bootstrap_ci(errors: np.ndarray, totals: np.ndarray, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``sum(errors) / sum(totals)`` over utterances resampled with replacement."""
    if len(errors) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(errors), size=(samples, len(errors)))
    rates = errors[picks].sum(1) / np.maximum(totals[picks].sum(1), 1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return float(low), float(high)


def per_utterance_errors(references: list[str], predictions: list[str]) -> dict[str, np.ndarray]:
    """Word and character edit counts and reference lengths, one entry per utterance."""
    out = {k: [] for k in ("word_errors", "words", "char_errors", "chars")}
    for ref, hyp in zip(references, predictions):
        w = jiwer.process_words(ref, hyp)
        c = jiwer.process_characters(ref, hyp)
        out["word_errors"].append(w.substitutions + w.deletions + w.insertions)
        out["words"].append(w.substitutions + w.deletions + w.hits)
        out["char_errors"].append(c.substitutions + c.deletions + c.insertions)
        out["chars"].append(c.substitutions + c.deletions + c.hits)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


class Transcriber:
    """Loads a saved folder and transcribes batches of 16 kHz float32 waveforms."""

    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoConfig, AutoModelForCTC, AutoProcessor

        self.folder, self.device = folder, torch.device(device)
        config = AutoConfig.from_pretrained(folder)
        if config.model_type == "whisper":
            from transformers import WhisperForConditionalGeneration

            self.model = WhisperForConditionalGeneration.from_pretrained(folder)
            vocab = Path(folder) / "vocab.json"
            chars = json.loads(vocab.read_text()) if vocab.exists() else {}
            self.kind = "whisper_chars" if len(chars) == config.vocab_size - 2 else "whisper_pretrained"
            if self.kind == "whisper_pretrained":
                from transformers import WhisperProcessor

                self.processor = WhisperProcessor.from_pretrained(folder)
            else:
                self.processor = AutoProcessor.from_pretrained(folder)
        else:
            self.kind = "ctc"
            self.model = AutoModelForCTC.from_pretrained(folder)
            self.processor = AutoProcessor.from_pretrained(folder)
        self.model.to(self.device).eval()
        self.num_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @torch.no_grad()
    def __call__(self, audio: list[np.ndarray]) -> list[str]:
        if self.kind == "ctc":
            inputs = self.processor(audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            return self.processor.batch_decode(self.model(**inputs).logits.argmax(-1))
        if self.kind == "whisper_pretrained":
            features = self.processor.feature_extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
            ids = self.model.generate(features["input_features"].to(self.device), max_new_tokens=200)
            return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        frames = 2 * self.model.config.max_source_positions
        features = self.processor.feature_extractor(
            audio,
            sampling_rate=SAMPLING_RATE,
            return_tensors="pt",
            padding="max_length",
            max_length=frames,
            truncation=True,
        )["input_features"].transpose(1, 2)
        return self._greedy_chars(features.to(self.device))

    def _greedy_chars(self, features: torch.Tensor, max_new_tokens: int = 400) -> list[str]:
        config = self.model.config
        encoder_outputs = self.model.get_encoder()(features)
        B = features.shape[0]
        last = torch.full((B, 1), config.decoder_start_token_id, dtype=torch.long, device=features.device)
        done = torch.zeros(B, dtype=torch.bool, device=features.device)
        past, out = None, [[] for _ in range(B)]
        for _ in range(max_new_tokens):
            step = self.model(
                encoder_outputs=encoder_outputs, decoder_input_ids=last, past_key_values=past, use_cache=True
            )
            past, last = step.past_key_values, step.logits[:, -1:].argmax(-1)
            for b in range(B):
                if not done[b] and last[b, 0] != config.eos_token_id:
                    out[b].append(int(last[b, 0]))
            done |= last[:, 0] == config.eos_token_id
            if bool(done.all()):
                break
        return [self.processor.tokenizer.decode(x, group_tokens=False) for x in out]


def load_rows(corpus: str, split: str, max_examples: int | None) -> datasets.Dataset:
    dataset = datasets.load_from_disk(corpus)
    if split not in dataset:
        raise SystemExit(f"split {split!r} is not in {corpus!r}; it has {sorted(dataset)}")
    rows = dataset[split]
    if max_examples is not None and len(rows) > max_examples:
        rows = rows.shuffle(seed=0).select(range(max_examples))  # a fixed random subset, not the first speakers
    return rows.cast_column("audio", datasets.Audio(decode=False))


def read_audio(cell: dict) -> np.ndarray:
    audio, rate = sf.read(
        io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"], dtype="float32", always_2d=True
    )
    if rate != SAMPLING_RATE:
        raise ValueError(f"audio at {rate} Hz; expected {SAMPLING_RATE}")
    return audio.mean(axis=1)


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
        transcriber = Transcriber(folder, args.device)
        entry = {"folder": folder, "kind": transcriber.kind, "num_parameters": transcriber.num_parameters, "splits": {}}
        for split in args.splits:
            rows = load_rows(args.corpus, split, args.max_examples)
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
