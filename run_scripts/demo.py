"""`make demo`: a small corpus, the shipped checkpoint offline and streamed, two tiny models trained, one table.

    python run_scripts/demo.py [--hours 1] [--steps 600] [--checkpoint model_cards/checkpoints/lact_small_ctc]

1. builds a small corpus (``make_corpus.py --hours H``) under ``outputs/demo/corpus``;
2. transcribes held-out and real speech with the shipped checkpoint, offline (one call) and streamed
   one LaCT chunk at a time, printing each chunk's compute latency;
3. trains a tiny LaCT model and a tiny full-attention baseline with the same data, optimiser and
   step budget (``run_scripts/configs/tiny_cpu.yaml``);
4. evaluates all of them (``eval/asr_eval.py``: WER/CER with 95% bootstrap intervals, RTF, parameters)
   and prints the table and the path of the saved plot.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(*args) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def transcribe_shipped(checkpoint: Path, corpus: Path, count: int) -> None:
    """Offline and streamed transcripts of ``count`` utterances of two held-out splits."""
    import datasets
    import numpy as np
    import soundfile as sf
    import torch
    from transformers import AutoModelForCTC, AutoProcessor

    import modeling_lact_audio  # noqa: F401

    model = AutoModelForCTC.from_pretrained(checkpoint).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    config = model.config
    piece = config.lact_chunk_size * config.total_stride  # mel frames per streamed chunk: one LaCT chunk
    print(
        f"\nshipped checkpoint {checkpoint}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"streamed in chunks of {piece} frames ({piece * config.feature_hop_length / 16000:.2f} s of audio)"
    )
    dataset = datasets.load_from_disk(str(corpus))
    for split in ("test_unseen_speakers", "test_real"):
        rows = dataset[split].cast_column("audio", datasets.Audio(decode=False)).select(range(count))
        for cell, text in zip(rows["audio"], rows["text"]):
            audio = sf.read(__import__("io").BytesIO(cell["bytes"]), dtype="float32")[0]
            # Features are normalised over the whole utterance (as in training); only the model streams.
            features = processor(audio=audio, sampling_rate=16000, return_tensors="pt")["input_features"]
            with torch.no_grad():
                start = time.perf_counter()
                offline = processor.batch_decode(model(input_features=features).logits.argmax(-1))[0]
                offline_ms = 1000 * (time.perf_counter() - start)
                cache, ids, latencies = None, [], []
                for s in range(0, features.shape[1], piece):
                    start = time.perf_counter()
                    out = model(input_features=features[:, s : s + piece], past_key_values=cache, use_cache=True)
                    latencies.append(1000 * (time.perf_counter() - start))
                    cache = out.past_key_values
                    ids.append(out.logits.argmax(-1))
                streamed = processor.batch_decode(torch.cat(ids, 1))[0]
            print(f"\n[{split}] {len(audio) / 16000:.2f} s  reference: {text}")
            print(f"  offline  ({offline_ms:6.1f} ms): {offline}")
            print(f"  streamed (chunks: {', '.join(f'{x:.1f}' for x in latencies)} ms): {streamed}")
            print(f"  streamed == offline: {streamed == offline}; mean chunk latency {np.mean(latencies):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="synthetic hours of the demo corpus")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each tiny model")
    parser.add_argument("--checkpoint", default="model_cards/checkpoints/lact_small_ctc")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--max_examples", type=int, default=150, help="utterances per test split in the table")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    out = ROOT / args.output_dir
    corpus = out / "corpus"
    began = time.time()

    run(PY, "run_scripts/make_corpus.py", "--output", corpus, "--hours", args.hours)
    checkpoint = ROOT / args.checkpoint
    models = []
    if (checkpoint / "config.json").exists():
        transcribe_shipped(checkpoint, corpus, count=2)
        models.append(f"shipped_{checkpoint.name}={checkpoint}")
    else:
        print(f"\nno shipped checkpoint at {checkpoint}: skipping the offline/streamed transcription")

    for model in ("lact", "baseline_transformer"):
        run(
            PY,
            "run_scripts/train.py",
            "run_scripts/configs/tiny_cpu.yaml",
            "--model",
            model,
            "--corpus",
            corpus,
            "--output_dir",
            out / f"tiny_{model}",
            "--max_steps",
            args.steps,
            "--eval_steps",
            max(1, args.steps // 3),
            "--save_steps",
            max(1, args.steps // 3),
        )
        models.append(f"tiny_{model}={out / f'tiny_{model}' / 'best'}")

    run(
        PY,
        "eval/asr_eval.py",
        "--models",
        *models,
        "--corpus",
        corpus,
        "--splits",
        "test_seen",
        "test_unseen_speakers",
        "test_noise",
        "test_real",
        "--max_examples",
        args.max_examples,
        "--output_dir",
        out / "eval",
    )
    print(f"demo finished in {(time.time() - began) / 60:.1f} min; plot: {out / 'eval' / 'results.png'}")


if __name__ == "__main__":
    main()
