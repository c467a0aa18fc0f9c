"""`make demo`: a small corpus, the shipped recognisers on real speech, two tiny models trained, one table.

    python run_scripts/demo.py [--hours 1] [--steps 600] [--recogniser model_cards/checkpoints/lact_whisper_ctc]

1. builds a small corpus (``make_corpus.py --hours H``, in this process) under ``outputs/demo/corpus``;
2. transcribes real speech (``test_real``: recordings the synthetic training voices never include) with the
   shipped recogniser ``lact_whisper_ctc`` (LaCT blocks on Whisper tiny.en's encoder), greedy, with its
   word LM and jointly with its shipped Whisper decoder, and prints WER/CER with 95% intervals;
3. transcribes held-out and real speech with the streaming checkpoint, offline (one call of
   ``modeling_lact_audio.asr.Transcriber``) and streamed one LaCT chunk at a time, printing each chunk's
   compute latency;
4. trains a tiny LaCT model and a tiny full-attention baseline with the same data, optimiser and
   step budget (``run_scripts/configs/tiny_cpu.yaml``);
5. evaluates all of them (``eval/asr_eval.py``: WER/CER with 95% bootstrap intervals, RTF, parameters)
   and prints the table and the path of the saved plot.

Steps 4 and 5 run the training and evaluation commands as child processes, as a user would type them.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from modeling_lact_audio.asr import Transcriber
from modeling_lact_audio.corpus.build import main as make_corpus
from modeling_lact_audio.data import SAMPLING_RATE, load_split, read_audio

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(*args) -> None:
    """Run one command from the repository root, echoing it; raises CalledProcessError if it fails."""
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def transcribe_shipped(checkpoint: Path, corpus: Path, count: int) -> list[dict]:
    """Offline and streamed transcripts of the first ``count`` utterances of two held-out splits.

    Returns: one dict per utterance (split, reference, offline, streamed, chunk latencies in ms), also printed.
    """
    transcriber = Transcriber.from_pretrained(checkpoint)
    model, processor = transcriber.model, transcriber.processor
    config = model.config
    piece = config.lact_chunk_size * config.total_stride  # mel frames per streamed chunk: one LaCT chunk
    print(
        f"\nshipped checkpoint {checkpoint}: {transcriber.num_parameters / 1e6:.2f}M parameters, streamed in "
        f"chunks of {piece} frames ({piece * config.feature_hop_length / SAMPLING_RATE:.2f} s of audio)"
    )
    results = []
    for split in ("test_unseen_speakers", "test_real"):
        rows = load_split(str(corpus), split, max_rows=count)
        for cell, text in zip(rows["audio"], rows["text"]):
            audio = read_audio(cell)
            start = time.perf_counter()
            (offline,) = transcriber([audio])
            offline_ms = 1000 * (time.perf_counter() - start)
            # Features are normalised over the whole utterance (as in training); only the model streams.
            features = processor(audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")["input_features"]
            cache, ids, latencies = None, [], []
            with torch.no_grad():
                for s in range(0, features.shape[1], piece):
                    start = time.perf_counter()
                    out = model(input_features=features[:, s : s + piece], past_key_values=cache, use_cache=True)
                    latencies.append(1000 * (time.perf_counter() - start))
                    cache = out.past_key_values
                    ids.append(out.logits.argmax(-1))
            streamed = processor.batch_decode(torch.cat(ids, 1))[0]
            print(f"\n[{split}] {len(audio) / SAMPLING_RATE:.2f} s  reference: {text}")
            print(f"  offline  ({offline_ms:6.1f} ms): {offline}")
            print(f"  streamed (chunks: {', '.join(f'{x:.1f}' for x in latencies)} ms): {streamed}")
            print(f"  streamed == offline: {streamed == offline}; mean chunk latency {np.mean(latencies):.1f} ms")
            results.append(dict(split=split, reference=text, offline=offline, streamed=streamed, latencies=latencies))
    return results


def transcribe_real_speech(folder: Path, corpus: Path, count: int) -> dict:
    """WER/CER (95% intervals) of the recogniser in ``folder`` on the first ``count`` utterances of
    ``test_real``, greedy and, when the folder ships them, with its word LM and jointly with its attention
    decoder (Whisper's decoder with CTC prefix scores); printed with a few examples.

    Returns ``{"greedy": score, "lm": score or None, "joint": score or None}`` (``score_split`` entries).
    """
    from modeling_lact_audio.asr import normalize_for_scoring
    from modeling_lact_audio.recogniser.attention_decoder import ATTENTION_DECODER_FOLDER, DECODER_WEIGHTS
    from modeling_lact_audio.recogniser.evaluation import score_split
    from modeling_lact_audio.recogniser.lm import LM_FOLDER

    rows = load_split(str(corpus), "test_real", max_rows=count)
    audio = [read_audio(cell) for cell in rows["audio"]]
    references = [normalize_for_scoring(t) for t in rows["text"]]
    seconds = sum(len(a) for a in audio) / SAMPLING_RATE
    print(f"\nrecogniser {folder}: {len(audio)} real recordings of test_real ({seconds / 60:.1f} min of audio)")
    modes = {"greedy": {}}
    if (folder / LM_FOLDER / "lm.arpa").exists():
        modes["lm"] = {"use_lm": True}
    if (folder / ATTENTION_DECODER_FOLDER / DECODER_WEIGHTS).exists():
        modes["joint"] = {"use_attention_decoder": True}
    scores = {"greedy": None, "lm": None, "joint": None}
    for mode, options in modes.items():
        transcriber = Transcriber.from_pretrained(folder, **options)
        start, texts = time.perf_counter(), []
        for i in range(0, len(audio), 8):
            texts += transcriber(audio[i : i + 8])
        elapsed = time.perf_counter() - start
        hypotheses = [normalize_for_scoring(t) for t in texts]
        score = scores[mode] = score_split(references, hypotheses)
        (wl, wh), (cl, ch) = score["wer_ci"], score["cer_ci"]
        print(
            f"  {mode:6s}: WER {100 * score['wer']:.1f}% [{100 * wl:.1f}, {100 * wh:.1f}]  "
            f"CER {100 * score['cer']:.1f}% [{100 * cl:.1f}, {100 * ch:.1f}]  RTF {elapsed / seconds:.3f}"
        )
        for ref, hyp in list(zip(references, hypotheses))[:3]:
            print(f"    ref: {ref}\n    hyp: {hyp}")
    return scores


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: runs the four steps above."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="synthetic hours of the demo corpus")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each tiny model")
    parser.add_argument("--checkpoint", default="model_cards/checkpoints/lact_small_ctc")
    parser.add_argument("--recogniser", default="model_cards/checkpoints/lact_whisper_ctc")
    parser.add_argument("--real_examples", type=int, default=100, help="test_real recordings the recogniser reads")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--max_examples", type=int, default=150, help="utterances per test split in the table")
    args = parser.parse_args(argv)
    # For the training and evaluation child processes: both cores, no oversubscription.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    out = ROOT / args.output_dir
    corpus = out / "corpus"
    began = time.time()

    make_corpus(["--output", str(corpus), "--hours", str(args.hours)])
    recogniser = ROOT / args.recogniser
    if (recogniser / "config.json").exists():
        transcribe_real_speech(recogniser, corpus, args.real_examples)
    else:
        print(f"\nno recogniser at {recogniser}: skipping the real-speech transcription")
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
