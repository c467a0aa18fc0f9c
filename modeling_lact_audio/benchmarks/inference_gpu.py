"""Half-precision inference of a CTC checkpoint on a GPU against fp32 (issue 17): logits, transcripts, speed.

For each precision (fp32, bf16, fp16; ``quantization.to_half_precision``: the linear layers, attention and
activations in half precision, the fast weights and the LaCT op in fp32) the checkpoint transcribes every
recording greedily, one at a time. Recorded per precision: the largest relative logit error against fp32,
how many greedy transcripts equal fp32's, the character error rate against fp32's transcripts (and against
the reference texts when given), and the real-time factor (synchronised wall time of the forward / seconds
of audio, the median of ``--repeats`` passes over all recordings after one warm-up pass).

Recordings come as one ``.npz`` file (``--audio``): ``audio_<i>`` float32 arrays at 16 kHz and an optional
``texts`` array of reference strings; without it, seeded synthetic audio is used (transcripts then only
compare precisions with each other).

    python -m modeling_lact_audio.benchmarks.inference_gpu --model model_cards/checkpoints/lact_small_ctc \\
        --audio speech.npz --output DIR
    python -m modeling_lact_audio.benchmarks.inference_gpu --dry-run --output DIR   # CPU, emulated half precision
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torchaudio.functional import edit_distance
from transformers import AutoModelForCTC, AutoProcessor

from ..quantization import HALF_PRECISIONS, to_half_precision

SAMPLING_RATE = 16000
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "model_cards" / "checkpoints" / "lact_small_ctc"


def load_recordings(path: Path | None, count: int = 4, seconds: float = 5.0) -> tuple[list, list | None]:
    """``(audio, texts)``: float32 arrays ``[L]`` at 16 kHz from an ``.npz`` (``audio_<i>``, optional ``texts``),
    or ``count`` seeded synthetic recordings (noise-modulated tones) of ``seconds`` each with ``texts=None``."""
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"no recordings file at {path}: give an .npz with audio_0, audio_1, ... arrays")
        data = np.load(path)
        names = sorted((n for n in data.files if n.startswith("audio_")), key=lambda n: int(n.split("_")[1]))
        if not names:
            raise ValueError(f"{path} holds no audio_<i> arrays")
        texts = [str(t) for t in data["texts"]] if "texts" in data.files else None
        return [data[n].astype(np.float32) for n in names], texts
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    audio = [
        (0.1 * np.sin(2 * np.pi * (150 + 50 * i) * t) * (1 + rng.standard_normal(t.size) * 0.3)).astype(np.float32)
        for i in range(count)
    ]
    return audio, None


def character_error_rate(hypotheses: list, references: list) -> float:
    """Summed character edit distance over summed reference length (0 when the references are empty)."""
    errors = sum(edit_distance(list(r), list(h)) for h, r in zip(hypotheses, references))
    return errors / max(1, sum(len(r) for r in references))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def run_precision(
    model_dir: Path, precision: str, audio: list, processor, device: torch.device, repeats: int, allow_emulated: bool
) -> dict:
    """Logits, greedy transcripts and timing of one precision: ``{"logits": [...], "texts": [...], "rtf": float}``."""
    model = AutoModelForCTC.from_pretrained(model_dir).to(device).eval()
    dtype = torch.float32
    if precision != "fp32":
        model = to_half_precision(model, precision, allow_emulated=allow_emulated)
        dtype = HALF_PRECISIONS[precision]
    inputs = [processor(audio=a, sampling_rate=SAMPLING_RATE, return_tensors="pt") for a in audio]
    inputs = [
        {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in x.items()} for x in inputs
    ]
    logits = [model(**x).logits.float().cpu() for x in inputs]  # warm-up pass, and the outputs compared
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        for x in inputs:
            model(**x)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = sum(a.size for a in audio) / SAMPLING_RATE
    texts = [processor.batch_decode(out.argmax(-1))[0] for out in logits]
    return {"logits": logits, "texts": texts, "rtf": statistics.median(times) / seconds}


def main(argv=None) -> dict:
    """Command line; returns the JSON record written to ``OUTPUT/inference_gpu.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a CTC checkpoint folder")
    parser.add_argument("--audio", type=Path, default=None, help=".npz of audio_<i> arrays (16 kHz) and texts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true", help="CPU, half precision emulated: checks the steps")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --dry-run to check the steps on the CPU")
    if not (args.model / "config.json").is_file():
        parser.error(f"no checkpoint at {args.model} (a folder with config.json)")
    device = torch.device("cpu" if args.dry_run else "cuda")
    audio, references = load_recordings(args.audio, count=2 if args.dry_run else 4)
    processor = AutoProcessor.from_pretrained(args.model)
    runs = {
        p: run_precision(args.model, p, audio, processor, device, 1 if args.dry_run else args.repeats, args.dry_run)
        for p in ("fp32", *HALF_PRECISIONS)
    }
    fp32 = runs["fp32"]
    record = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run, half precision emulated)",
        "model": str(args.model),
        "recordings": len(audio),
        "audio_seconds": sum(a.size for a in audio) / SAMPLING_RATE,
        "references": references is not None,
        "precisions": {},
    }
    for name, run in runs.items():
        rel = max(
            float((out - ref).norm() / ref.norm().clamp(min=1e-12)) for out, ref in zip(run["logits"], fp32["logits"])
        )
        entry = {
            "max_relative_logit_error": rel,
            "transcripts_equal_to_fp32": sum(a == b for a, b in zip(run["texts"], fp32["texts"])),
            "cer_against_fp32": character_error_rate(run["texts"], fp32["texts"]),
            "rtf": run["rtf"],
            "finite": all(bool(torch.isfinite(out).all()) for out in run["logits"]),
        }
        if references is not None:
            entry["cer_against_references"] = character_error_rate(run["texts"], references)
        record["precisions"][name] = entry
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "inference_gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
