"""Quantised inference on the CPU: INT8 (torchao, FBGEMM) and bf16 against fp32 for the CTC recognisers and a generator.

    python eval/quantization_eval.py [--rows 100] [--model whisper=model_cards/checkpoints/lact_whisper_ctc ...]

For every model and mode (fp32, ``int8_dynamic``, ``int8_weight_only``, ``int8_dynamic_fbgemm``, and ``bf16`` where
the CPU has native bf16 (``to_half_precision``: fast weights fp32, the rest bf16); fp16, and bf16 on a CPU without it,
recorded with the reason they are not run):

- accuracy on every test split (the same fixed random ``--rows`` per split as the other evaluations): WER/CER
  greedy (and with the folder's word LM), the change against fp32 with a paired 95% bootstrap interval over
  utterances, its paired p-value, and how many transcripts changed at all;
- size: ``model.safetensors`` of the saved quantised folder (fp32: re-saved in fp32), bytes in memory;
- speed, one utterance at a time, modes interleaved so that load on the machine hits each alike: offline
  latency and real-time factor, streaming (models whose cache streams) chunk latency and RTF; peak resident
  memory of one offline call on the longest utterance;
- the saved quantised folder reloads (``load_quantized``) to the same outputs and runs in transformers'
  ASR pipeline; every evaluated model is the reloaded one;
- why the fast weights stay fp32: the fast-weight state stored in bf16/fp16/int8 between chunk updates (and the
  op's inputs rounded too), the logits' change, the update's rounding error and CER/WER against fp32;
- generator: a tiny ``LaCTAudioForCausalLM`` trained briefly here (no trained generator exists) on mel_rvq
  tokens of the corpus; NLL per token on test_seen in each mode with paired intervals, decode-step latency.

``int8_dynamic`` accuracy passes run torchao's int8 matmul through ``exact_emulated_int_mm`` (bit-identical
results, checked on every model; torch._int_mm has no fast kernel on an AVX2-only CPU); every latency is
measured with the real kernels. Writes ``results.json``, ``REPORT.md`` and ``quantization.png`` to ``--output``.
"""

import argparse
import copy
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from modeling_lact_audio.adaptation.statistics import relative_change_interval
from modeling_lact_audio.asr import Transcriber, as_model_inputs, normalize_for_scoring
from modeling_lact_audio.benchmarks.measure import PeakMemory, machine_info, release_memory, summarize, time_once
from modeling_lact_audio.data import SAMPLING_RATE, load_split, read_audio
from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer
from modeling_lact_audio.quantization import (
    FAST_WEIGHT_LAYERS,
    HALF_PRECISIONS,
    MODES,
    exact_emulated_int_mm,
    fast_weight_dtypes,
    half_precision_skip_reason,
    load_quantized,
    model_bytes,
    paired_difference,
    quantizable_linears,
    quantize_model,
    rounded_fast_weights,
    save_quantized,
    to_half_precision,
)
from modeling_lact_audio.recogniser.evaluation import paired_bootstrap_pvalue, score_split
from modeling_lact_audio.recogniser.training import greedy_texts

HALF_MODES = ("bf16",)  # whole-model half precision run as a system where the CPU has it natively (never fp16)
SPLITS = ["test_seen", "test_unseen_speakers", "test_noise", "test_domain", "test_real"]
DEFAULT_MODELS = ["whisper=model_cards/checkpoints/lact_whisper_ctc", "small=model_cards/checkpoints/lact_small_ctc"]
# Fast-weight storage experiment: (state format, op inputs rounded too); fp32 chunked is the simulation's check.
STATE_VARIANTS = [
    ("fp32", False),
    ("bf16", False),
    ("fp16", False),
    ("int8", False),
    ("bf16", True),
    ("fp16", True),
    ("int8", True),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, metavar="NAME=FOLDER", help="a saved CTC model")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", default=SPLITS)
    parser.add_argument("--rows", type=int, default=100, help="rows per test split (a fixed random subset)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=(*MODES, *HALF_MODES),
        default=None,
        help="modes compared with fp32 (default: every INT8 mode, and bf16 where this CPU has native bf16; e.g. "
        "only int8_dynamic_fbgemm for a larger sample)",
    )
    parser.add_argument("--no-lm", action="store_true", help="greedy only, even where the folder ships a word LM")
    parser.add_argument("--latency-rows", type=int, default=6, help="test_seen utterances timed one at a time")
    parser.add_argument("--fast-weight-rows", type=int, default=40, help="test_seen rows of the fast-weight study")
    parser.add_argument("--generator-steps", type=int, default=150, help="training steps of the tiny generator")
    parser.add_argument("--generator-rows", type=int, default=50, help="test_seen rows the generator NLL is on")
    parser.add_argument("--no-generator", action="store_true")
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="eval/results/quantization")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite REPORT.md and the plot from --output/results.json"
    )
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="re-measure only latency and memory of the models in --output/results.json (e.g. on a quiet machine)",
    )
    args = parser.parse_args(argv)
    native = [m for m in HALF_MODES if half_precision_skip_reason(m, "cpu") is None]
    if args.modes is None:
        args.modes = [*MODES, *native]
    for mode in set(args.modes) - set(MODES) - set(native):
        parser.error(f"--modes {mode}: {half_precision_skip_reason(mode, 'cpu')}")
    return args


# ---- data and transcription ----


def load_rows(corpus: str, split: str, rows: int) -> dict:
    """The fixed random subset of a split: ``audio`` (16 kHz float32 ``[L_i]``), normalised ``references``."""
    data = load_split(corpus, split, max_rows=rows, shuffle_seed=0)
    audio = [read_audio(c) for c in data["audio"]]
    return {
        "uids": list(data["uid"]) if "uid" in data.column_names else list(range(len(audio))),
        "audio": audio,
        "references": [normalize_for_scoring(t) for t in data["text"]],
        "seconds": sum(len(a) for a in audio) / SAMPLING_RATE,
    }


class KeepLogProbs:
    """A ``Transcriber`` decoder that keeps each utterance's log-probabilities ``[T'_i, V]`` and returns greedy
    transcripts, so that greedy and LM decoding share one forward."""

    def __init__(self, tokenizer):
        self.tokenizer, self.log_probs = tokenizer, []

    def __call__(self, log_probs, lengths):
        kept = [lp[:n] for lp, n in zip(log_probs, lengths.tolist())]
        self.log_probs += kept
        return greedy_texts(kept, self.tokenizer)


def transcribe(model, processor, audio: list, batch_size: int, lm=None, emulate: bool = False) -> dict:
    """Greedy (and ``lm`` beam-search) transcripts of ``audio``, longest first in batches; ``seconds`` taken,
    ``frames`` the log-probability rows decoded per utterance.

    An utterance the model sees as several windows (over 30 s on Whisper's encoder) is decoded from its
    windows' log-probabilities joined in time, so every mode is scored on the same one-row-per-utterance basis."""
    keep = KeepLogProbs(processor.tokenizer)
    transcriber = Transcriber(model, processor, decoder=keep)
    order = np.argsort([-len(a) for a in audio], kind="stable")
    log_probs = [None] * len(audio)
    start = time.perf_counter()
    with exact_emulated_int_mm() if emulate else torch.inference_mode():
        for i in range(0, len(order), batch_size):
            picked = order[i : i + batch_size]
            keep.log_probs = []
            chosen = [audio[j] for j in picked]
            transcriber(chosen)
            _, owner = transcriber.windows(chosen)  # an utterance over 30 s is several windows, in order
            if len(keep.log_probs) != len(owner):
                raise RuntimeError(f"{len(keep.log_probs)} log-probability rows for {len(owner)} windows")
            for k, j in enumerate(picked):
                log_probs[j] = torch.cat([lp for lp, o in zip(keep.log_probs, owner) if o == k])
    out = {
        "seconds": time.perf_counter() - start,
        "greedy": greedy_texts(log_probs, processor.tokenizer),
        "frames": [lp.shape[0] for lp in log_probs],
    }
    if lm is not None:
        lengths = torch.tensor([lp.shape[0] for lp in log_probs])
        out["lm"] = lm(torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True), lengths)
    return out


def compare(base: dict, entry: dict, samples: int) -> dict:
    """Paired change of ``entry`` against ``base`` (``score_split`` results on the same utterances)."""
    out = {}
    for metric, errors, totals in (("wer", "word_errors", "words"), ("cer", "char_errors", "chars")):
        a, b, t = base["counts"][errors], entry["counts"][errors], base["counts"][totals]
        out[f"{metric}_diff"] = list(paired_difference(a, b, t, samples=samples))
        out[f"{metric}_relative_change"] = list(relative_change_interval(a, b, t, samples=samples))
        out[f"{metric}_p"] = paired_bootstrap_pvalue(a, b, t, samples=samples)
    return out


# ---- models ----


def file_bytes(folder) -> int:
    """Bytes of the weight files (``*.safetensors``) of a saved folder."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def first_input(processor, audio):
    """The model inputs of one utterance (batch 1), as the Transcriber builds them."""
    extra = {}
    if type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor":
        extra["return_attention_mask"] = True  # the mask at the log-mel rate, which the model crops with
    return dict(processor(audio=[audio], sampling_rate=SAMPLING_RATE, return_tensors="pt", **extra))


@torch.inference_mode()
def logits_of(model, inputs, emulate: bool = False):
    with exact_emulated_int_mm() if emulate else torch.inference_mode():
        return model(**as_model_inputs(inputs, model)).logits.float()


def build_system(fp32, mode: str, out_dir: Path, processor):
    """``(in-memory model, reloaded model)`` of one mode: an INT8 mode through ``quantize_model`` /
    ``save_quantized`` / ``load_quantized``; bf16 through ``to_half_precision`` / ``save_pretrained`` /
    ``from_pretrained`` (the model class keeps the fast weights fp32 on load)."""
    from transformers import AutoModelForCTC

    if mode in HALF_MODES:
        half = to_half_precision(copy.deepcopy(fp32), mode)
        half.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        return half, AutoModelForCTC.from_pretrained(out_dir).eval()
    quantised = quantize_model(copy.deepcopy(fp32), mode)
    return quantised, load_quantized(save_quantized(quantised, out_dir, processor))


def build_systems(name: str, folder: str, probe: np.ndarray, workdir: Path, modes=MODES) -> tuple[dict, dict]:
    """fp32 and every mode of one model: quantised (or cast to bf16), saved, reloaded (the reloaded model is
    evaluated).

    Returns ``(models, record)``: ``models[mode]``; ``record`` with sizes, layer counts, fast-weight dtypes and
    the checks (reload gives identical logits; the int8 emulation is bit-identical; the pipeline runs).
    """
    from transformers import AutoModelForCTC, AutoProcessor, pipeline

    fp32 = AutoModelForCTC.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    fp32_dir = workdir / f"{name}_fp32"
    fp32.save_pretrained(fp32_dir)
    linears = sum(isinstance(m, torch.nn.Linear) for m in fp32.modules())
    record = {
        "folder": folder,
        "parameters": sum(p.numel() for p in fp32.parameters()),
        "linear_layers": linears,
        "quantised_linear_layers": len(quantizable_linears(fp32)),
        "kept_fp32_layers": list(FAST_WEIGHT_LAYERS),
        "shipped_file_bytes": file_bytes(folder),
        "systems": {"fp32": {"file_bytes": file_bytes(fp32_dir), "memory_bytes": model_bytes(fp32)}},
    }
    inputs = first_input(processor, probe)
    models = {"fp32": fp32}
    for mode in modes:
        out_dir = workdir / f"{name}_{mode}"
        quantised, loaded = build_system(fp32, mode, out_dir, processor)
        reference = logits_of(quantised, inputs)
        entry = {
            "file_bytes": file_bytes(out_dir),
            "memory_bytes": model_bytes(loaded),
            "reload_identical": bool(torch.equal(reference, logits_of(loaded, inputs))),
            "fast_weights_fp32": all(d == torch.float32 for d in fast_weight_dtypes(loaded).values()),
            "max_abs_logit_change_probe": float((reference - logits_of(fp32, inputs)).abs().max()),
        }
        if mode == "int8_dynamic":
            entry["emulation_bit_identical"] = bool(torch.equal(reference, logits_of(loaded, inputs, emulate=True)))
            if not entry["emulation_bit_identical"]:
                raise RuntimeError(f"{name}: exact_emulated_int_mm changed the logits; its accuracy would not hold")
        asr = pipeline(
            "automatic-speech-recognition",
            model=loaded,
            tokenizer=processor.tokenizer,
            feature_extractor=processor.feature_extractor,
        )
        with exact_emulated_int_mm() if mode == "int8_dynamic" else torch.inference_mode():
            text = asr(probe.copy())["text"]
        # (Module.to of torchao tensors fails in inference mode: the Transcriber is built outside it)
        expected = transcribe(loaded, processor, [probe], 1, emulate=mode == "int8_dynamic")["greedy"][0]
        entry["pipeline_transcript_matches"] = normalize_for_scoring(text) == normalize_for_scoring(expected)
        record["systems"][mode] = entry
        models[mode] = loaded
    return models, record


# ---- speed and memory ----


def stream_piece(model) -> int | None:
    """Input positions per streaming call (one LaCT chunk), or None for a model that does not stream."""
    config = model.config
    if config.frontend == "whisper_encoder" or config.lact_order == "bidirectional":
        return None
    return config.lact_chunk_size * config.total_stride


@torch.inference_mode()
def streaming_pass(model, features: torch.Tensor, piece: int) -> tuple[list[float], torch.Tensor]:
    """Feed ``features [1, T, mels]`` ``piece`` positions at a time through the cache: per-call seconds, logits."""
    cache, times, logits = None, [], []
    for s in range(0, features.shape[1], piece):
        start = time.perf_counter()
        out = model(input_features=features[:, s : s + piece], past_key_values=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        cache = out.past_key_values
        logits.append(out.logits)
    return times, torch.cat(logits, 1)


def measure_speed(models: dict, processor, audio: list) -> dict:
    """Offline and streaming latency, RTF and peak memory of each mode on the same utterances, batch 1.

    Modes are interleaved per utterance (after one warm-up call each), so that load on the machine falls on
    every mode alike. Streaming: one LaCT chunk per call through ``LaCTCache``; its logits are checked
    against the offline call's.
    """
    seconds = sum(len(a) for a in audio) / SAMPLING_RATE
    features = [first_input(processor, a) for a in audio]
    inputs = {mode: [as_model_inputs(x, model) for x in features] for mode, model in models.items()}
    piece = stream_piece(models["fp32"])
    offline = {m: [] for m in models}
    streaming = {m: [] for m in models}
    stream_diff = {m: 0.0 for m in models}
    with torch.inference_mode():
        for mode, model in models.items():
            model(**inputs[mode][0])
        for i in tqdm(range(len(features)), desc="latency", leave=False):
            for mode, model in models.items():
                x = inputs[mode][i]
                offline[mode].append(time_once(lambda m=model, x=x: m(**x)))
                if piece is not None:
                    times, logits = streaming_pass(model, x["input_features"], piece)
                    streaming[mode] += times
                    full = model(**x).logits
                    stream_diff[mode] = max(stream_diff[mode], float((logits - full).abs().max()))
    longest = int(np.argmax([len(a) for a in audio]))
    out = {}
    for mode, model in models.items():
        release_memory("cpu")
        with torch.inference_mode(), PeakMemory("cpu") as memory:
            model(**inputs[mode][longest])
        entry = {
            "offline": {**summarize(offline[mode]), "rtf": sum(offline[mode]) / seconds},
            "peak_rss_bytes": memory.peak_bytes,
            "peak_method": memory.method,
        }
        if piece is not None:
            entry["streaming"] = {
                **summarize(streaming[mode]),
                "rtf": sum(streaming[mode]) / seconds,
                "piece_seconds": piece * processor.feature_extractor.hop_length / SAMPLING_RATE,
                "max_abs_diff_vs_offline": stream_diff[mode],
            }
        out[mode] = entry
    out["utterances"], out["audio_seconds"] = len(audio), seconds
    if piece is None:
        out["streaming_not_run"] = "offline model (Whisper encoder front end / bidirectional LaCT): no stream path"
    return out


# ---- why the fast weights stay fp32 ----


def _study_logits(model, processor, rows: dict, head_states) -> list[torch.Tensor]:
    out = []
    with torch.inference_mode():
        for i, audio in enumerate(rows["audio"]):
            if head_states is not None:  # Whisper front end: the encoder's states, computed once in fp32
                x = {"frontend_states": torch.from_numpy(head_states[i])[None]}
            else:
                x = first_input(processor, audio)
            out.append(model(**x).logits[0].float())
    return out


def _carried_stream(model, processor, rows: dict, head_states) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The utterances read in order through one ``LaCTCache`` (fast weights carried from each to the next, as
    in test-time adaptation): per-utterance logits and the final fast weights of every layer, flattened."""
    from modeling_lact_audio.cache_lact_audio import LaCTCache

    cache, out = LaCTCache(model.config.num_hidden_layers), []
    with torch.inference_mode():
        for i, audio in enumerate(rows["audio"]):
            if head_states is not None:
                x = {"frontend_states": torch.from_numpy(head_states[i])[None]}
            else:
                x = first_input(processor, audio)
            cache.start_new_utterance()
            result = model(**x, past_key_values=cache, use_cache=True)
            cache = result.past_key_values
            out.append(result.logits[0].float())
    fast = [lc.fast for lc in cache.layer_caches]
    return out, torch.cat([torch.cat([s.w0.flatten(), s.w1.flatten(), s.w2.flatten()]) for s in fast])


def fast_weight_study(model, processor, rows: dict, samples: int) -> dict:
    """The model with its fast-weight state rounded to each ``STATE_VARIANTS`` format, against fp32 (greedy).

    A Whisper-front-end model is run on its encoder's fp32 states (only the LaCT blocks and the head change).
    Also: the whole model ``int8_dynamic`` with ``lr_proj``/``momentum_proj`` kept fp32 (the default) and
    quantised too.
    """
    head_states = None
    if model.config.frontend == "whisper_encoder":
        from modeling_lact_audio.recogniser.encoder_cache import encode_waveforms

        head_states = encode_waveforms(model.model.frontend.encoder, processor.feature_extractor, rows["audio"])
    tokenizer = processor.tokenizer

    def scored(logits):
        texts = greedy_texts([torch.log_softmax(x, -1) for x in logits], tokenizer)
        return score_split(rows["references"], [normalize_for_scoring(t) for t in texts])

    reference = _study_logits(model, processor, rows, head_states)
    base = scored(reference)
    ref_norm = float(torch.sqrt(sum(x.square().sum() for x in reference)))

    def entry(logits, stats=None):
        e = scored(logits)
        diff = float(torch.sqrt(sum((x - r).square().sum() for x, r in zip(logits, reference))))
        out = {"wer": e["wer"], "cer": e["cer"], "logits_relative_error": diff / ref_norm, **compare(base, e, samples)}
        if stats is not None and stats["updates"]:
            out["update_relative_size"] = (stats["update_sq"] / stats["weight_sq"]) ** 0.5
            out["rounding_error_relative_to_update"] = (stats["error_sq"] / stats["update_sq"]) ** 0.5
            out["chunk_updates"] = stats["updates"]
        return out

    result = {"utterances": len(rows["audio"]), "fp32": {"wer": base["wer"], "cer": base["cer"]}, "state": {}}
    for fmt, inputs in tqdm(STATE_VARIANTS, desc="fast-weight formats", leave=False):
        with rounded_fast_weights(fmt, round_inputs=inputs) as stats:
            logits = _study_logits(model, processor, rows, head_states)
        result["state"][f"{fmt}{' + op inputs' if inputs else ''}"] = entry(logits, stats)
    # Test-time adaptation: the state carried across all the utterances, so that rounding errors can add up.
    initial = torch.cat(
        [
            torch.cat([getattr(m, w).detach().flatten() for w in ("w0", "w1", "w2")])
            for m in model.modules()
            if isinstance(m, LaCTAudioMixer) and m.use_lact
        ]
    )
    carried_ref, final_ref = _carried_stream(model, processor, rows, head_states)
    result["state_bytes_fp32"] = final_ref.numel() * 4  # one stream's fast weights, every layer
    carried_base = scored(carried_ref)
    carried_norm = float(torch.sqrt(sum(x.square().sum() for x in carried_ref)))
    result["carried"] = {"fp32": {"wer": carried_base["wer"], "cer": carried_base["cer"]}, "state": {}}
    for fmt in tqdm(("bf16", "fp16", "int8"), desc="carried stream", leave=False):
        with rounded_fast_weights(fmt):
            logits, final = _carried_stream(model, processor, rows, head_states)
        e = scored(logits)
        diff = float(torch.sqrt(sum((x - r).square().sum() for x, r in zip(logits, carried_ref))))
        result["carried"]["state"][fmt] = {
            "wer": e["wer"],
            "cer": e["cer"],
            "logits_relative_error": diff / carried_norm,
            "final_state_deviation": float((final - final_ref).norm() / (final_ref - initial).norm()),
            **compare(carried_base, e, samples),
        }
    for label, skip in (("int8_dynamic (lr/momentum fp32)", FAST_WEIGHT_LAYERS), ("int8_dynamic (all linear)", ())):
        quantised = quantize_model(copy.deepcopy(model), "int8_dynamic", skip=skip)
        with exact_emulated_int_mm():
            result.setdefault("rate_layers", {})[label] = entry(_study_logits(quantised, processor, rows, head_states))
    return result


# ---- generator ----


def generator_study(corpus: str, steps: int, rows: int, samples: int, workdir: Path, modes=MODES) -> dict:
    """Train a tiny audio-token generator briefly, then its NLL per token on test_seen in every mode."""
    from modeling_lact_audio import LaCTAudioForCausalLM
    from modeling_lact_audio.processors import LaCTAudioTokenizer
    from modeling_lact_audio.training.trainer import main as train

    run = workdir / "generator"
    config = Path(__file__).resolve().parents[1] / "run_scripts" / "configs" / "tiny_cpu.yaml"
    args = [str(config), "--task", "lm", "--model", "lact", "--corpus", corpus, "--output_dir", str(run)]
    args += ["--max_steps", str(steps), "--eval_steps", str(steps), "--save_steps", str(steps)]
    args += ["--max_train_examples", "400", "--max_eval_examples", "32", "--report_to", "none"]
    args += ["--dataloader_num_workers", "0"]
    start = time.perf_counter()
    summary = train(args)
    train_seconds = time.perf_counter() - start
    fp32 = LaCTAudioForCausalLM.from_pretrained(run / "last").eval()
    tokenizer = LaCTAudioTokenizer.from_pretrained(run / "last" / "audio_tokenizer")
    audio = load_rows(corpus, "test_seen", rows)["audio"]
    codes = [tokenizer.encode(a, sampling_rate=SAMPLING_RATE)[0] for a in audio]  # [K, T'] each
    models = {"fp32": fp32}
    for m in modes:
        cast = to_half_precision if m in HALF_MODES else quantize_model
        models[m] = cast(copy.deepcopy(fp32), m)
    out = {
        "preset": "tiny",
        "train_steps": steps,
        "train_seconds": train_seconds,
        "train_summary": {k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
        "parameters": sum(p.numel() for p in fp32.parameters()),
        "utterances": len(codes),
        "tokens": int(sum(c.shape[0] * (c.shape[1] - 1) for c in codes)),
        "systems": {},
    }
    nll = {}
    with torch.inference_mode():
        for mode, model in models.items():
            sums = []
            for c in codes:
                logits = model(input_ids=c).logits  # [K, T', V]
                sums.append(float(F.cross_entropy(logits[:, :-1].flatten(0, 1), c[:, 1:].flatten(), reduction="sum")))
            nll[mode] = np.asarray(sums)
    counts = np.asarray([c.shape[0] * (c.shape[1] - 1) for c in codes], dtype=np.float64)
    for mode in models:
        entry = {"nll_per_token": float(nll[mode].sum() / counts.sum())}
        if mode != "fp32":
            entry["nll_diff"] = list(paired_difference(nll["fp32"], nll[mode], counts, samples=samples))
        entry["memory_bytes"] = model_bytes(models[mode])
        out["systems"][mode] = entry
    # decoding: one frame (K codes) per call through the cache, after a 32-frame prompt
    prompt = codes[0][:, :32]
    with torch.inference_mode():
        for mode, model in models.items():
            cache = model(input_ids=prompt, use_cache=True).past_key_values
            ids = prompt[:, -1:]
            times = []
            for _ in range(64):
                start = time.perf_counter()
                out_step = model(input_ids=ids, past_key_values=cache, use_cache=True)
                times.append(time.perf_counter() - start)
                cache, ids = out_step.past_key_values, out_step.logits[:, -1:].argmax(-1)
            out["systems"][mode]["decode_step"] = summarize(times[4:])
    return out


# ---- report ----


def _pct(x) -> str:
    return f"{100 * x:.1f}"


def _interval(d) -> str:
    return f"{100 * d[0]:+.2f} [{100 * d[1]:+.2f}, {100 * d[2]:+.2f}]"


def _mib(b) -> str:
    return f"{b / 2**20:.1f}"


def _excludes_zero(d) -> int:
    """+1 / -1 when a ``(diff, low, high)`` interval lies above / below 0, else 0."""
    return 1 if d[1] > 0 else -1 if d[2] < 0 else 0


def results_modes(results: dict) -> list[str]:
    """The modes (INT8, and bf16 where it ran) a results file compares with fp32 (files written before
    ``--modes`` existed: every INT8 mode)."""
    return list(results.get("modes", MODES))


def summary_lines(results: dict) -> list[str]:
    """One line per model and mode (size, speed, accuracy) and per fast-weight study, from the numbers alone."""
    lines, modes = [], results_modes(results)
    for name, model in results["models"].items():
        speed, fp32 = model["speed"], model["systems"]["fp32"]
        for mode in modes:
            size = model["systems"][mode]["file_bytes"] / fp32["file_bytes"]
            rtf = speed[mode]["offline"]["rtf"] / speed["fp32"]["offline"]["rtf"]
            parts = [f"file {size:.2f}x fp32's", f"offline compute {rtf:.2f}x fp32's"]
            if "streaming" in speed[mode]:
                parts.append(f"streaming {speed[mode]['streaming']['rtf'] / speed['fp32']['streaming']['rtf']:.2f}x")
            for decoding in model["decodings"]:
                for metric in ("wer", "cer"):
                    diffs = [r[mode][decoding][f"{metric}_diff"] for r in model["accuracy"].values()]
                    signs = [_excludes_zero(d) for d in diffs]
                    worse, better = signs.count(1), signs.count(-1)
                    largest = max(diffs, key=lambda d: abs(d[0]))
                    parts.append(
                        f"{decoding} {metric.upper()}: worse on {worse}, better on {better} of {len(diffs)} splits "
                        f"(95% interval excluding 0), largest change {100 * largest[0]:+.2f} pts"
                    )
            lines.append(f"- {name} {mode}: " + "; ".join(parts) + ".")
        study = model["fast_weights"]
        moved = [
            label
            for label, e in study["state"].items()
            if _excludes_zero(e["wer_diff"]) or _excludes_zero(e["cer_diff"])
        ]
        carried = study["carried"]["state"]
        lines.append(
            f"- {name} fast-weight state ({study['state_bytes_fp32'] / 2**20:.2f} MiB per stream in fp32, against "
            f"{model['systems']['fp32']['memory_bytes'] / 2**20:.1f} MiB of fp32 weights): per-chunk updates are "
            f"{study['state']['fp32']['update_relative_size']:.2f} "
            "of the weights' norm; rounding to bf16/fp16/int8 changes the logits by "
            + "/".join(f"{study['state'][f]['logits_relative_error']:.1e}" for f in ("bf16", "fp16", "int8"))
            + " (relative); variants whose WER or CER interval excludes 0: "
            + (", ".join(moved) if moved else "none")
            + "; carried over all the utterances the final state deviates from fp32's by "
            + "/".join(f"{carried[f]['final_state_deviation']:.2g}" for f in ("bf16", "fp16", "int8"))
            + " (bf16/fp16/int8, relative to its distance from the initial weights)."
        )
    gen = results.get("generator")
    if gen:
        lines.append(
            "- generator: NLL change "
            + ", ".join(
                f"{m} {gen['systems'][m]['nll_diff'][0]:+.4f} [{gen['systems'][m]['nll_diff'][1]:+.4f}, "
                f"{gen['systems'][m]['nll_diff'][2]:+.4f}] nats/token"
                for m in modes
            )
            + f" (fp32 {gen['systems']['fp32']['nll_per_token']:.3f})."
        )
    return lines


def _speed_run_lines(results: dict) -> list[str]:
    """The note on a ``--speed-only`` re-measurement, when the speed columns come from one."""
    run = results.get("speed_run")
    if run is None:
        return []
    return [
        f"Latency, RTF and peak memory re-measured by `{run['command']}` ({run['threads']} thread(s), load average "
        f"at its start {run['machine']['loadavg']}); accuracy and size come from the full run above.",
        "",
    ]


def render_report(results: dict) -> str:
    lines = [
        "# Quantised inference (CPU)",
        "",
        "Generated by `eval/quantization_eval.py` from `results.json`. Command:",
        "",
        f"    {results['command']}",
        "",
        f"Machine: {results['machine']['cpu']} ({results['machine']['cpu_features']['capability']}, native bf16: "
        f"{results['machine']['cpu_features']['native_bf16']}), {results['threads']} thread(s), load average at the "
        f"start {results['machine']['loadavg']}; torch {results['machine']['torch']}, torchao {results['torchao']}. "
        f"{results['rows_per_split']} fixed random rows per test split. "
        f"Total run {results['run_seconds'] / 60:.1f} min.",
        "",
        "Modes: `int8_dynamic` = torchao `Int8DynamicActivationInt8WeightConfig` (int8 weights per channel, int8 "
        "activations per token, int32 accumulation); `int8_weight_only` = `Int8WeightOnlyConfig` (int8 weights, "
        "fp32 activations and matmul); `int8_dynamic_fbgemm` = `Int8DynamicLinear` layers (int8 weights per "
        "channel, activations quantised to 7 bits per block of 64 frames sorted by magnitude, FBGEMM's "
        "`quantized::linear_dynamic`, fast on AVX2). Every `nn.Linear` is quantised except "
        "`lr_proj`/`momentum_proj` (they set the fast-weight update); the fast weights, the LaCT op, norms, "
        "convolutions and embeddings stay fp32. `bf16` (run only on a CPU with native bf16) = `to_half_precision`: "
        "every weight, activation and the attention in bf16 except the fast weights, whose state and updates "
        "stay fp32. The evaluated models are the saved-and-reloaded folders (safetensors).",
        "",
        "## Summary (computed from the tables below)",
        "",
        *summary_lines(results),
        "",
        "## Half precision",
        "",
        "| precision | native on this machine | note |",
        "|---|---|---|",
    ]
    not_a_system = "native, but whole-model half-precision inference is not one of this run's systems (GPU: ../gpu/)"
    ran = "native: run as the system of that name in the tables below"
    for precision, reason in results["half_precision"].items():
        note = reason or (ran if precision in results_modes(results) else not_a_system)
        lines.append(f"| {precision} (CPU) | {'no' if reason else 'yes'} | {note} |")
    for precision, reason in results["half_precision_gpu"].items():
        lines.append(f"| {precision} (GPU) | {'no' if reason else 'yes'} | {reason or not_a_system} |")
    lines += [
        "",
        "`to_half_precision` (fast weights and the op fp32, the rest in bf16/fp16) is tested for its numerics on a "
        "tiny model (tests/models/test_quantization.py, emulated: not a result here). fp16 gives NaN on padded "
        "frames: the mixer normalises q and k with `F.normalize` in the input dtype, whose eps (1e-12) is 0 in "
        "fp16, so an all-zero padded q/k is 0/0 (bf16 has fp32's exponent range and is unaffected).",
    ]
    lines += ["", "## Accuracy against fp32 (paired 95% bootstrap intervals over utterances)", ""]
    lines += [
        "Δ = mode minus fp32 in percentage points; p = paired bootstrap p-value of the WER difference; changed = "
        "utterances whose transcript differs from fp32's.",
        "",
    ]
    for name, model in results["models"].items():
        for decoding in model["decodings"]:
            lines += [
                f"### {name} ({decoding})",
                "",
                "| split | mode | WER % | ΔWER pts [95% CI] | p | CER % | ΔCER pts [95% CI] | changed |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for split, per_mode in model["accuracy"].items():
                for mode, r in per_mode.items():
                    s = r[decoding]
                    if mode == "fp32":
                        lines.append(
                            f"| {split} ({r['utterances']}) | fp32 | {_pct(s['wer'])} | | | {_pct(s['cer'])} | | |"
                        )
                        continue
                    lines.append(
                        f"| {split} | {mode} | {_pct(s['wer'])} | {_interval(s['wer_diff'])} | {s['wer_p']:.3f} | "
                        f"{_pct(s['cer'])} | {_interval(s['cer_diff'])} | {s['changed']} |"
                    )
            lines.append("")
    lines += [
        "## Size, speed and memory",
        "",
        "File = `model.safetensors` of the saved folder (fp32 re-saved in fp32). Latency: one utterance per call "
        "(batch 1), median over the timed utterances; RTF = compute seconds / audio seconds. Streaming: one LaCT "
        "chunk per call through `LaCTCache`. Peak RSS: resident memory above the level before one offline call "
        "on the longest timed utterance (psutil, sampled every ms).",
        "",
        *_speed_run_lines(results),
        "| model | mode | file MiB | in memory MiB | offline latency ms | offline RTF | stream chunk ms "
        "(median / p90) | stream RTF | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        speed = model["speed"]
        for mode in ("fp32", *results_modes(results)):
            size, sp = model["systems"][mode], speed[mode]
            stream = sp.get("streaming")
            stream_cells = (
                f"{1000 * stream['median_s']:.0f} / {1000 * stream['p90_s']:.0f} | {stream['rtf']:.3f}"
                if stream
                else "n/a | n/a"
            )
            lines.append(
                f"| {name} | {mode} | {_mib(size['file_bytes'])} | {_mib(size['memory_bytes'])} | "
                f"{1000 * sp['offline']['median_s']:.0f} | {sp['offline']['rtf']:.3f} | {stream_cells} | "
                f"{_mib(sp['peak_rss_bytes'])} |"
            )
    lines.append("")
    for name, model in results["models"].items():
        speed = model["speed"]
        note = speed.get("streaming_not_run")
        lines.append(
            f"- {name}: {model['parameters'] / 1e6:.2f}M parameters ({_mib(model['shipped_file_bytes'])} MiB "
            f"shipped), {model['quantised_linear_layers']} of {model['linear_layers']} linear layers quantised; "
            f"timed on {speed['utterances']} test_seen utterances ({speed['audio_seconds']:.1f} s of audio)"
            + (f"; streaming: {note}" if note else "")
            + "."
        )
    lines += [
        "",
        "Checks of the saved quantised folders: reloaded logits identical to the in-memory quantised model's; fast "
        "weights fp32 after loading; the exact int8 emulation bit-identical to torch._int_mm; the ASR pipeline's "
        "transcript equal to the Transcriber's; the largest logit change against fp32 on the probe utterance.",
        "",
        "| model | mode | reload identical | fast weights fp32 | emulation bit-identical | pipeline matches | "
        "max abs logit change |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, model in results["models"].items():
        for mode in results_modes(results):
            c = model["systems"][mode]
            lines.append(
                f"| {name} | {mode} | {c['reload_identical']} | {c['fast_weights_fp32']} | "
                f"{c.get('emulation_bit_identical', 'n/a')} | {c['pipeline_transcript_matches']} | "
                f"{c['max_abs_logit_change_probe']:.3g} |"
            )
    lines += ["", "## Fast weights: fp32 against lower-precision storage", ""]
    lines += [
        "The LaCT op runs one chunk at a time with the fast-weight state stored in the given format between "
        "updates (weights and momentum rounded before the first chunk and after every update; the update computed "
        "in fp32 from the rounded state); `+ op inputs`: q, k, v also rounded (per token and head for int8), i.e. "
        "the op's matmuls on low-precision operands. The fp32 row is the same chunked path unrounded (it checks "
        "the simulation: logits error vs the plain op). Update size = ||ΔW|| / ||W|| per chunk update; rounding "
        "error = ||round(W) - W|| / ||ΔW||. Greedy decoding; the other layers fp32. Last rows: the whole model "
        "int8_dynamic with the rate layers kept fp32 (default) and quantised too.",
        "",
    ]
    for name, model in results["models"].items():
        study = model["fast_weights"]
        lines += [
            f"### {name} ({study['utterances']} test_seen utterances; fp32 WER {_pct(study['fp32']['wer'])}%, "
            f"CER {_pct(study['fp32']['cer'])}%)",
            "",
            "| variant | logits rel. error | update size | rounding error / update | ΔWER pts [95% CI] | "
            "ΔCER pts [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for label, e in [*study["state"].items(), *study["rate_layers"].items()]:
            size = f"{e['update_relative_size']:.3f}" if "update_relative_size" in e else ""
            err = f"{e['rounding_error_relative_to_update']:.4f}" if "rounding_error_relative_to_update" in e else ""
            lines.append(
                f"| {label} | {e['logits_relative_error']:.2e} | {size} | {err} | {_interval(e['wer_diff'])} | "
                f"{_interval(e['cer_diff'])} |"
            )
        carried = study["carried"]
        lines += [
            "",
            f"State carried across the {study['utterances']} utterances in order (test-time adaptation; fp32 WER "
            f"{_pct(carried['fp32']['wer'])}%, CER {_pct(carried['fp32']['cer'])}%): final-state deviation = "
            "||W_format - W_fp32|| / ||W_fp32 - W_initial|| of the last state, all layers.",
            "",
            "| state format | logits rel. error | final-state deviation | ΔWER pts [95% CI] | ΔCER pts [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for fmt, e in carried["state"].items():
            lines.append(
                f"| {fmt} | {e['logits_relative_error']:.2e} | {e['final_state_deviation']:.3g} | "
                f"{_interval(e['wer_diff'])} | {_interval(e['cer_diff'])} |"
            )
        lines.append("")
    gen = results.get("generator")
    if gen:
        lines += [
            "## Generator (NLL per token)",
            "",
            f"A `tiny` LaCTAudioForCausalLM ({gen['parameters'] / 1e6:.2f}M parameters) trained here for "
            f"{gen['train_steps']} steps ({gen['train_seconds']:.0f} s) on 400 training utterances' mel_rvq tokens: "
            "no trained generator exists, so this is a briefly trained model, not a usable one. NLL on "
            f"{gen['utterances']} test_seen utterances ({gen['tokens']} tokens); Δ with a paired 95% interval over "
            "utterances. Decode step: one frame through the cache after a 32-frame prompt.",
            "",
            "| mode | NLL nats/token | ΔNLL [95% CI] | in memory KiB | decode step ms (median) |",
            "|---|---|---|---|---|",
        ]
        for mode, e in gen["systems"].items():
            d = e.get("nll_diff")
            diff = f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]" if d else ""
            lines.append(
                f"| {mode} | {e['nll_per_token']:.4f} | {diff} | {e['memory_bytes'] / 1024:.0f} | "
                f"{1000 * e['decode_step']['median_s']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """ΔWER/ΔCER per split and mode with intervals (greedy), and offline RTF, per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, systems = list(results["models"]), ("fp32", *results_modes(results))
    fig, axes = plt.subplots(len(names), 3, figsize=(16, 4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        model = results["models"][name]
        splits = list(model["accuracy"])
        for col, metric in enumerate(("wer", "cer")):
            ax = axes[row, col]
            for i, mode in enumerate(results_modes(results)):
                d = np.array([model["accuracy"][s][mode]["greedy"][f"{metric}_diff"] for s in splits]) * 100
                x = np.arange(len(splits)) + (i - 0.5) * 0.3
                ax.errorbar(x, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], fmt="o", capsize=3, label=mode)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(np.arange(len(splits)), splits, rotation=20, fontsize=8)
            ax.set_ylabel(f"Δ{metric.upper()} vs fp32 (points, 95% CI)")
            ax.set_title(f"{name}: greedy {metric.upper()} change")
            ax.legend(fontsize=8)
        ax = axes[row, 2]
        speed = model["speed"]
        kinds = ["offline"] + (["streaming"] if "streaming" in speed["fp32"] else [])
        for i, kind in enumerate(kinds):
            ax.bar(np.arange(len(systems)) + i * 0.4, [speed[m][kind]["rtf"] for m in systems], 0.4, label=kind)
        ax.set_xticks(np.arange(len(systems)) + 0.2 * (len(kinds) - 1), systems, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("real-time factor (1 thread, batch 1)")
        ax.set_title(f"{name}: speed")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1))
    (output / "REPORT.md").write_text(render_report(results))
    plot(results, output / "quantization.png")


# ---- main ----


def evaluate_model(name: str, folder: str, args, splits: dict, workdir: Path) -> dict:
    from transformers import AutoProcessor

    from modeling_lact_audio.recogniser.lm import LM_FOLDER, CTCBeamSearchDecoder

    probe = splits[args.splits[0]]["audio"][0]
    models, record = build_systems(name, folder, probe, workdir, args.modes)
    processor = AutoProcessor.from_pretrained(folder)
    lm = None
    if not args.no_lm and (Path(folder) / LM_FOLDER / "lm.arpa").exists():
        lm = CTCBeamSearchDecoder.from_pretrained(folder)
    record["decodings"] = ["greedy"] + (["lm"] if lm is not None else [])
    record["accuracy"] = {}
    for split in tqdm(args.splits, desc=f"{name} splits"):
        rows = splits[split]
        per_mode = {}
        for mode, model in models.items():
            out = transcribe(model, processor, rows["audio"], args.batch_size, lm, emulate=mode == "int8_dynamic")
            per_mode[mode] = {"utterances": len(rows["audio"]), "seconds_not_latency": out["seconds"]}
            for decoding in record["decodings"]:
                texts = [normalize_for_scoring(t) for t in out[decoding]]
                per_mode[mode][decoding] = {"texts": texts, **score_split(rows["references"], texts)}
        for mode in args.modes:
            for decoding in record["decodings"]:
                base, entry = per_mode["fp32"][decoding], per_mode[mode][decoding]
                entry.update(compare(base, entry, args.samples))
                entry["changed"] = sum(a != b for a, b in zip(base["texts"], entry["texts"]))
        for mode in per_mode:
            for decoding in record["decodings"]:
                per_mode[mode][decoding].pop("texts")
        record["accuracy"][split] = per_mode
        print(
            f"{name} {split}: "
            + ", ".join(
                f"{m} WER {100 * per_mode[m]['greedy']['wer']:.1f} CER {100 * per_mode[m]['greedy']['cer']:.1f}"
                for m in per_mode
            ),
            flush=True,
        )
    latency_rows = load_rows(args.corpus, "test_seen", args.latency_rows)
    record["speed"] = measure_speed(models, processor, latency_rows["audio"])
    study_rows = load_rows(args.corpus, "test_seen", args.fast_weight_rows)
    record["fast_weights"] = fast_weight_study(models["fp32"], processor, study_rows, args.samples)
    return record


def remeasure_speed(args, argv) -> dict:
    """``--speed-only``: rebuild every model's systems as the full run does and replace only their ``speed``
    records in ``--output/results.json`` (the command, machine and load of this run kept in ``speed_run``)."""
    from transformers import AutoProcessor

    path = Path(args.output) / "results.json"
    results = json.loads(path.read_text())
    latency_rows = load_rows(args.corpus, "test_seen", args.latency_rows)
    with tempfile.TemporaryDirectory() as tmp:
        for name, record in results["models"].items():
            models, _ = build_systems(
                name, record["folder"], latency_rows["audio"][0], Path(tmp), results_modes(results)
            )
            processor = AutoProcessor.from_pretrained(record["folder"])
            record["speed"] = measure_speed(models, processor, latency_rows["audio"])
            del models
    results["speed_run"] = {
        "command": shlex.join(["python", "eval/quantization_eval.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info("cpu"),
        "threads": args.threads,
    }
    write(results, Path(args.output))
    print(f"re-measured speed in {path}")
    return results


def main(argv=None) -> dict:
    import torchao

    args = parse_args(argv)
    if args.render_only:
        results = json.loads((Path(args.output) / "results.json").read_text())
        write(results, Path(args.output))
        return results
    torch.set_num_threads(args.threads)
    if args.speed_only:
        return remeasure_speed(args, argv)
    start = time.perf_counter()
    specs = dict(m.split("=", 1) for m in (args.model or DEFAULT_MODELS))
    results = {
        "command": shlex.join(["python", "eval/quantization_eval.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info("cpu"),
        "threads": args.threads,
        "torchao": torchao.__version__,
        "rows_per_split": args.rows,
        "modes": list(args.modes),
        "splits": args.splits,
        "half_precision": {p: half_precision_skip_reason(p, "cpu") for p in HALF_PRECISIONS},
        "half_precision_gpu": {p: half_precision_skip_reason(p, "cuda") for p in HALF_PRECISIONS},
        "models": {},
    }
    splits = {s: load_rows(args.corpus, s, args.rows) for s in args.splits}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, folder in specs.items():
            results["models"][name] = evaluate_model(name, folder, args, splits, workdir)
        if not args.no_generator:
            results["generator"] = generator_study(
                args.corpus, args.generator_steps, args.generator_rows, args.samples, workdir, args.modes
            )
    results["run_seconds"] = time.perf_counter() - start
    write(results, Path(args.output))
    print(f"wrote {args.output}/results.json, REPORT.md, quantization.png ({results['run_seconds'] / 60:.1f} min)")
    return results


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
