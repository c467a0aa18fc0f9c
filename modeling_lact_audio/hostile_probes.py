"""Hostile probes: run the public APIs the way a careless or malicious user would and classify what happens.

Each probe is a small callable ``fn(tmp: Path) -> None`` that calls public APIs only (processors, feature
extractor, tokenizers, models' ``forward``/``generate``/``from_pretrained``, the op ``lact_swiglu``,
``LaCTCache``, the trainer's checkpoint loading, the exporters' ``main``). A probe returns when the result
passed its own check ("handled"), calls :func:`wrong` when it did not (or when a bad input was accepted),
or lets an exception escape. :func:`classify` turns the exception into an outcome:

- ``clear_error``: a ``ValueError``/``TypeError``/``FileNotFoundError``/``RuntimeError`` raised by a ``raise``
  statement in lact-audio's own code (the traceback's last frame), an exception class of ours, or an
  argparse usage error of one of our scripts (``SystemExit`` with a non-zero status);
- ``handled``: the probe returned: the result passed its check (finite, right shape, equal to a reference);
- ``raw_torch_error``: any other exception: raised inside torch/transformers/numpy/pyarrow, or by C code our
  code called (the last frame is ours but is not a ``raise``), or an unexpected type from our code;
- ``silent_wrong``: returned without an error but failed the probe's check (:class:`WrongResult`);
- ``hang``: ran past its timeout (``signal.setitimer``: a hang inside one C call is caught when it returns).

:func:`scan_unsafe_loads` counts ``torch.load(`` / ``pickle.load(s)(`` calls and ``weights_only=False``
arguments in the code (not the docstrings) of the package, ``run_scripts`` and ``eval``.
``main(argv)`` runs the catalogue and writes ``probes.json`` and ``REPORT.md``.
"""

import argparse
import ast
import atexit
import contextlib
import json
import logging
import pickle
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

OUTCOMES = ("clear_error", "handled", "raw_torch_error", "silent_wrong", "hang")
PASSING = ("clear_error", "handled")
CLEAR_TYPES = (ValueError, TypeError, FileNotFoundError, RuntimeError)
SR = 16000

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
THIS_FILE = Path(__file__).resolve()


class WrongResult(Exception):
    """A probe's own check failed: the call returned, but the result is wrong (or a bad input was accepted)."""


class ProbeTimeout(BaseException):
    """Raised by the timer inside a probe that ran past its timeout (a BaseException, so no probe swallows it)."""


def wrong(message: str) -> None:
    raise WrongResult(message)


def expect(condition, message: str) -> None:
    if not condition:
        raise WrongResult(message)


def accepted(what: str) -> None:
    raise WrongResult(f"accepted {what} without an error")


@dataclass
class Probe:
    name: str
    area: str
    fn: Callable[[Path], None]
    note: str = ""
    timeout: float = 120.0


@cache
def our_roots() -> tuple[Path, ...]:
    """Folders whose files count as lact-audio's own code: the package, its processors and kernels, the scripts."""
    import modeling_lact_audio.kernels as kernels
    import modeling_lact_audio.processors as processors

    roots = {PACKAGE_DIR, Path(processors.__file__).resolve().parent, Path(kernels.__file__).resolve().parent}
    roots |= {REPO_DIR / "run_scripts", REPO_DIR / "eval"}
    return tuple(roots)


def is_our_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return path != THIS_FILE and any(path.is_relative_to(root) for root in our_roots())


def classify(exc: BaseException | None) -> tuple[str, str]:
    """``(outcome, message)`` for a probe that raised ``exc`` (None: it returned, so ``handled``)."""
    if exc is None:
        return "handled", ""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ProbeTimeout):
        return "hang", str(exc)
    if isinstance(exc, WrongResult):
        return "silent_wrong", str(exc)
    if isinstance(exc, SystemExit):
        if exc.code not in (0, None):
            return "clear_error", f"SystemExit({exc.code}): argparse usage error"
        return "silent_wrong", f"SystemExit({exc.code}) without an error status"
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f" [raised at {Path(last.filename).name}:{last.lineno}]" if last else ""
    if type(exc).__module__.split(".")[0] == "modeling_lact_audio" and not isinstance(exc, WrongResult):
        return "clear_error", message
    if last is not None and isinstance(exc, CLEAR_TYPES) and is_our_file(last.filename):
        if (last.line or "").lstrip().startswith("raise"):
            return "clear_error", message
    return "raw_torch_error", message + where


def _on_alarm(signum, frame):
    raise ProbeTimeout("ran past its timeout")


def run_probe(probe: Probe, tmp: Path, timeout: float | None = None) -> dict:
    """Run ``probe`` in ``tmp`` under a timer; returns its record (name, area, outcome, message, seconds, note)."""
    timeout = probe.timeout if timeout is None else timeout
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    start = time.perf_counter()
    error = None
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            probe.fn(tmp)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except (Exception, ProbeTimeout, SystemExit) as exc:
        error = exc
    finally:
        signal.signal(signal.SIGALRM, previous)
    outcome, message = classify(error)
    if outcome == "hang":
        message = f"no result within {timeout:g} s"
    return {
        "name": probe.name,
        "area": probe.area,
        "outcome": outcome,
        "message": message[:400],
        "seconds": round(time.perf_counter() - start, 3),
        "note": probe.note,
    }


# --------------------------------------------------------------------------- shared inputs (built once)


def noise(length: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


@cache
def feature_extractor():
    from modeling_lact_audio.processors import LaCTFeatureExtractor

    return LaCTFeatureExtractor()


@cache
def ctc_tokenizer():
    from modeling_lact_audio.processors import LaCTCTCTokenizer

    return LaCTCTCTokenizer.from_texts(["hello world", "good bye"])


@cache
def processor():
    from modeling_lact_audio.processors import LaCTProcessor

    return LaCTProcessor(feature_extractor(), ctc_tokenizer())


@cache
def audio_tokenizer():
    from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig

    config = LaCTAudioTokenizerConfig(n_fft=512, hop_length=128, n_mels=40, num_codebooks=2, codebook_size=8)
    return LaCTAudioTokenizer(config).fit([noise(8000, s) for s in range(3)], sampling_rate=SR, iters=3)


def _backbone() -> dict:
    return dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_lact_heads=2,
        intermediate_size=32,
        lact_chunk_size=4,
        window_size=3,
        muon_steps=2,
        use_momentum=True,
    )


def ctc_config(**overrides):
    from modeling_lact_audio import LaCTAudioConfig

    fields = dict(
        _backbone(),
        task="ctc",
        vocab_size=11,
        conv_channels=[12, 12],
        conv_kernel_sizes=[3, 3],
        conv_strides=[2, 2],
        lact_order="update_apply",
        attention_pattern="block_causal",
    )
    if overrides.get("frontend", "log_mel") == "log_mel":
        fields["num_mel_bins"] = 8
    fields.update(overrides)
    return LaCTAudioConfig(**fields)


@cache
def ctc_model():
    from modeling_lact_audio import LaCTAudioForCTC

    torch.manual_seed(0)
    return LaCTAudioForCTC(ctc_config()).eval()


@cache
def lm_model():
    from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCausalLM

    torch.manual_seed(0)
    config = LaCTAudioConfig(
        **_backbone(), task="lm", num_codebooks=2, codebook_size=13, num_conditions=3, condition_dim=5
    )
    return LaCTAudioForCausalLM(config).eval()


def features(B=2, T=37, mels=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, mels, generator=g), torch.ones(B, T, dtype=torch.long)


def lm_ids(B=2, T=9, seed=0):
    model = lm_model()
    K, V = model.config.num_codebooks, model.config.codebook_size
    return torch.randint(0, V, (B * K, T), generator=torch.Generator().manual_seed(seed))


def ctc_labels(rows=2):
    labels = torch.tensor([[3, 4, 5, 6, 7], [2, 3, 4, -100, -100]])
    return torch.cat([labels, labels])[:rows]


def op_inputs(dtype=torch.float32, B=1, T=10, H=2, D=4, Dh=6, seed=0):
    """``q, k, v, lr, state`` for the op: q, k normalised per head, weights scaled like a trained layer."""
    from modeling_lact_audio.kernels import FastWeightState

    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    q = torch.nn.functional.normalize(rnd(B, T, H, D), dim=-1)
    k = torch.nn.functional.normalize(rnd(B, T, H, D), dim=-1)
    v = rnd(B, T, H, D)
    lr = torch.rand(B, T, H, 3, generator=g, dtype=dtype) * 0.1
    w0 = rnd(1, H, Dh, D).expand(B, -1, -1, -1) / D**0.5
    w1 = rnd(1, H, D, Dh).expand(B, -1, -1, -1) / Dh**0.5
    w2 = rnd(1, H, Dh, D).expand(B, -1, -1, -1) / D**0.5
    return q, k, v, lr, FastWeightState.from_weights(w0, w1, w2)


def finite(t) -> bool:
    return bool(torch.isfinite(torch.as_tensor(t)).all())


@contextlib.contextmanager
def value_checks(enabled: bool = True):
    from modeling_lact_audio.kernels import check_values

    with check_values(enabled):
        yield


# --------------------------------------------------------------------------- the catalogue

CATALOGUE: list[Probe] = []


def add(area: str, name: str, fn: Callable[[Path], None], note: str = "", timeout: float = 120.0) -> None:
    CATALOGUE.append(Probe(f"{area}/{name}", area, fn, note, timeout))


def _bad_audio(audio, what, **kwargs):
    def fn(tmp):
        out = feature_extractor()(audio() if callable(audio) else audio, sampling_rate=kwargs.get("sr", SR))
        feats = np.asarray(out["input_features"][0])
        accepted(f"{what} (features of shape {feats.shape}, finite={bool(np.isfinite(feats).all())})")

    return fn


def _good_audio(audio, check, **kwargs):
    def fn(tmp):
        out = feature_extractor()(
            audio() if callable(audio) else audio, sampling_rate=kwargs.get("sr", SR), return_tensors="pt"
        )
        feats = out["input_features"]
        expect(finite(feats), f"non-finite features for {kwargs.get('what', 'audio')}")
        check(out)

    return fn


def _audio_probes():
    bad = {
        "empty_array": (np.zeros(0, np.float32), "empty audio"),
        "empty_list": ([], "an empty list of audio"),
        "nan_sample": (lambda: np.where(np.arange(4000) == 7, np.nan, noise(4000)).astype(np.float32), "NaN audio"),
        "inf_sample": (lambda: np.where(np.arange(4000) == 7, np.inf, noise(4000)).astype(np.float32), "Inf audio"),
        "float64_overflowing_float32": (np.full(4000, 1e300), "float64 beyond float32"),
        "scaled_1e20": (lambda: noise(8000, scale=1e20), "audio scaled by 1e20"),
        "int32_pcm_as_float": (lambda: np.round(noise(8000) * 2**31).astype(np.float32), "int32 PCM as floats"),
        "python_int_list": (list(range(4000)), "a list of Python ints (int64)"),
        "int64_array": (np.arange(4000, dtype=np.int64), "int64 audio"),
        "uint8_array": (np.zeros(4000, np.uint8), "uint8 audio"),
        "bool_tensor": (torch.zeros(4000, dtype=torch.bool), "bool audio"),
        "complex_array": (np.zeros(4000, np.complex64), "complex audio"),
        "scalar": (0.5, "a scalar"),
        "zero_dim_array": (np.array(0.5, np.float32), "a 0-d array"),
        "string": ("hello.wav", "a file name instead of audio"),
        "dict": ({"array": noise(4000)}, "a dict instead of audio"),
        "rank3_utterance": ([np.zeros((2, 3, 4000), np.float32)], "a rank-3 utterance"),
        "square_multichannel": ([np.zeros((6, 6), np.float32)], "a square [6, 6] utterance"),
        "toplevel_T_by_C": (np.zeros((4000, 2), np.float32), "one stereo [T, C] array passed as a batch"),
    }
    for name, (audio, what) in bad.items():
        add("audio_input", name, _bad_audio(audio, what))
    for rate in (1, 16, 1000, 1_000_000, -16000, 0, 16000.5, float("nan"), "16000"):
        add(
            "audio_input",
            f"sampling_rate_{rate!r}",
            _bad_audio(lambda: noise(4000), f"sampling_rate={rate!r}", sr=rate),
        )

    def constructor_rate(tmp):
        from modeling_lact_audio.processors import LaCTFeatureExtractor

        LaCTFeatureExtractor(sampling_rate=16)
        accepted("LaCTFeatureExtractor(sampling_rate=16)")

    add("audio_input", "extractor_built_at_16_hz", constructor_rate)

    frames = lambda n: (
        lambda out: expect(  # noqa: E731
            out["input_features"].shape[1] == n, f"expected {n} frames, got {tuple(out['input_features'].shape)}"
        )
    )
    add("audio_input", "resample_8k", _good_audio(lambda: noise(8000), frames(101), sr=8000))
    add("audio_input", "resample_48k", _good_audio(lambda: noise(48000), frames(101), sr=48000))
    add("audio_input", "float16", _good_audio(lambda: noise(16000).astype(np.float16), frames(101)))
    add("audio_input", "bfloat16_tensor", _good_audio(lambda: torch.from_numpy(noise(16000)).bfloat16(), frames(101)))
    add(
        "audio_input",
        "int16_as_float",
        _good_audio(lambda: np.round(noise(8000) * 32768).astype(np.float32), frames(51)),
    )
    add("audio_input", "denormal_amplitude", _good_audio(lambda: noise(8000, scale=1e-30), frames(51)))
    add("audio_input", "digital_silence", _good_audio(lambda: np.zeros(8000, np.float32), frames(51)))
    add("audio_input", "dc_offset", _good_audio(lambda: np.ones(8000, np.float32), frames(51)))
    add("audio_input", "one_sample", _good_audio(lambda: noise(1), frames(1)))
    add("audio_input", "stereo_T_by_2_in_list", _good_audio(lambda: [np.stack([noise(8000)] * 2, 1)], frames(51)))
    add("audio_input", "stereo_2_by_T_in_list", _good_audio(lambda: [np.stack([noise(8000)] * 2, 0)], frames(51)))

    def int16_equals_float(tmp):
        wave = np.round(noise(8000) * 20000).astype(np.int16)
        fe = feature_extractor()
        a = fe(wave, sampling_rate=SR, return_tensors="pt")["input_features"]
        b = fe(wave.astype(np.float32) / 32768, sampling_rate=SR, return_tensors="pt")["input_features"]
        expect(torch.allclose(a, b, atol=1e-4), f"int16 PCM and its float equivalent differ by {(a - b).abs().max()}")

    add("audio_input", "int16_pcm_equals_float", int16_equals_float)

    def padded_batch(tmp):
        fe = feature_extractor()
        out = fe([noise(8000, 1), noise(4000, 2)], sampling_rate=SR, return_tensors="pt", padding=True)
        single = fe(noise(4000, 2), sampling_rate=SR, return_tensors="pt")["input_features"][0]
        mask = out["attention_mask"]
        n = int(mask[1].sum())
        expect(n == single.shape[0], f"mask says {n} frames, the single utterance has {single.shape[0]}")
        expect(torch.allclose(out["input_features"][1, :n], single, atol=1e-4), "padded row differs from the single")

    add("audio_input", "padded_batch_equals_single", padded_batch)

    def global_norm_on_silence(tmp):
        from modeling_lact_audio.processors import LaCTFeatureExtractor

        fe = LaCTFeatureExtractor(normalization="global")
        fe.fit_normalization([np.zeros(8000, np.float32)], sampling_rate=SR)
        accepted("normalization='global' fitted on silence")

    def speaker_norm_one_silent(tmp):
        from modeling_lact_audio.processors import LaCTFeatureExtractor

        fe = LaCTFeatureExtractor(normalization="global")
        fe.fit_normalization([noise(8000, 1), np.zeros(8000, np.float32)], sampling_rate=SR, speaker_ids=["a", "b"])
        accepted("a silent speaker in the normalisation fit")

    add("audio_input", "global_norm_fitted_on_silence", global_norm_on_silence)
    add("audio_input", "speaker_norm_with_a_silent_speaker", speaker_norm_one_silent)
    for label, std in (("zero", [0.0] * 80), ("nan", [float("nan")] * 80), ("short", [1.0] * 79)):

        def corrupt_stats(tmp, std=std):
            from modeling_lact_audio.processors import LaCTFeatureExtractor

            LaCTFeatureExtractor(normalization="global", global_mean=[0.0] * 80, global_std=std)
            accepted("corrupt saved normalisation statistics")

        add("audio_input", f"saved_stats_{label}_std", corrupt_stats)

    def bandlimited_norm(tmp):
        from modeling_lact_audio.processors import LaCTFeatureExtractor

        fe = LaCTFeatureExtractor(normalization="global")
        fe.fit_normalization([noise(8000, 1), noise(8000, 2)], sampling_rate=8000)
        feats = fe(noise(8000, 3), sampling_rate=8000, return_tensors="np")["input_features"]
        expect(np.isfinite(feats).all() and np.abs(feats).max() < 1e3, "band-limited fit gives unbounded features")

    add("audio_input", "global_norm_on_band_limited_audio", bandlimited_norm)


def _tokenizer_probes():
    def bad_decode(ids, what, batch=False):
        def fn(tmp):
            tok = ctc_tokenizer()
            got = (
                tok.batch_decode(ids() if callable(ids) else ids)
                if batch
                else tok.decode(ids() if callable(ids) else ids)
            )
            accepted(f"{what} (decoded to {got!r})")

        return fn

    n = lambda: len(ctc_tokenizer())  # noqa: E731
    cases = {
        "negative_id": ([3, -5, 4], "a negative id", False),
        "id_equal_to_vocab_size": (lambda: torch.tensor([[3, n()]]), "an id == vocab size", True),
        "huge_id": ([3, 2**62], "an id of 2**62", False),
        "float_tensor_ids": (torch.tensor([3.0, 4.7]), "float ids", False),
        "python_float_ids": ([3.0, 4.5], "Python float ids", False),
        "logits_instead_of_ids": (lambda: torch.randn(2, 5, 7), "logits [B, T, V]", True),
        "string_ids": (["h", "i"], "strings as ids", False),
        "none_in_batch": ([[3, None]], "None inside a batch", True),
        "none_batch": (None, "None as the batch", True),
        "bool_ids": (torch.tensor([True, False]), "bool ids", False),
        "nested_three_levels": ([[[3, 4]]], "a 3-level nested list to decode", False),
    }
    for name, (ids, what, batch) in cases.items():
        add("tokenizer", name, bad_decode(ids, what, batch))

    def good(call, check):
        def fn(tmp):
            check(call(ctc_tokenizer()))

        return fn

    add(
        "tokenizer",
        "numpy_int32_ids",
        good(
            lambda t: (t.decode(np.array([3, 3, 0, 3], np.int32)), t.decode([3, 0, 3])),
            lambda r: expect(r[0] == r[1], str(r)),
        ),
    )
    add("tokenizer", "empty_ids", good(lambda t: t.decode([]), lambda r: expect(r == "", repr(r))))
    add(
        "tokenizer",
        "empty_row_in_batch",
        good(lambda t: t.batch_decode([[], [3]]), lambda r: expect(r[0] == "", repr(r))),
    )

    def label_padding(tmp):
        tok = ctc_tokenizer()
        labels = torch.tensor([[3, 4, -100], [5, -100, -100]])
        want = tok.batch_decode(labels.clamp_min(0), group_tokens=False)
        expect(tok.batch_decode(labels, group_tokens=False) == want, "-100 padding not read as the blank")
        expect(processor().batch_decode(labels, group_tokens=False) == want, "processor reads -100 otherwise")

    add("tokenizer", "label_padding_minus_100", label_padding)

    def roundtrip(tmp):
        tok = ctc_tokenizer()
        ids = tok("hello world").input_ids
        expect(tok.decode(ids, group_tokens=False) == "hello world", f"round trip gave {tok.decode(ids)!r}")

    add("tokenizer", "encode_decode_round_trip", roundtrip)

    def unknown_chars(tmp):
        tok = ctc_tokenizer()
        ids = tok("héllo ☃ 42").input_ids
        expect(all(0 <= i < len(tok) for i in ids), f"ids out of the vocabulary: {ids}")

    add("tokenizer", "unknown_characters_map_into_vocabulary", unknown_chars)

    def counts(audio_n, text, what):
        def fn(tmp):
            audio = [noise(4000, i) for i in range(audio_n)] if audio_n > 1 else noise(4000)
            processor()(audio=audio, text=text, sampling_rate=SR)
            accepted(what)

        return fn

    add("tokenizer", "processor_2_audios_1_text", counts(2, ["hello"], "2 audios with 1 text"))
    add("tokenizer", "processor_1_audio_2_texts", counts(1, ["hello", "bye"], "1 audio with 2 texts"))

    def nothing(tmp):
        processor()()
        accepted("a processor call with neither audio nor text")

    add("tokenizer", "processor_without_inputs", nothing)

    def processor_list_audio(tmp):
        out = processor()(audio=noise(4000, 1).tolist(), text="hello", sampling_rate=SR)
        expect(len(out["labels"]) > 0 and np.isfinite(np.asarray(out["input_features"][0])).all(), "bad output")

    add("tokenizer", "processor_list_audio_with_text", processor_list_audio)


def _audio_tokenizer_probes():
    def bad_encode(audio, what, sr=SR):
        def fn(tmp):
            codes = audio_tokenizer().encode(audio() if callable(audio) else audio, sampling_rate=sr)
            accepted(f"{what} (codes {tuple(codes.shape)}, all zero={bool((codes == 0).all())})")

        return fn

    add("audio_tokenizer", "encode_scaled_1e20", bad_encode(lambda: noise(8000, scale=1e20), "audio scaled by 1e20"))
    add("audio_tokenizer", "encode_empty", bad_encode(np.zeros(0, np.float32), "empty audio"))
    add("audio_tokenizer", "encode_nan", bad_encode(lambda: np.full(8000, np.nan, np.float32), "NaN audio"))
    add("audio_tokenizer", "encode_at_16_hz", bad_encode(lambda: noise(8000), "a 16 Hz rate", sr=16))

    def unfitted(tmp):
        from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig

        LaCTAudioTokenizer(LaCTAudioTokenizerConfig(num_codebooks=2, codebook_size=8)).encode(noise(8000), SR)
        accepted("encoding with unfitted codebooks")

    add("audio_tokenizer", "encode_before_fit", unfitted)

    def bad_decode(codes, what):
        def fn(tmp):
            audio = audio_tokenizer().decode(codes)
            accepted(f"{what} (audio {tuple(audio.shape)})")

        return fn

    add("audio_tokenizer", "decode_one_frame", bad_decode(torch.zeros(1, 2, 1, dtype=torch.long), "1 code frame"))
    add("audio_tokenizer", "decode_float_codes", bad_decode(torch.zeros(1, 2, 6), "float codes"))
    add("audio_tokenizer", "decode_wrong_codebooks", bad_decode(torch.zeros(1, 3, 6, dtype=torch.long), "K=3 codes"))
    add("audio_tokenizer", "decode_out_of_range", bad_decode(torch.full((1, 2, 6), 8), "codes == codebook_size"))
    add("audio_tokenizer", "decode_negative", bad_decode(torch.full((1, 2, 6), -1), "negative codes"))
    add("audio_tokenizer", "decode_rank2", bad_decode(torch.zeros(2, 6, dtype=torch.long), "codes [K, T']"))
    add("audio_tokenizer", "decode_empty", bad_decode(torch.zeros(1, 2, 0, dtype=torch.long), "empty codes"))

    for frames in (2, 3, 6):

        def short(tmp, frames=frames):
            tokenizer = audio_tokenizer()
            audio = tokenizer.decode(torch.zeros(1, 2, frames, dtype=torch.long))
            want = (1, (frames - 1) * tokenizer.config.hop_length)
            expect(tuple(audio.shape) == want and finite(audio), f"got {tuple(audio.shape)}, want {want}")

        add("audio_tokenizer", f"decode_{frames}_frames", short)

    def silence_roundtrip(tmp):
        tokenizer = audio_tokenizer()
        codes = tokenizer.encode(np.zeros(8000, np.float32), sampling_rate=SR)
        audio = tokenizer.decode(codes)
        expect(finite(audio) and audio.shape[-1] > 0, "silence does not round-trip to finite audio")

    def speech_codes_vary(tmp):
        codes = audio_tokenizer().encode(noise(8000, 5), sampling_rate=SR)
        expect(codes.min() >= 0 and codes.max() < 8 and len(codes.unique()) > 1, f"degenerate codes {codes.unique()}")

    def resampled(tmp):
        tokenizer = audio_tokenizer()
        codes = tokenizer.encode(noise(4000, 6), sampling_rate=8000)
        expect(codes.shape[-1] == tokenizer.num_frames(8000), f"{codes.shape[-1]} frames for 0.5 s at 8 kHz")

    add("audio_tokenizer", "silence_round_trip", silence_roundtrip)
    add("audio_tokenizer", "codes_in_range_and_varied", speech_codes_vary)
    add("audio_tokenizer", "encode_resampled_8k", resampled)


def _config_probes():
    cases = [
        ("rope_theta", 0),
        ("rope_theta", -1.0),
        ("rope_theta", float("inf")),
        ("rms_norm_eps", -1e-6),
        ("rms_norm_eps", "1e-6"),
        ("feature_hop_length", 0),
        ("vocab_size", "30"),
        ("vocab_size", 0),
        ("num_hidden_layers", True),
        ("num_hidden_layers", 0),
        ("lact_chunk_size", 64.0),
        ("lact_chunk_size", 0),
        ("base_lr", float("nan")),
        ("base_lr", -0.1),
        ("hidden_dropout", "0.1"),
        ("hidden_dropout", 1.0),
        ("initializer_range", -0.02),
        ("weight_norm", False),
        ("task", "bogus"),
        ("hidden_size", 15),
        ("muon_steps", -1),
        ("lact_order", "sideways"),
        ("attention_pattern", "everything"),
    ]
    for field, value in cases:

        def fn(tmp, field=field, value=value):
            from modeling_lact_audio import LaCTAudioConfig

            LaCTAudioConfig(**{field: value})
            accepted(f"LaCTAudioConfig({field}={value!r})")

        add("config", f"{field}={value!r}", fn)

    def edge_values(tmp):
        from modeling_lact_audio import LaCTAudioConfig

        config = LaCTAudioConfig(rope_theta=500_000, rms_norm_eps=1e-12, initializer_range=0.0)
        back = LaCTAudioConfig.from_dict(config.to_dict())
        expect(back.rope_theta == 500_000 and back.rms_norm_eps == 1e-12, "edge values not kept")

    add("config", "valid_edge_values_round_trip", edge_values)

    def tampered_config_json(tmp):
        from modeling_lact_audio import LaCTAudioForCTC

        ctc_model().save_pretrained(tmp / "m")
        config = json.loads((tmp / "m" / "config.json").read_text())
        config["rope_theta"] = -5
        (tmp / "m" / "config.json").write_text(json.dumps(config))
        LaCTAudioForCTC.from_pretrained(tmp / "m")
        accepted("a saved config.json with rope_theta=-5")

    add("config", "saved_config_json_with_negative_rope_theta", tampered_config_json)

    def garbage_config_json(tmp):
        from modeling_lact_audio import LaCTAudioForCTC

        ctc_model().save_pretrained(tmp / "m")
        (tmp / "m" / "config.json").write_text("{not json")
        LaCTAudioForCTC.from_pretrained(tmp / "m")
        accepted("a config.json that is not JSON")

    add("config", "saved_config_json_not_json", garbage_config_json)


def _model_probes():
    def ctc_call(**kwargs):
        with torch.inference_mode():
            return ctc_model()(**kwargs)

    def refused(build, what):
        def fn(tmp):
            out = build()
            accepted(f"{what} (returned {type(out).__name__})")

        return fn

    def cache_batch(tmp):
        from modeling_lact_audio import LaCTCache

        x, _ = features()
        cache = LaCTCache(ctc_model().config.num_hidden_layers)
        ctc_call(input_features=x[:1], past_key_values=cache, use_cache=True)
        ctc_call(input_features=x, past_key_values=cache, use_cache=True)
        accepted("a cache of batch 1 reused with a batch of 2")

    add("model_inputs", "ctc_cache_of_batch_1_with_batch_2", cache_batch)
    add("model_inputs", "ctc_no_time_steps", refused(lambda: ctc_call(input_features=features()[0][:, :0]), "T=0"))
    add("model_inputs", "ctc_no_examples", refused(lambda: ctc_call(input_features=features()[0][:0]), "B=0"))
    for rows in (1, 3):
        add(
            "model_inputs",
            f"ctc_labels_of_batch_{rows}",
            refused(
                lambda rows=rows: ctc_call(input_features=features()[0], labels=ctc_labels(rows)),
                f"labels of {rows} rows",
            ),
        )
    add(
        "model_inputs",
        "ctc_wrong_mel_count",
        refused(lambda: ctc_call(input_features=features(mels=7)[0]), "7 mels for 8"),
    )
    add("model_inputs", "ctc_rank2_features", refused(lambda: ctc_call(input_features=features()[0][0]), "[T, mels]"))
    add(
        "model_inputs",
        "ctc_integer_features",
        refused(lambda: ctc_call(input_features=features()[0].long()), "int64 features"),
    )
    add(
        "model_inputs",
        "ctc_mask_of_another_shape",
        refused(
            lambda: ctc_call(input_features=features()[0], attention_mask=torch.ones(2, 30)), "a [2, 30] mask for T=37"
        ),
    )
    add(
        "model_inputs",
        "ctc_waveform_to_log_mel_model",
        refused(lambda: ctc_call(input_values=torch.randn(2, 16000)), "input_values to a log-mel model"),
    )

    def nan_features_checked(tmp):
        x, mask = features()
        x[0, 3, 2] = float("nan")
        with value_checks():
            out = ctc_call(input_features=x, attention_mask=mask)
        accepted(f"NaN features under check_values() (logits finite={finite(out.logits)})")

    add("model_inputs", "ctc_nan_features_with_value_checks", nan_features_checked)

    def nan_features_default(tmp):
        x, mask = features()
        x[0, 3, 2] = float("nan")
        out = ctc_call(input_features=x, attention_mask=mask)
        expect(finite(out.logits[1]), "a NaN in example 0 leaked into example 1's logits")
        expect(not finite(out.logits[0]), "a NaN input gave finite logits (it was dropped silently)")

    add(
        "model_inputs",
        "ctc_nan_features_default_stay_in_their_row",
        nan_features_default,
        note="value checks off by default: NaN in, NaN out, but never into another example",
    )

    def labels_out_of_vocab(tmp):
        x, mask = features()
        labels = ctc_labels(2).clone()
        labels[0, 0] = 99
        with value_checks():
            out = ctc_call(input_features=x, attention_mask=mask, labels=labels)
        accepted(f"a label id of 99 for vocab 11 under check_values() (loss {float(out.loss):.3g})")

    add("model_inputs", "ctc_label_id_out_of_vocab_with_value_checks", labels_out_of_vocab)

    def all_padding_row(tmp):
        x, mask = features()
        mask[1] = 0
        out = ctc_call(input_features=x, attention_mask=mask, labels=ctc_labels(2))
        expect(finite(out.logits) and finite(out.loss), f"fully padded row: loss {out.loss}")

    add("model_inputs", "ctc_fully_padded_example", all_padding_row)

    def all_ignored_labels(tmp):
        x, mask = features()
        out = ctc_call(input_features=x, attention_mask=mask, labels=torch.full((2, 4), -100))
        expect(finite(out.loss), f"all -100 labels: loss {out.loss}")

    add("model_inputs", "ctc_all_labels_ignored", all_ignored_labels)

    def labels_longer_than_output(tmp):
        x, mask = features(T=9)
        labels = torch.randint(1, 11, (2, 40))
        out = ctc_call(input_features=x, attention_mask=mask, labels=labels)
        expect(finite(out.loss), f"labels longer than the output: loss {out.loss}")

    add("model_inputs", "ctc_labels_longer_than_output", labels_longer_than_output)

    def padded_equals_single(tmp):
        x, mask = features(T=37)
        mask[1, 21:] = 0
        x = x * mask[..., None]
        model = ctc_model()
        with torch.inference_mode():
            batch = model(input_features=x, attention_mask=mask).logits
            single = model(input_features=x[1:, :21]).logits
        n = single.shape[1]
        expect(
            torch.allclose(batch[1, :n], single[0], atol=1e-4), f"differ by {(batch[1, :n] - single[0]).abs().max()}"
        )

    add("model_inputs", "ctc_padded_batch_equals_single", padded_equals_single)

    def streaming(tmp):
        from modeling_lact_audio import LaCTCache

        x, _ = features(B=1, T=48)
        model = ctc_model()
        cache = LaCTCache(model.config.num_hidden_layers)
        with torch.inference_mode():
            pieces = [
                model(input_features=x[:, i : i + 16], past_key_values=cache, use_cache=True).logits
                for i in (0, 16, 32)
            ]
            full = model(input_features=x).logits
        streamed = torch.cat(pieces, 1)
        expect(streamed.shape == full.shape, f"streamed {tuple(streamed.shape)} vs full {tuple(full.shape)}")
        expect(torch.allclose(streamed, full, atol=1e-4), f"streamed differs by {(streamed - full).abs().max()}")

    add("model_inputs", "ctc_streaming_equals_full", streaming)

    def long_stream(tmp):
        from modeling_lact_audio import LaCTCache

        model = ctc_model()
        cache = LaCTCache(model.config.num_hidden_layers)
        g = torch.Generator().manual_seed(1)
        base = torch.randn(1, 1, 8, generator=g)
        with torch.inference_mode():
            for _ in range(100):
                out = model(
                    input_features=base + 0.1 * torch.randn(1, 64, 8, generator=g),
                    past_key_values=cache,
                    use_cache=True,
                )
                expect(finite(out.logits) and out.logits.abs().max() < 1e3, "a long stream diverged")

    add("model_inputs", "ctc_long_stream_6400_frames_stays_bounded", long_stream)

    def lm_call(**kwargs):
        with torch.inference_mode():
            return lm_model()(**kwargs)

    def lm_cache_batch(tmp):
        from modeling_lact_audio import LaCTCache

        ids = lm_ids()
        cache = LaCTCache(lm_model().config.num_hidden_layers)
        lm_call(input_ids=ids[:2], past_key_values=cache, use_cache=True)
        lm_call(input_ids=ids, past_key_values=cache, use_cache=True)
        accepted("an LM cache of batch 1 reused with a batch of 2")

    add("model_inputs", "lm_cache_of_batch_1_with_batch_2", lm_cache_batch)
    add("model_inputs", "lm_empty_ids", refused(lambda: lm_call(input_ids=lm_ids()[:, :0]), "T=0 ids"))
    add(
        "model_inputs",
        "lm_labels_of_another_shape",
        refused(lambda: lm_call(input_ids=lm_ids(), labels=lm_ids()[:2]), "labels [2, T]"),
    )
    add("model_inputs", "lm_rows_not_multiple_of_K", refused(lambda: lm_call(input_ids=lm_ids()[:3]), "3 rows for K=2"))
    add("model_inputs", "lm_float_ids", refused(lambda: lm_call(input_ids=lm_ids().float()), "float ids"))
    add("model_inputs", "lm_rank1_ids", refused(lambda: lm_call(input_ids=lm_ids()[0]), "1-d ids"))

    def out_of_range(value, checks):
        def fn(tmp):
            ids = lm_ids()
            ids[0, 0] = value
            with value_checks(checks):
                out = lm_call(input_ids=ids)
            accepted(f"code {value} for codebook_size 13 (logits finite={finite(out.logits)})")

        return fn

    add("model_inputs", "lm_code_too_large_with_value_checks", out_of_range(13, True))
    add("model_inputs", "lm_negative_code_with_value_checks", out_of_range(-1, True))
    add("model_inputs", "lm_code_too_large_default", out_of_range(13, False), note="value checks off by default")
    add("model_inputs", "lm_negative_code_default", out_of_range(-1, False), note="value checks off by default")
    add(
        "model_inputs",
        "lm_conditioning_id_out_of_range",
        lambda tmp: (
            lm_call(input_ids=lm_ids(), conditioning_ids=torch.tensor([0, 7])),
            accepted("conditioning id 7 of 3"),
        ),
        note="value checks off by default",
    )
    add(
        "model_inputs",
        "lm_conditioning_ids_of_another_batch",
        lambda tmp: (lm_call(input_ids=lm_ids(), conditioning_ids=torch.tensor([0, 1, 2])), accepted("3 ids for B=2")),
    )
    add(
        "model_inputs",
        "lm_conditioning_embeds_wrong_shape",
        lambda tmp: (
            lm_call(input_ids=lm_ids(), conditioning_embeds=torch.randn(2, 4)),
            accepted("embeds [2, 4] for dim 5"),
        ),
    )
    add(
        "model_inputs",
        "lm_generate_beam_search",
        lambda tmp: (lm_model().generate(lm_ids(B=1), num_beams=2, max_new_tokens=2), accepted("num_beams=2")),
    )

    def lm_generate(tmp):
        model = lm_model()
        ids = lm_ids(B=1)
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        expect(out.shape == (2, ids.shape[1] + 6), f"generated shape {tuple(out.shape)}")
        expect(out.min() >= 0 and out.max() < model.config.codebook_size, "generated codes out of range")
        expect(torch.equal(out[:, : ids.shape[1]], ids), "the prompt was changed")

    add("model_inputs", "lm_greedy_generate", lm_generate)

    def lm_loss(tmp):
        ids = lm_ids()
        expect(finite(lm_call(input_ids=ids, labels=ids).loss), "non-finite LM loss")

    add("model_inputs", "lm_loss_finite", lm_loss)

    @cache
    def waveform_model():
        from modeling_lact_audio import LaCTAudioForCTC

        config = ctc_config(
            frontend="waveform", conv_channels=[8, 8, 8], conv_kernel_sizes=[10, 3, 3], conv_strides=[5, 2, 2]
        )
        return LaCTAudioForCTC(config).eval()

    def waveform_short(tmp):
        with torch.inference_mode():
            logits = waveform_model()(input_values=torch.randn(1, 5)).logits
        expect(logits.shape[1] >= 1 and finite(logits), f"5 samples give logits {tuple(logits.shape)}")

    def waveform_empty(tmp):
        with torch.inference_mode():
            out = waveform_model()(input_values=torch.randn(1, 0))
        accepted(f"0 samples to a waveform model (logits {tuple(out.logits.shape)})")

    def waveform_features(tmp):
        with torch.inference_mode():
            out = waveform_model()(input_features=features()[0])
        accepted(f"input_features to a waveform model (logits {tuple(out.logits.shape)})")

    add("model_inputs", "waveform_5_samples_give_finite_logits", waveform_short)
    add("model_inputs", "waveform_no_samples", waveform_empty)
    add("model_inputs", "waveform_model_given_log_mel_features", waveform_features)

    for layers in (1, 5):

        def cache_layers(tmp, layers=layers):
            from modeling_lact_audio import LaCTCache

            x = features()[0]
            want = ctc_call(input_features=x).logits
            got = ctc_call(input_features=x, past_key_values=LaCTCache(layers), use_cache=True).logits
            expect(torch.allclose(got, want, atol=1e-5), f"a {layers}-layer cache changes a 2-layer model's logits")

        add("model_inputs", f"ctc_cache_of_{layers}_layers_for_2", cache_layers)

    def not_a_cache(tmp):
        ctc_call(input_features=features()[0], past_key_values=[(torch.zeros(1), torch.zeros(1))] * 2, use_cache=True)
        accepted("a list of tuples as past_key_values")

    add("model_inputs", "ctc_legacy_tuple_cache", not_a_cache)


def _weights_probes():
    def saved(tmp) -> Path:
        folder = tmp / "model"
        ctc_model().save_pretrained(folder)
        return folder

    def load(folder, **kwargs):
        from modeling_lact_audio import LaCTAudioForCTC

        return LaCTAudioForCTC.from_pretrained(folder, **kwargs)

    def logits_of(model):
        x, mask = features()
        with torch.inference_mode():
            return model.eval()(input_features=x, attention_mask=mask).logits

    def corrupt(edit, what, record=False):
        def fn(tmp):
            from modeling_lact_audio.export.target import write_export_record

            folder = saved(tmp)
            if record:
                write_export_record(folder, tool="probe")
            path = folder / "model.safetensors"
            data = bytearray(path.read_bytes())
            path.write_bytes(bytes(edit(data)))
            model = load(folder)
            accepted(f"{what} (logits finite={finite(logits_of(model))})")

        return fn

    def nan_tail(data):
        data[-64:] = b"\xff" * 64
        return data

    def inf_tail(data):
        data[-64:] = struct.pack("<f", float("inf")) * 16
        return data

    def bit_flip(data):
        header = struct.unpack("<Q", data[:8])[0]
        data[8 + header + 1] ^= 0x01
        return data

    add("weights", "nan_tail", corrupt(nan_tail, "a weights file whose tail is NaN"))
    add("weights", "inf_tail", corrupt(inf_tail, "a weights file whose tail is Inf"))
    add("weights", "truncated_file", corrupt(lambda d: d[: len(d) // 2], "a weights file cut in half"))
    add("weights", "garbage_header", corrupt(lambda d: b"\x00" * 8 + d[8:], "a zeroed header length"))
    add("weights", "empty_file", corrupt(lambda d: b"", "an empty weights file"))
    add("weights", "bit_flip_with_export_record", corrupt(bit_flip, "a changed mantissa bit", record=True))
    add(
        "weights",
        "bit_flip_without_export_record",
        corrupt(bit_flip, "a changed mantissa bit (no record to check against)"),
        note="undetectable without a checksum: finite, slightly different weights",
    )

    def missing_listed(tmp):
        from modeling_lact_audio.export.target import write_export_record

        folder = saved(tmp)
        write_export_record(folder, tool="probe")
        (folder / "model.safetensors").unlink()
        load(folder)
        accepted("a folder whose listed weights file is missing")

    add("weights", "listed_weights_missing", missing_listed)

    def missing_weights(tmp):
        folder = saved(tmp)
        (folder / "model.safetensors").unlink()
        load(folder)
        accepted("a folder without weights")

    add("weights", "no_weights_file", missing_weights)

    def missing_folder(tmp):
        load(tmp / "nowhere")
        accepted("a folder that does not exist")

    add("weights", "missing_folder", missing_folder)

    def missing_config(tmp):
        folder = saved(tmp)
        (folder / "config.json").unlink()
        load(folder)
        accepted("a folder without config.json")

    add("weights", "no_config_json", missing_config)

    def planted_bin(tmp):
        folder = saved(tmp)
        (folder / "model.safetensors").unlink()
        marker = tmp / "ran"
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Planted(marker)))
        try:
            load(folder)
        finally:
            expect(not marker.exists(), "a planted pytorch_model.bin pickle RAN CODE at load")
        accepted("a pickle as pytorch_model.bin")

    add("weights", "planted_pickle_as_pytorch_model_bin", planted_bin)

    def roundtrip(tmp):
        folder = saved(tmp)
        got = logits_of(load(folder))
        expect(torch.equal(got, logits_of(ctc_model())), "reloaded logits differ")

    add("weights", "clean_round_trip", roundtrip)

    def bf16_storage(tmp):
        folder = tmp / "bf16"
        model = ctc_model()
        from modeling_lact_audio import LaCTAudioForCTC

        LaCTAudioForCTC(model.config).to(torch.bfloat16).save_pretrained(folder)
        got = logits_of(load(folder, dtype=torch.float32))
        expect(finite(got), "bf16-stored weights give non-finite logits")

    add("weights", "bf16_storage_loads_finite", bf16_storage)

    def shape_mismatch(tmp):
        from modeling_lact_audio import LaCTAudioForCTC

        folder = tmp / "other"
        LaCTAudioForCTC(ctc_config(vocab_size=12)).save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        config["vocab_size"] = 11
        (folder / "config.json").write_text(json.dumps(config))
        model = load(folder)
        accepted(f"weights of vocab 12 with a config of vocab 11 ({type(model).__name__})")

    add("weights", "weights_of_another_shape", shape_mismatch)

    def remote_code_changed(tmp):
        from transformers import AutoModelForCTC

        from modeling_lact_audio import modeling_lact_audio as modeling

        shipped = REPO_DIR / "model_cards" / "checkpoints" / "lact_tiny_ctc"
        if not shipped.is_dir():
            wrong(f"{shipped} is missing")
        folder = tmp / "changed"
        shutil.copytree(shipped, folder)
        (folder / "lact_kernels.py").write_text((folder / "lact_kernels.py").read_text() + "\nsyntax error here\n")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        modeling.logger.addHandler(handler)
        try:
            model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)
        finally:
            modeling.logger.removeHandler(handler)
        said = " ".join(r.getMessage() for r in records)
        if type(model).__module__ == "modeling_lact_audio.modeling_lact_audio":
            expect("lact_kernels.py" in said, "the installed code ran instead of the folder's, without a word")

    add(
        "weights",
        "trust_remote_code_with_changed_folder_code",
        remote_code_changed,
        note="transformers prefers the registered classes; the load must name the differing files",
    )


def _op_probes():
    from modeling_lact_audio.kernels import FastWeightState, lact_swiglu, lact_swiglu_reference

    ops = {"chunk": lact_swiglu, "reference": lact_swiglu_reference}

    def bad(op, edit, what, checks=False):
        def fn(tmp):
            q, k, v, lr, state = op_inputs()
            kwargs = dict(chunk_size=4)
            q, k, v, lr, state, kwargs = edit(q, k, v, lr, state, kwargs)
            with value_checks(checks):
                out, _ = op(q, k, v, lr, state, **kwargs)
            accepted(f"{what} (output finite={finite(out)})")

        return fn

    def nan_state(q, k, v, lr, state, kw):
        bad_state = FastWeightState.from_weights(state.w0, state.w1.clone(), state.w2)
        bad_state.w1[0, 0, 0, 0] = float("nan")
        return q, k, v, lr, bad_state, kw

    def set_kw(**new):
        return lambda q, k, v, lr, s, kw: (q, k, v, lr, s, {**kw, **new})

    def empty_state(q, k, v, lr, s, kw):
        empty = FastWeightState.from_weights(torch.zeros(1, 2, 0, 4), torch.zeros(1, 2, 4, 0), torch.zeros(1, 2, 0, 4))
        return q, k, v, lr, empty, kw

    cases = {
        "nan_state_with_value_checks": (nan_state, "a NaN state", True),
        "k_times_1e20_with_value_checks": (lambda q, k, v, lr, s, kw: (q, k * 1e20, v, lr, s, kw), "k*1e20", True),
        "negative_lr_with_value_checks": (lambda q, k, v, lr, s, kw: (q, k, v, -lr, s, kw), "negative rates", True),
        "momentum_1.5_with_value_checks": (set_kw(momentum=torch.full((1, 10, 2), 1.5)), "momentum 1.5", True),
        "nan_q_with_value_checks": (lambda q, k, v, lr, s, kw: (q * float("nan"), k, v, lr, s, kw), "NaN q", True),
        "integer_momentum": (set_kw(momentum=torch.zeros(1, 10, 2, dtype=torch.long)), "integer momentum", False),
        "integer_lr": (lambda q, k, v, lr, s, kw: (q, k, v, lr.long(), s, kw), "integer lr", False),
        "integer_q": (lambda q, k, v, lr, s, kw: (q.long(), k, v, lr, s, kw), "integer q", False),
        "meta_state": (lambda q, k, v, lr, s, kw: (q, k, v, lr, s.to("meta"), kw), "a state on the meta device", False),
        "q_rank3": (lambda q, k, v, lr, s, kw: (q[0], k, v, lr, s, kw), "a 3-d q", False),
        "v_of_another_dim": (lambda q, k, v, lr, s, kw: (q, k, v[..., :3], lr, s, kw), "v with D=3 for 4", False),
        "lr_of_wrong_width": (lambda q, k, v, lr, s, kw: (q, k, v, lr[..., :2], s, kw), "lr [..., 2]", False),
        "state_of_another_batch": (
            lambda q, k, v, lr, s, kw: (
                q,
                k,
                v,
                lr,
                FastWeightState.from_weights(*(t.expand(3, -1, -1, -1) for t in (s.w0, s.w1, s.w2))),
                kw,
            ),
            "a state of batch 3 for B=1",
            False,
        ),
        "chunk_size_0": (set_kw(chunk_size=0), "chunk_size=0", False),
        "chunk_size_bool": (set_kw(chunk_size=True), "chunk_size=True", False),
        "chunk_size_float": (set_kw(chunk_size=4.0), "chunk_size=4.0", False),
        "order_bogus": (set_kw(order="sideways"), "order='sideways'", False),
        "muon_steps_negative": (set_kw(muon_steps=-1), "muon_steps=-1", False),
        "state_not_a_state": (
            lambda q, k, v, lr, s, kw: (q, k, v, lr, (s.w0, s.w1, s.w2), kw),
            "a tuple as the state",
            False,
        ),
        "mask_wrong_shape": (set_kw(mask=torch.ones(1, 7, dtype=torch.bool)), "a [1, 7] mask for T=10", False),
        "mask_float": (set_kw(mask=torch.ones(1, 10)), "a float mask", False),
        "state_with_empty_dims": (empty_state, "a state with Dh=0", False),
    }
    for op_name, op in ops.items():
        for name, (edit, what, checks) in cases.items():
            add("op", f"{op_name}/{name}", bad(op, edit, what, checks))

    def batch0(tmp):
        q, k, v, lr, state = op_inputs()
        lact_swiglu(q[:0], k[:0], v[:0], lr[:0], state, chunk_size=4)
        accepted("B=0 inputs")

    add("op", "chunk/empty_batch", batch0)

    for op_name, op in ops.items():

        def chunk_change(tmp, op=op):
            q, k, v, lr, state = op_inputs()
            _, mid = op(q[:, :6], k[:, :6], v[:, :6], lr[:, :6], state, chunk_size=4, order="update_apply")
            out, _ = op(q[:, 6:], k[:, 6:], v[:, 6:], lr[:, 6:], mid, chunk_size=3, order="update_apply")
            accepted("a chunk size changed in the middle of a stream")

        add("op", f"{op_name}/chunk_size_changes_mid_stream", chunk_change)

        def lr_double(tmp, op=op):
            q, k, v, lr, state = op_inputs()
            want, _ = op(q, k, v, lr, state, chunk_size=4)
            got, _ = op(q, k, v, lr.double(), state, chunk_size=4)
            expect(got.dtype == want.dtype and torch.allclose(got, want, atol=1e-6), "float64 rates change the output")

        add("op", f"{op_name}/lr_dtype_differs_from_state", lr_double)

        def nan_state_default(tmp, op=op):
            q, k, v, lr, state = op_inputs()
            bad_state = FastWeightState.from_weights(state.w0, state.w1.clone(), state.w2)
            bad_state.w1[0, 0, 0, 0] = float("nan")
            out, _ = op(q, k, v, lr, bad_state, chunk_size=4)
            expect(not finite(out), "a NaN state gave finite output (NaN dropped somewhere)")

        add(
            "op", f"{op_name}/nan_state_default_propagates", nan_state_default, note="value checks off: NaN in, NaN out"
        )

        def k_huge_default(tmp, op=op):
            q, k, v, lr, state = op_inputs()
            out, new = op(q, k * 1e20, v, lr, state, chunk_size=4)
            expect(finite(out) and finite(new.w0), "k*1e20 without value checks gives non-finite output")

        add("op", f"{op_name}/k_times_1e20_default", k_huge_default, note="value checks off by default")

    def matches_float64_reference(op, dtype, T, order, atol):
        def fn(tmp):
            q, k, v, lr, state = op_inputs(dtype=torch.float64, B=2, T=T, D=16, Dh=32)
            want, _ = lact_swiglu_reference(q, k, v, lr, state, chunk_size=4, order=order)
            cast = lambda t: t.to(dtype)  # noqa: E731
            low = FastWeightState.from_weights(cast(state.w0), cast(state.w1), cast(state.w2))
            got, _ = op(cast(q), cast(k), cast(v), cast(lr), low, chunk_size=4, order=order)
            expect(got.shape == q.shape and got.dtype == low.dtype, f"output {tuple(got.shape)} {got.dtype}")
            diff = float((got.double() - want).abs().max())
            expect(diff < atol, f"differs from the float64 reference by {diff:.3g} ({dtype}, T={T}, {order})")

        return fn

    for op_name, op in ops.items():
        for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-3), (torch.bfloat16, 0.1)):
            for T in (1, 63):
                for order in ("apply_update", "update_apply"):
                    name = f"{op_name}/equals_float64_reference/{str(dtype)[6:]}/T{T}/{order}"
                    add("op", name, matches_float64_reference(op, dtype, T, order, atol))

    def lr_huge(tmp):
        q, k, v, lr, state = op_inputs()
        with value_checks():
            out, new = lact_swiglu(q, k, v, torch.full_like(lr, 1e30), state, chunk_size=4)
        expect(finite(out) and finite(new.w1), "lr=1e30 under check_values() gives non-finite output silently")

    add("op", "chunk/lr_1e30_with_value_checks_is_finite_or_refused", lr_huge)

    def mixed_dtypes(tmp):
        q, k, v, lr, state = op_inputs()
        want, _ = lact_swiglu(q, k, v, lr, state, chunk_size=4)
        got, _ = lact_swiglu(q.double(), k, v, lr, state, chunk_size=4)
        expect(torch.allclose(got.to(want.dtype), want, atol=1e-5), "float64 q with float32 k changes the result")

    add("op", "chunk/q_float64_k_float32", mixed_dtypes)

    def no_weight_norm(tmp):
        q, k, v, lr, state = op_inputs(T=40)
        out, new = lact_swiglu(q, k, v, lr, state, chunk_size=4, weight_norm=False)
        expect(finite(out) and finite(new.w1), "weight_norm=False at the op level gives non-finite output")

    add("op", "weight_norm_false_short_stream_finite", no_weight_norm)

    def weight_norm_false_config(tmp):
        from modeling_lact_audio import LaCTAudioForCTC

        LaCTAudioForCTC(ctc_config(weight_norm=False))
        accepted("a model with weight_norm=False")

    add("op", "model_with_weight_norm_false", weight_norm_false_config)


class _Planted:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _training_probes():
    from modeling_lact_audio.training.checkpoint_files import (
        TRAINING_STATE,
        check_checkpoint_files,
        read_training_state,
        write_training_state,
    )
    from modeling_lact_audio.training.trainer import recover_interrupted_save, save_atomically, trim_log

    def checkpoint_with(name, folder_entry=False):
        def fn(tmp):
            for ok in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", TRAINING_STATE):
                (tmp / ok).write_text("")
            marker = tmp.parent / f"{tmp.name}_ran"
            if folder_entry:
                (tmp / name).mkdir()
            else:
                (tmp / name).write_bytes(pickle.dumps(_Planted(marker)))
            try:
                check_checkpoint_files(tmp, allowed=(TRAINING_STATE,))
            finally:
                expect(not marker.exists(), "the planted pickle ran")
            accepted(f"a checkpoint holding {name}")

        return fn

    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_12.pkl", "extra.bin", "notes.txt", "model.pkl"):
        add("training", f"checkpoint_holding_{name}", checkpoint_with(name))
    add("training", "checkpoint_holding_a_subfolder", checkpoint_with("pytorch_model_fsdp_0", folder_entry=True))
    add(
        "training",
        "checkpoint_folder_missing",
        lambda tmp: (check_checkpoint_files(tmp / "nowhere"), accepted("a missing checkpoint folder")),
    )

    def clean_checkpoint(tmp):
        for ok in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", TRAINING_STATE):
            (tmp / ok).write_text("")
        check_checkpoint_files(tmp, allowed=(TRAINING_STATE,))

    add("training", "clean_checkpoint_passes", clean_checkpoint)

    def state_text(text, what):
        def fn(tmp):
            if text is not None:
                (tmp / TRAINING_STATE).write_text(text)
            got = read_training_state(tmp)
            accepted(f"{what} (read {got!r})")

        return fn

    add("training", "training_state_not_json", state_text("{not json", "a training_state.json that is not JSON"))
    add("training", "training_state_missing", state_text(None, "a checkpoint without training_state.json"))
    add("training", "training_state_truncated", state_text('{"data": {"completed_st', "a torn training_state.json"))

    def state_roundtrip(tmp):
        write_training_state(tmp, {"data": {"completed_steps": 3, "best_metric": None}})
        expect(read_training_state(tmp)["data"]["completed_steps"] == 3, "state not read back")

    add("training", "training_state_round_trip", state_roundtrip)

    def make(path, text):
        path.mkdir()
        (path / "weights").write_text(text)

    def kill_between_renames_with_tmp(tmp):
        make(tmp / "last.old", "old")
        make(tmp / "last.tmp", "new")
        recover_interrupted_save(tmp / "last")
        expect((tmp / "last" / "weights").read_text() == "new", "the complete new save was not kept")
        expect(not (tmp / "last.old").exists(), "last.old left behind")

    def kill_between_renames_without_tmp(tmp):
        make(tmp / "best.old", "previous")
        recover_interrupted_save(tmp / "best")
        expect((tmp / "best" / "weights").read_text() == "previous", "the previous save was not restored")

    def kill_in_write(tmp):
        make(tmp / "last", "v1")

        def write(folder):
            make(folder, "half")
            raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            save_atomically(tmp / "last", write)
        save_atomically(tmp / "last", lambda folder: make(folder, "v2"))
        expect((tmp / "last" / "weights").read_text() == "v2", "the next save did not land")
        expect(
            sorted(p.name for p in tmp.iterdir()) == ["last"], f"left behind: {sorted(p.name for p in tmp.iterdir())}"
        )

    def stale_old(tmp):
        make(tmp / "last.old", "old")
        save_atomically(tmp / "last", lambda folder: make(folder, "v2"))
        expect(sorted(p.name for p in tmp.iterdir()) == ["last"], "a stale last.old survived a save")

    add("training", "kill_between_the_two_renames_new_complete", kill_between_renames_with_tmp)
    add("training", "kill_between_the_two_renames_no_new", kill_between_renames_without_tmp)
    add("training", "kill_inside_write_then_save_again", kill_in_write)
    add("training", "stale_old_folder_from_an_earlier_kill", stale_old)

    def log_lines(tmp):
        log = tmp / "log.jsonl"
        log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
        trim_log(log, 2)
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
        expect(steps == [1, 2], f"after trimming to step 2: {steps}")

    def kill_before_first_checkpoint(tmp):
        log = tmp / "log.jsonl"
        log.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2)))
        trim_log(log, 0)
        log.write_text(log.read_text() + "".join(json.dumps({"step": s}) + "\n" for s in (1, 2)))
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
        expect(steps == [1, 2], f"a restart before the first checkpoint logs {steps}")

    add("training", "trim_log_drops_later_steps_and_torn_lines", log_lines)
    add("training", "kill_before_the_first_checkpoint_logs_no_step_twice", kill_before_first_checkpoint)
    add("training", "trim_log_missing_file", lambda tmp: expect(trim_log(tmp / "missing.jsonl", 5) == 0, "not 0"))

    def shard_pickle(tmp):
        from modeling_lact_audio.corpus.dataset import read_shard, shard_path

        marker = tmp / "ran"
        path = shard_path(tmp, "job0")
        path.write_bytes(pickle.dumps(_Planted(marker)))
        try:
            rows = read_shard(path)
        finally:
            expect(not marker.exists(), "reading a corpus shard RAN CODE")
        accepted(f"a pickle as a corpus shard ({len(rows)} rows)")

    add("training", "corpus_shard_is_a_planted_pickle", shard_pickle, note="what matters: no code runs")

    def shard_missing(tmp):
        from modeling_lact_audio.corpus.dataset import read_shard

        read_shard(tmp / "nowhere.parquet")
        accepted("a missing shard")

    add("training", "corpus_shard_missing", shard_missing)

    def shard_roundtrip(tmp):
        from modeling_lact_audio.corpus.dataset import FEATURES, read_shard, write_shard

        row = {name: None for name in FEATURES}
        write_shard([row], tmp / "a.parquet")
        expect(len(read_shard(tmp / "a.parquet")) == 1, "row lost")

    add("training", "corpus_shard_round_trip", shard_roundtrip)


@cache
def export_source() -> Path:
    from modeling_lact_audio import LaCTAudioForCTC
    from modeling_lact_audio.presets import preset_config
    from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor

    work = tempfile.mkdtemp(prefix="hostile_export_src_")
    atexit.register(shutil.rmtree, work, True)
    folder = Path(work) / "best"
    torch.manual_seed(0)
    tokenizer = LaCTCTCTokenizer.from_texts(["hello world"])
    LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _export_probes():
    from modeling_lact_audio.export import checkpoint
    from modeling_lact_audio.export.target import EXPORT_RECORD, claim_target

    def foreign(folder):
        folder.mkdir()
        (folder / "thesis.tex").write_text("years of work")
        return folder

    def into_foreign(tmp):
        target = foreign(tmp / "home")
        try:
            checkpoint.main([str(export_source()), str(target)])
        finally:
            expect((target / "thesis.tex").exists(), "export_checkpoint DELETED a foreign folder")
        accepted("exporting into a foreign folder without --overwrite")

    add("export", "export_checkpoint_into_a_foreign_folder", into_foreign)

    def overwrite_then_again(tmp):
        target = foreign(tmp / "home")
        checkpoint.main([str(export_source()), str(target), "--overwrite"])
        expect(json.loads((target / EXPORT_RECORD).read_text())["tool"] == "export_checkpoint", "no export record")
        checkpoint.main([str(export_source()), str(target)])

    add("export", "export_checkpoint_overwrite_then_replace_own", overwrite_then_again, timeout=240)

    def bf16(tmp):
        checkpoint.main([str(export_source()), str(tmp / "out"), "--storage_dtype", "bfloat16"])
        from modeling_lact_audio import LaCTAudioForCTC

        model = LaCTAudioForCTC.from_pretrained(tmp / "out")
        with torch.inference_mode():
            logits = model.eval()(input_features=torch.randn(1, 50, model.config.num_mel_bins)).logits
        expect(model.dtype == torch.float32 and finite(logits), "bf16 export loads wrong")

    add("export", "export_checkpoint_bfloat16", bf16, timeout=240)

    def usage(argv, what):
        def fn(tmp):
            checkpoint.main([a.replace("{tmp}", str(tmp)).replace("{src}", str(export_source())) for a in argv])
            accepted(what)

        return fn

    add("export", "main_without_target", usage(["{src}"], "a SOURCE without TARGET"))
    add(
        "export",
        "main_bogus_storage_dtype",
        usage(["{src}", "{tmp}/o", "--storage_dtype", "int8"], "--storage_dtype int8"),
    )
    add("export", "main_refresh_with_source", usage(["{src}", "--refresh-code", "{tmp}"], "--refresh-code with SOURCE"))
    add("export", "source_without_config", usage(["{tmp}", "{tmp}/o"], "a SOURCE folder without config.json"))
    add("export", "source_missing", usage(["{tmp}/nowhere", "{tmp}/o"], "a SOURCE that does not exist"))
    add(
        "export",
        "refresh_code_on_empty_folder",
        usage(["--refresh-code", "{tmp}"], "--refresh-code on an empty folder"),
    )

    def target_is_file(tmp):
        (tmp / "file").write_text("x")
        claim_target(tmp / "file", overwrite=True)
        accepted("a file as the export target")

    add("export", "target_is_a_file", target_is_file)

    def recogniser_foreign(tmp):
        from modeling_lact_audio.recogniser.export import export_recogniser

        target = foreign(tmp / "project")
        try:
            export_recogniser(str(tmp / "no_head"), str(tmp / "no_whisper"), str(target))
        finally:
            expect((target / "thesis.tex").exists(), "export_recogniser DELETED a foreign folder")
        accepted("export_recogniser into a foreign folder")

    def whisper_foreign(tmp):
        from modeling_lact_audio.whisper_conversion import convert as converter

        target = foreign(tmp / "project")
        try:
            converter.convert(tmp / "no_ct2", target)
        finally:
            expect((target / "thesis.tex").exists(), "the Whisper conversion DELETED a foreign folder")
        accepted("a Whisper conversion into a foreign folder")

    add("export", "export_recogniser_into_a_foreign_folder", recogniser_foreign)
    add("export", "whisper_conversion_into_a_foreign_folder", whisper_foreign)


def build_catalogue() -> list[Probe]:
    """Every probe, in a fixed order (built once)."""
    if not CATALOGUE:
        for build in (
            _audio_probes,
            _tokenizer_probes,
            _audio_tokenizer_probes,
            _config_probes,
            _model_probes,
            _weights_probes,
            _op_probes,
            _training_probes,
            _export_probes,
        ):
            build()
    return CATALOGUE


# --------------------------------------------------------------------------- the scan for unsafe loads

SCAN_DIRS = ("modeling_lact_audio", "processors", "kernels", "run_scripts", "eval")
# (file relative to the repository, call) pairs where an unsafe load is deliberate and reviewed: none today.
ALLOWED_UNSAFE_LOADS: tuple[tuple[str, str], ...] = ()


def kw_true(node: ast.Call, name: str) -> bool:
    return any(kw.arg == name and isinstance(kw.value, ast.Constant) and kw.value.value is True for kw in node.keywords)


def _unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            name = f"{func.value.id}.{func.attr}"
            pickles = kw_true(node, "allow_pickle") if name in ("np.load", "numpy.load") else True
            if name in ("torch.load", "pickle.load", "pickle.loads", "np.load", "numpy.load") and pickles:
                hits.append((node.lineno, name + "("))
        for kw in node.keywords:
            if kw.arg == "weights_only" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
                hits.append((node.lineno, "weights_only=False"))
    return hits


def scan_unsafe_loads(repo: Path = REPO_DIR) -> dict:
    """Count unsafe-load calls in code (not docstrings): ``torch.load(``, ``pickle.load(s)(``,
    ``np.load(allow_pickle=True)`` and ``weights_only=False``.

    Returns ``{"count", "allowed", "hits": [{"file", "line", "call"}], "text_mentions"}``; ``text_mentions``
    counts lines that merely mention them (docstrings, comments).
    """
    hits, allowed, mentions = [], 0, 0
    for folder in SCAN_DIRS:
        for path in sorted((repo / folder).rglob("*.py")):
            rel = str(path.relative_to(repo))
            text = path.read_text(errors="replace")
            mentions += sum(
                1
                for line in text.splitlines()
                if any(s in line for s in ("torch.load(", "pickle.load", "weights_only=False"))
            )
            try:
                tree = ast.parse(text)
            except SyntaxError:
                hits.append({"file": rel, "line": 0, "call": "unparsable file"})
                continue
            for line, call in _unsafe_calls(tree):
                if (rel, call) in ALLOWED_UNSAFE_LOADS:
                    allowed += 1
                else:
                    hits.append({"file": rel, "line": line, "call": call})
    return {"count": len(hits), "allowed": allowed, "hits": hits, "text_mentions": mentions}


# --------------------------------------------------------------------------- running and reporting


def run_catalogue(probes: list[Probe], timeout: float | None = None, log=print) -> list[dict]:
    """Run ``probes`` one after another, each in a fresh temporary folder; returns their records."""
    records = []
    with tempfile.TemporaryDirectory(prefix="hostile_probes_") as work:
        for i, probe in enumerate(probes):
            tmp = Path(work) / f"p{i}"
            tmp.mkdir()
            record = run_probe(probe, tmp, timeout)
            records.append(record)
            if log:
                log(f"[{i + 1}/{len(probes)}] {record['outcome']:15s} {probe.name}  {record['message'][:120]}")
    return records


def counts(records: list[dict]) -> dict:
    """``{area: {outcome: n}}`` plus ``"all"``."""
    table = {}
    for r in records:
        for key in (r["area"], "all"):
            table.setdefault(key, Counter())[r["outcome"]] += 1
    return {area: {o: c[o] for o in OUTCOMES} for area, c in table.items()}


def write_report(records: list[dict], scan: dict, output_dir: Path, command: str = "") -> Path:
    """Write ``probes.json`` and ``REPORT.md`` into ``output_dir``; returns the folder."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = counts(records)
    (output_dir / "probes.json").write_text(
        json.dumps({"command": command, "counts": table, "unsafe_load_scan": scan, "probes": records}, indent=1) + "\n"
    )
    lines = [
        "# Hostile probes (issue 20)",
        "",
        f"Command: `{command}`" if command else "",
        "",
        f"{len(records)} probes. Passing outcomes: `clear_error` (our code raised, naming the problem) and `handled` "
        "(the probe's own check passed). The classification is automatic (`modeling_lact_audio/hostile_probes.py`).",
        "",
        "| area | " + " | ".join(OUTCOMES) + " | total |",
        "|---|" + "---|" * (len(OUTCOMES) + 1),
    ]
    for area in [a for a in table if a != "all"] + ["all"]:
        row = table[area]
        label = "**all**" if area == "all" else area
        lines.append(f"| {label} | " + " | ".join(str(row[o]) for o in OUTCOMES) + f" | {sum(row.values())} |")
    lines += [
        "",
        f"Unsafe-load scan ({', '.join(SCAN_DIRS)}): {scan['count']} call(s) of `torch.load(` / `pickle.load(s)(` / "
        f"`weights_only=False` in code outside the allowed places ({scan['allowed']} allowed); "
        f"{scan['text_mentions']} line(s) mention them in docstrings or comments.",
    ]
    lines += [f"- `{h['file']}:{h['line']}` {h['call']}" for h in scan["hits"]]
    failing = [r for r in records if r["outcome"] not in PASSING]
    lines += ["", f"## Not passing ({len(failing)})", ""]
    if not failing:
        lines.append("None.")
    for r in failing:
        note = f" _({r['note']})_" if r["note"] else ""
        lines.append(f"- **{r['outcome']}** `{r['name']}`: {r['message']}{note}")
    (output_dir / "REPORT.md").write_text("\n".join(lines) + "\n")
    return output_dir


def select(probes: list[Probe], areas=None, names=None) -> list[Probe]:
    """The probes of ``areas`` (all when None) whose name contains one of ``names`` (all when None)."""
    return [p for p in probes if (not areas or p.area in areas) and (not names or any(n in p.name for n in names))]


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, run the (selected) probes and the scan, write the report.

    Returns ``{"counts": {area: {outcome: n}}, "records": [...], "scan": {...}}``.
    """
    parser = argparse.ArgumentParser(description="Run issue 20's hostile probes and count the outcomes.")
    parser.add_argument("--output_dir", default="eval/results/hostile")
    parser.add_argument("--areas", nargs="*", help="only these areas")
    parser.add_argument("--names", nargs="*", help="only probes whose name contains one of these")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per probe (default: each probe's own)")
    parser.add_argument("--list", action="store_true", help="list the probes and exit")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    probes = select(build_catalogue(), args.areas, args.names)
    if args.list:
        for p in probes:
            print(p.name)
        return {"counts": {}, "records": [], "scan": {}}
    records = run_catalogue(probes, args.timeout, log=None if args.quiet else print)
    scan = scan_unsafe_loads()
    command = "python eval/hostile_probes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = write_report(records, scan, args.output_dir, command.strip())
    table = counts(records)
    if not args.quiet:
        print((out / "REPORT.md").read_text())
    return {"counts": table, "records": records, "scan": scan}


__all__ = [
    "OUTCOMES",
    "Probe",
    "WrongResult",
    "build_catalogue",
    "classify",
    "main",
    "run_catalogue",
    "run_probe",
    "scan_unsafe_loads",
    "write_report",
]
