"""INT8 quantisation (``modeling_lact_audio.quantization``) on tiny random models, and eval/quantization_eval.py.

Tolerances: int8 weights (per channel, 127 levels) and int8 activations (per token) change a tiny model's logits
by about 1% of their norm; the tests allow 5%. Everything that must not change (reload, emulation, the fp32
simulation of the fast-weight state) is compared exactly or to float32 rounding.
"""

import copy
import io
import json
import runpy
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import safetensors.torch
import soundfile as sf
import torch
from transformers import AutoModelForCTC, pipeline

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, mixer_lact_audio
from modeling_lact_audio import modeling_lact_audio as modeling
from modeling_lact_audio import quantization as Q
from modeling_lact_audio.cpu_features import cpu_has_native_bf16
from modeling_lact_audio.int8_linear import Int8DynamicLinear
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor
from tests.model_testers import LaCTAudioModelTester

EVAL_SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "quantization_eval.py"
TEXTS = ["hello world", "the quick brown fox", "lact adapts at test time"]
TESTER = LaCTAudioModelTester()
ORDERS = [("update_apply", "block_causal"), ("bidirectional", "bidirectional"), ("apply_update", "causal")]


def _is_int8(linear) -> bool:
    """A linear layer one of the modes converted (torchao's int8 weight, or an FBGEMM layer)."""
    return isinstance(linear, Int8DynamicLinear) or type(linear.weight).__name__ == "Int8Tensor"


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _ctc(**overrides) -> LaCTAudioForCTC:
    torch.manual_seed(0)
    return LaCTAudioForCTC(TESTER.ctc_config(**overrides)).eval()


@torch.no_grad()
def _logits(model, inputs) -> torch.Tensor:
    return model(**inputs).logits


@pytest.fixture(scope="module")
def inputs():
    x, mask = TESTER.features(T=37, lengths=[37, 23])
    return {"input_features": x, "attention_mask": mask}


@pytest.mark.parametrize("mode", Q.MODES)
def test_quantised_ctc_is_close_to_fp32_and_keeps_fast_weights_fp32(mode, inputs):
    fp32 = _ctc()
    quantised = Q.quantize_model(_ctc(), mode)
    reference, out = _logits(fp32, inputs), _logits(quantised, inputs)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert 0 < _relative_error(out, reference) < 0.05
    assert Q.quantization_mode(quantised) == mode
    assert set(Q.fast_weight_dtypes(quantised).values()) == {torch.float32}
    mixer = quantised.model.layers[0].mixer
    assert type(mixer.lr_proj.weight) is torch.nn.Parameter and type(mixer.momentum_proj.weight) is torch.nn.Parameter
    assert _is_int8(mixer.qkv_proj)
    assert Q.model_bytes(quantised) < 0.6 * Q.model_bytes(fp32)
    assert len(Q.quantizable_linears(fp32)) == len(Q.quantizable_linears(fp32, skip=())) - 2 * 2  # 2 layers


@pytest.mark.parametrize("mode", Q.MODES)
def test_quantised_generator_logits_are_close(mode):
    torch.manual_seed(0)
    config = TESTER.lm_config()
    fp32 = LaCTAudioForCausalLM(config).eval()
    torch.manual_seed(0)
    quantised = Q.quantize_model(LaCTAudioForCausalLM(config).eval(), mode)
    ids = torch.randint(0, config.codebook_size, (2 * config.num_codebooks, 21))
    assert _relative_error(_logits(quantised, {"input_ids": ids}), _logits(fp32, {"input_ids": ids})) < 0.05
    assert all(_is_int8(head) for head in quantised.lm_heads)
    assert type(quantised.embed_tokens[0].weight) is torch.nn.Parameter  # embeddings stay fp32


@pytest.mark.parametrize("mode", Q.MODES)
def test_save_load_round_trip_gives_identical_outputs(mode, inputs, tmp_path):
    quantised = Q.quantize_model(_ctc(), mode)
    Q.save_quantized(quantised, tmp_path / "q")
    _ctc().save_pretrained(tmp_path / "fp32")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    expected_method = Q.FBGEMM_QUANT_METHOD if mode == Q.FBGEMM_MODE else "torchao"
    assert config["quantization_config"]["quant_method"] == expected_method
    if mode == Q.FBGEMM_MODE:
        assert config["quantization_config"]["row_block"] == 64 and config["quantization_config"]["sort_rows"]
    size = (tmp_path / "q" / "model.safetensors").stat().st_size
    assert size < (tmp_path / "fp32" / "model.safetensors").stat().st_size  # hidden 16: torchao's metadata weighs
    loaded = Q.load_quantized(tmp_path / "q")
    assert Q.quantization_mode(loaded) == mode and not loaded.training
    assert set(Q.fast_weight_dtypes(loaded).values()) == {torch.float32}
    assert torch.equal(_logits(loaded, inputs), _logits(quantised, inputs))
    Q.save_quantized(loaded, tmp_path / "again")  # a loaded quantised model saves again
    assert torch.equal(_logits(Q.load_quantized(tmp_path / "again"), inputs), _logits(quantised, inputs))


def test_fbgemm_folder_without_sort_rows_loads_as_consecutive_blocks(tmp_path):
    """Folders saved before sorted blocks existed record only ``row_block``: they load with consecutive blocks."""
    Q.save_quantized(Q.quantize_model(_ctc(), Q.FBGEMM_MODE), tmp_path / "q")
    config_path = tmp_path / "q" / "config.json"
    config = json.loads(config_path.read_text())
    del config["quantization_config"]["sort_rows"]
    config["quantization_config"]["row_block"] = 256
    config_path.write_text(json.dumps(config))
    layers = [m for m in Q.load_quantized(tmp_path / "q").modules() if isinstance(m, Int8DynamicLinear)]
    assert layers and all(m.row_block == 256 and not m.sort_rows for m in layers)


@pytest.mark.parametrize("mode", ["int8_dynamic", Q.FBGEMM_MODE])
def test_quantised_folder_runs_in_the_asr_pipeline(mode, tmp_path):
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    extractor = LaCTFeatureExtractor(n_mels=8, sampling_rate=16000, hop_length=160)
    processor = LaCTProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    model = LaCTAudioForCTC(LaCTAudioModelTester(num_mel_bins=8, vocab_size=len(tokenizer)).ctc_config()).eval()
    with torch.no_grad():  # a random model emits one token everywhere; a biased head writes characters
        model.lm_head.bias.copy_(torch.linspace(0, 3, len(tokenizer)))
    Q.save_quantized(Q.quantize_model(model, mode), tmp_path, processor)
    loaded = Q.load_quantized(tmp_path)
    audio = (0.1 * np.random.default_rng(0).standard_normal(48000)).astype(np.float32)
    features = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    expected = processor.batch_decode(_logits(loaded, dict(features)).argmax(-1))[0]
    asr = pipeline("automatic-speech-recognition", model=loaded, tokenizer=tokenizer, feature_extractor=extractor)
    assert expected and asr(audio)["text"] == expected
    # the plain Auto class loads the folder too (torchao: transformers' quantizer, the finite-weight check
    # reading the int8 tensors dequantised; FBGEMM: from_pretrained hands the folder to load_quantized)
    auto = AutoModelForCTC.from_pretrained(tmp_path).eval()
    assert Q.quantization_mode(auto) == mode
    assert torch.equal(_logits(auto, dict(features)), _logits(loaded, dict(features)))
    if mode == Q.FBGEMM_MODE:  # and a pipeline built from the folder's path
        assert pipeline("automatic-speech-recognition", model=str(tmp_path))(audio)["text"] == expected


def test_bad_modes_models_and_folders_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown quantisation mode 'int4'"):
        Q.quantize_model(_ctc(), "int4")
    quantised = Q.quantize_model(_ctc(), "int8_dynamic")
    with pytest.raises(ValueError, match="already quantised"):
        Q.quantize_model(quantised, "int8_weight_only")
    with pytest.raises(ValueError, match="fp32 model"):
        Q.quantize_model(_ctc().to(torch.bfloat16), "int8_dynamic")
    with pytest.raises(ValueError, match="nothing to quantise"):
        Q.quantize_model(_ctc(), "int8_dynamic", skip=("model", "lm_head"))
    with torch.device("meta"):
        meta = LaCTAudioForCTC(TESTER.ctc_config())
    with pytest.raises(ValueError, match="meta device"):
        Q.quantize_model(meta, "int8_dynamic")
    with pytest.raises(ValueError, match="not quantised"):
        Q.save_quantized(_ctc(), tmp_path / "fp32")
    _ctc().save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="holds no quantised model"):
        Q.load_quantized(tmp_path / "plain")
    with pytest.raises(ValueError, match="not a torchao mode"):
        Q.torchao_config(Q.FBGEMM_MODE)
    with pytest.raises(ValueError, match="unknown quantisation mode 'auto'"):
        Q.torchao_config("auto")  # "auto" is resolved by quantize_model, not a config of its own
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Q.load_quantized(tmp_path / "missing")
    with pytest.raises(ValueError, match="half precision applies to an fp32 model"):
        Q.to_half_precision(quantised, "bf16", allow_emulated=True)
    with pytest.raises(ValueError, match="unknown precision"):
        Q.half_precision_skip_reason("fp8", "cpu")
    assert "never used here" in Q.half_precision_skip_reason("fp16", "cpu")
    with pytest.raises(RuntimeError, match="fp16 inference not run"):
        Q.to_half_precision(_ctc(), "fp16")


@pytest.mark.parametrize("fast_int8", [True, False])
def test_auto_mode_picks_the_kernel_this_cpu_runs_fast_and_int8_dynamic_warns_where_it_is_slow(fast_int8, monkeypatch):
    monkeypatch.setattr(Q, "cpu_has_fast_int8", lambda: fast_int8)
    expected = "int8_dynamic" if fast_int8 else Q.FBGEMM_MODE
    assert Q.recommended_int8_mode("cpu") == expected
    assert Q.recommended_int8_mode("cuda") == "int8_dynamic"
    assert Q.quantization_mode(Q.quantize_model(_ctc(), "auto")) == expected
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Q.quantize_model(_ctc(), "int8_dynamic")
    slow = [w for w in caught if "without AVX512-VNNI or AMX" in str(w.message)]
    assert len(slow) == (0 if fast_int8 else 1)
    assert not slow or "int8_dynamic_fbgemm" in str(slow[0].message)


def test_fbgemm_folders_that_cannot_load_say_why(tmp_path, monkeypatch, inputs):
    Q.save_quantized(Q.quantize_model(_ctc(), Q.FBGEMM_MODE), tmp_path / "q")
    with pytest.raises(ValueError, match="CPU only"):
        Q.load_quantized(tmp_path / "q", device="cuda")
    # the folder's own code copy (trust_remote_code, package not installed) cannot build the int8 layers
    monkeypatch.setattr(modeling, "__package__", "transformers_modules.q")
    with pytest.raises(ValueError, match="pip install lact-audio"):
        AutoModelForCTC.from_pretrained(tmp_path / "q")
    monkeypatch.undo()
    weights = tmp_path / "q" / "model.safetensors"
    state = safetensors.torch.load_file(weights)
    del state["lm_head.weight_scale"]
    safetensors.torch.save_file(state, weights)
    with pytest.raises(ValueError, match="do not fit its config: missing \\['lm_head.weight_scale'\\]"):
        Q.load_quantized(tmp_path / "q")
    Q.save_quantized(Q.quantize_model(_ctc(), Q.FBGEMM_MODE), tmp_path / "nan")
    nan_weights = tmp_path / "nan" / "model.safetensors"
    state = safetensors.torch.load_file(nan_weights)
    state["lm_head.weight_scale"][0] = float("nan")
    safetensors.torch.save_file(state, nan_weights)
    with pytest.raises(ValueError, match="NaN or infinite values in lm_head.weight_scale"):
        Q.load_quantized(tmp_path / "nan")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Q.load_quantized(tmp_path / "q")
    with pytest.raises(RuntimeError, match="runs on the CPU only"):
        Int8DynamicLinear(4, 3)(torch.zeros(2, 4, device="meta"))


def _fbgemm_reference(layer: Int8DynamicLinear, x: torch.Tensor) -> torch.Tensor:
    """FBGEMM's dynamic int8 product written out for one sequence ``x [T, in]`` in float64, ``row_block`` rows
    at a time (with ``sort_rows``: each row goes in the block of its rank by ``max|x_row|``, one row at a time in
    a Python loop): activations affine 7-bit (range widened to hold 0), weights symmetric int8 per row,
    int32-exact sums, fp32 bias."""
    if x.shape[0] > layer.row_block:
        if not layer.sort_rows:
            blocks = [list(range(s, min(s + layer.row_block, len(x)))) for s in range(0, len(x), layer.row_block)]
        else:
            ranked = sorted(range(len(x)), key=lambda row: (float(x[row].abs().max()), row))
            blocks = [ranked[s : s + layer.row_block] for s in range(0, len(x), layer.row_block)]
        out = torch.empty(len(x), layer.out_features)
        for rows in blocks:
            out[rows] = _fbgemm_reference(layer, x[rows])
        return out
    x = x.double()
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 127 or 1.0
    zero = round(-low / scale)
    xq = (torch.round(x / scale) + zero).clamp(0, 127)
    acc = (xq - zero) @ layer.weight_int8.double().T
    return (acc * scale * layer.weight_scale.double() + layer.bias.double()).float()


def test_int8_dynamic_linear_against_its_formula_and_batching():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 20)
    layer = Int8DynamicLinear.from_linear(linear, row_block=7)
    # the weight: int8 per row, within half a step of the fp32 weight
    step = linear.weight.abs().amax(1, keepdim=True) / 127
    assert layer.weight_int8.dtype == torch.int8 and int(layer.weight_int8.abs().max()) == 127
    assert bool(((layer.weight - linear.weight).abs() <= step / 2 + 1e-7).all())
    # rows of very different ranges within a sequence, as speech and padding frames are
    ranges = torch.logspace(-2, 1, 17)[torch.randperm(17)]  # interleaved: consecutive blocks mix quiet and loud
    x = torch.randn(3, 17, 48) * torch.tensor([1.0, 5.0, 0.1])[:, None, None] * ranges[:, None]
    consecutive = Int8DynamicLinear.from_linear(linear, row_block=7, sort_rows=False)
    assert layer.sort_rows and not consecutive.sort_rows
    with torch.no_grad():
        out, exact, plain = layer(x), linear(x), consecutive(x)
    assert out.shape == (3, 17, 20) and out.dtype == torch.float32
    for i in range(3):  # activation scales per 7-row block of a sequence: the formula, and the sequence alone
        for quantised, result in ((layer, out), (consecutive, plain)):
            reference = _fbgemm_reference(quantised, x[i])
            tolerance = 1e-4 * float(reference.abs().max())
            assert float((result[i] - reference).abs().max()) <= tolerance
            assert torch.equal(quantised(x[i : i + 1]), result[i : i + 1])
        assert _relative_error(out[i], exact[i]) < 0.05
    # grouping rows of similar magnitude: the quiet rows keep their precision
    quiet, bias = ranges.argsort()[:7], linear.bias.detach()
    error_sorted = _relative_error(out[:, quiet] - bias, exact[:, quiet] - bias)
    assert error_sorted < 0.5 * _relative_error(plain[:, quiet] - bias, exact[:, quiet] - bias)
    assert torch.equal(layer(x[0]), out[0])  # a 2-D input is one sequence
    assert layer(torch.zeros(2, 0, 48)).shape == (2, 0, 20)
    whole = Int8DynamicLinear.from_linear(linear, row_block=17)  # one block per sequence: scales differ
    assert not torch.equal(whole(x), out) and _relative_error(whole(x), exact) < 0.05
    with pytest.raises(ValueError, match="row_block must be a positive"):
        Int8DynamicLinear(4, 3, row_block=0)
    with pytest.raises(ValueError, match=r"expected inputs \[..., 48\]"):
        layer(torch.zeros(2, 5, 47))


def test_int8_dynamic_linear_state_dict_copy_and_repack():
    torch.manual_seed(1)
    layer = Int8DynamicLinear.from_linear(torch.nn.Linear(16, 8))
    x = torch.randn(2, 5, 16)
    out = layer(x)
    assert set(layer.state_dict()) == {"weight_int8", "weight_scale", "bias"}
    fresh = Int8DynamicLinear(16, 8)
    fresh(x)  # packs its zero weights first: loading must replace that packed copy
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), out)
    assert torch.equal(copy.deepcopy(layer)(x), out)
    with pytest.raises(TypeError, match="expected an nn.Linear"):
        Int8DynamicLinear.from_linear(torch.nn.Conv1d(2, 2, 1))


@pytest.mark.skipif(cpu_has_native_bf16(), reason="this CPU runs bf16 natively")
def test_bf16_refused_where_it_would_be_emulated():
    assert "avx512_bf16" in Q.half_precision_skip_reason("bf16", "cpu")
    with pytest.raises(RuntimeError, match="bf16 inference not run"):
        Q.to_half_precision(_ctc(), "bf16")


@pytest.mark.parametrize(
    "precision",
    ["bf16", "fp16"],
)
def test_half_precision_keeps_the_fast_weights_fp32(precision, inputs):
    # numerics only (emulated on this CPU); not a speed result
    fp32 = _ctc()
    half = Q.to_half_precision(_ctc(), precision, allow_emulated=True)
    dtype = Q.HALF_PRECISIONS[precision]
    assert set(Q.fast_weight_dtypes(half).values()) == {torch.float32}
    assert half.model.layers[0].mixer.qkv_proj.weight.dtype == dtype
    out = _logits(
        half, {"input_features": inputs["input_features"].to(dtype), "attention_mask": inputs["attention_mask"]}
    )
    assert out.dtype == dtype and _relative_error(out.float(), _logits(fp32, inputs)) < 0.05


def test_half_precision_folder_round_trip_keeps_the_fast_weights_fp32(inputs, tmp_path):
    """A bf16 model saves and loads with its fast weights fp32 (``_keep_in_fp32_modules_strict``), and an fp32
    folder loaded with ``dtype=torch.bfloat16`` is exactly ``to_half_precision`` of it."""
    half = Q.to_half_precision(_ctc(), "bf16", allow_emulated=True)
    half.save_pretrained(tmp_path / "bf16")
    loaded = AutoModelForCTC.from_pretrained(tmp_path / "bf16").eval()
    assert loaded.dtype == torch.bfloat16 and set(Q.fast_weight_dtypes(loaded).values()) == {torch.float32}
    expected = half.state_dict()
    assert all(t.dtype == expected[n].dtype and torch.equal(t, expected[n]) for n, t in loaded.state_dict().items())
    _ctc().save_pretrained(tmp_path / "fp32")
    cast = AutoModelForCTC.from_pretrained(tmp_path / "fp32", dtype=torch.bfloat16).eval()
    assert set(Q.fast_weight_dtypes(cast).values()) == {torch.float32}
    assert all(t.dtype == expected[n].dtype and torch.equal(t, expected[n]) for n, t in cast.state_dict().items())
    # only the fast weights are kept: every other floating tensor is bf16
    kept = {n for n, t in cast.state_dict().items() if t.is_floating_point() and t.dtype == torch.float32}
    assert kept and all(n.rsplit(".", 1)[-1] in Q.FAST_WEIGHTS and ".mixer." in n for n in kept)


def test_transcriber_feeds_a_bf16_model_bf16_features():
    from modeling_lact_audio.asr import Transcriber

    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    processor = LaCTProcessor(LaCTFeatureExtractor(n_mels=8, sampling_rate=16000, hop_length=160), tokenizer)
    torch.manual_seed(0)
    model = LaCTAudioForCTC(LaCTAudioModelTester(num_mel_bins=8, vocab_size=len(tokenizer)).ctc_config()).eval()
    half = Q.to_half_precision(model, "bf16", allow_emulated=True)
    audio = [(0.1 * np.random.default_rng(i).standard_normal(16000 + 4000 * i)).astype(np.float32) for i in range(2)]
    batch = dict(processor(audio=audio, sampling_rate=16000, return_tensors="pt"))
    with torch.no_grad():
        logits = half(input_features=batch["input_features"].bfloat16(), attention_mask=batch["attention_mask"]).logits
    texts = Transcriber(half, processor)(audio)
    lengths = half._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
    ids = logits.argmax(-1)
    assert texts == [processor.tokenizer.decode(ids[i, : lengths[i]]) for i in range(2)]


@pytest.mark.parametrize("K", [384, 1536])
def test_exact_emulated_int_mm_is_bit_identical(K):
    from torchao.kernel import intmm

    g = torch.Generator().manual_seed(K)
    a = torch.randint(-128, 128, (33, K), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (K, 40), dtype=torch.int8, generator=g)
    a[0], b[:, 0] = -128, -128  # the largest products, in one row and column
    scales = torch.rand(33, 1, generator=g) * 1e-3
    expected = intmm._int_scaled_matmul_cpu(a, b, scales)
    with Q.exact_emulated_int_mm():
        got = intmm._int_scaled_matmul_cpu(a, b, scales)
    assert torch.equal(got, expected)
    assert intmm._int_scaled_matmul_cpu.__name__ != "emulated"  # restored


@pytest.mark.parametrize(("order", "pattern"), ORDERS)
def test_rounded_fast_weights_simulation(order, pattern, inputs):
    model = _ctc(lact_order=order, attention_pattern=pattern)
    reference = _logits(model, inputs)
    op = mixer_lact_audio.lact_swiglu
    with Q.rounded_fast_weights("fp32") as stats:
        chunked = _logits(model, inputs)
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)  # the chunked path is the op
    assert stats["updates"] > 0 and stats["error_sq"] == 0 and stats["update_sq"] > 0
    errors = {}
    for fmt in ("fp16", "bf16", "int8"):
        with Q.rounded_fast_weights(fmt, round_inputs=True) as stats:
            out = _logits(model, inputs)
        errors[fmt] = stats["error_sq"]
        assert 0 < _relative_error(out, reference) < 0.1
    assert 0 < errors["fp16"] < errors["bf16"] < errors["int8"]  # 11, 8 and ~7 significant bits
    assert mixer_lact_audio.lact_swiglu is op
    with pytest.raises(ValueError, match="unknown state format"):
        with Q.rounded_fast_weights("fp8"):
            pass


def test_round_to_format_int8_is_per_row():
    w = torch.tensor([[1.0, -0.5, 0.25], [100.0, 3.0, -50.0]])
    r = Q.round_to_format(w, "int8")
    assert torch.equal(r[:, 0], w[:, 0]) and (r - w).abs().max() <= 100 / 127 / 2 + 1e-6
    assert (r[0] - w[0]).abs().max() <= 1 / 127 / 2 + 1e-7


def test_paired_difference():
    a, t = np.array([1, 2, 3, 4]), np.full(4, 10)
    assert Q.paired_difference(a, a, t) == (0.0, 0.0, 0.0)
    diff, low, high = Q.paired_difference(a, a + np.array([1, 0, 1, 0]), t, samples=500)
    assert diff == pytest.approx(0.05) and 0 <= low <= diff <= high <= 0.1
    assert all(np.isnan(Q.paired_difference([], [], [])))
    with pytest.raises(ValueError, match="one length"):
        Q.paired_difference([1, 2], [1], [3, 3])


def _wav(seconds: float, freq: float) -> dict:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.mark.slow
def test_quantization_eval_script_on_a_tiny_corpus(tmp_path):
    rows = lambda n, seed: {
        "audio": [_wav(1.0 + 0.3 * (i % 3), 200 + 90 * i + seed) for i in range(n)],
        "text": [TEXTS[i % 3] for i in range(n)],
        "uid": [f"u{seed}_{i}" for i in range(n)],
    }
    splits = ["test_seen", "test_noise", "train", "validation"]
    corpus = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict(rows(6, i)).cast_column("audio", datasets.Audio(decode=False))
            for i, s in enumerate(splits)
        }
    )
    corpus.save_to_disk(str(tmp_path / "corpus"))
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    processor = LaCTProcessor(LaCTFeatureExtractor(n_mels=8, sampling_rate=16000, hop_length=160), tokenizer)
    model = LaCTAudioForCTC(LaCTAudioModelTester(num_mel_bins=8, vocab_size=len(tokenizer)).ctc_config())
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    main = runpy.run_path(str(EVAL_SCRIPT), run_name="quantization_eval")["main"]
    out = tmp_path / "out"
    results = main(
        [
            "--model", f"tiny={tmp_path / 'model'}", "--corpus", str(tmp_path / "corpus"),
            "--splits", "test_seen", "test_noise", "--rows", "4", "--latency-rows", "2", "--fast-weight-rows", "3",
            "--generator-steps", "1", "--generator-rows", "2", "--samples", "50", "--output", str(out),
        ]
    )  # fmt: skip
    assert {p.name for p in out.iterdir()} == {"results.json", "REPORT.md", "quantization.png"}
    saved = json.loads((out / "results.json").read_text())
    tiny = saved["models"]["tiny"]
    assert set(tiny["accuracy"]) == {"test_seen", "test_noise"}
    entry = tiny["accuracy"]["test_seen"]["int8_dynamic"]["greedy"]
    assert entry["utterances"] == 4 and len(entry["wer_diff"]) == 3 and 0 <= entry["wer_p"] <= 1
    checks = tiny["systems"]["int8_dynamic"]
    assert checks["reload_identical"] and checks["emulation_bit_identical"] and checks["pipeline_transcript_matches"]
    assert tiny["systems"]["int8_weight_only"]["file_bytes"] < tiny["systems"]["fp32"]["file_bytes"]
    assert tiny["speed"]["fp32"]["streaming"]["max_abs_diff_vs_offline"] < 1e-4  # the stream equals one call
    assert set(tiny["fast_weights"]["carried"]["state"]) == {"bf16", "fp16", "int8"}
    native_bf16 = ["bf16"] if Q.half_precision_skip_reason("bf16", "cpu") is None else []
    assert saved["modes"] == [*Q.MODES, *native_bf16]  # bf16 is a default system only where it is native
    assert set(saved["generator"]["systems"]) == {"fp32", *Q.MODES, *native_bf16}
    assert saved["half_precision"]["fp16"] is not None
    report = (out / "REPORT.md").read_text()
    assert "## Fast weights: fp32 against lower-precision storage" in report and "## Generator" in report
    assert results["rows_per_split"] == 4
    # --speed-only replaces the speed records and keeps the rest
    again = main(
        ["--model", f"tiny={tmp_path / 'model'}", "--corpus", str(tmp_path / "corpus"), "--latency-rows", "2",
         "--output", str(out), "--speed-only"]
    )  # fmt: skip
    assert again["models"]["tiny"]["accuracy"] == saved["models"]["tiny"]["accuracy"]
    assert (
        set(again["models"]["tiny"]["speed"]) == set(tiny["speed"]) and "--speed-only" in again["speed_run"]["command"]
    )
    assert "re-measured by `python eval/quantization_eval.py" in (out / "REPORT.md").read_text()
    # --modes: fp32 against the named modes only, in the accuracy, speed, report and generator study
    one = main(
        ["--model", f"tiny={tmp_path / 'model'}", "--corpus", str(tmp_path / "corpus"), "--splits", "test_seen",
         "--rows", "3", "--latency-rows", "1", "--fast-weight-rows", "2", "--generator-steps", "1",
         "--generator-rows", "1", "--samples", "20", "--modes", Q.FBGEMM_MODE, "--output", str(tmp_path / "one")]
    )  # fmt: skip
    assert one["modes"] == [Q.FBGEMM_MODE]
    assert set(one["models"]["tiny"]["accuracy"]["test_seen"]) == {"fp32", Q.FBGEMM_MODE}
    speed = one["models"]["tiny"]["speed"]
    assert {"fp32", Q.FBGEMM_MODE} <= set(speed) and not set(speed) & {"int8_dynamic", "int8_weight_only"}
    assert set(one["generator"]["systems"]) == {"fp32", Q.FBGEMM_MODE}
    one_report = (tmp_path / "one" / "REPORT.md").read_text()
    assert "| tiny | int8_dynamic_fbgemm |" in one_report and "| tiny | int8_weight_only |" not in one_report


def test_quantization_eval_bf16_system(tmp_path, monkeypatch):
    """``--modes bf16`` runs the whole model in bf16 (fast weights fp32) as one more system; asked for on a CPU
    without native bf16 it is refused with the reason. The CPU probe is patched so that both paths run on any CPU
    (the tiny model's bf16 arithmetic is emulated where the CPU has none: numerics, not speed)."""
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    processor = LaCTProcessor(LaCTFeatureExtractor(n_mels=8, sampling_rate=16000, hop_length=160), tokenizer)
    model = LaCTAudioForCTC(LaCTAudioModelTester(num_mel_bins=8, vocab_size=len(tokenizer)).ctc_config())
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    rows = {
        "audio": [_wav(1.0 + 0.3 * i, 200 + 90 * i) for i in range(3)],
        "text": [TEXTS[i] for i in range(3)],
        "uid": [f"u{i}" for i in range(3)],
    }
    split = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    datasets.DatasetDict({"test_seen": split}).save_to_disk(str(tmp_path / "corpus"))
    args = ["--model", f"tiny={tmp_path / 'model'}", "--corpus", str(tmp_path / "corpus"), "--splits", "test_seen"]
    args += ["--rows", "3", "--latency-rows", "1", "--fast-weight-rows", "2", "--no-generator", "--samples", "20"]

    monkeypatch.setattr(Q, "half_precision_skip_reason", lambda precision, device: "no native bf16 here")
    main = runpy.run_path(str(EVAL_SCRIPT), run_name="quantization_eval")["main"]
    with pytest.raises(SystemExit):
        main([*args, "--modes", "bf16", "--output", str(tmp_path / "refused")])
    assert main([*args, "--modes", Q.FBGEMM_MODE, "--output", str(tmp_path / "int8")])["modes"] == [Q.FBGEMM_MODE]

    monkeypatch.setattr(Q, "half_precision_skip_reason", lambda precision, device: None)
    main = runpy.run_path(str(EVAL_SCRIPT), run_name="quantization_eval")["main"]
    results = main([*args, "--modes", "bf16", "--output", str(tmp_path / "bf16")])
    tiny = results["models"]["tiny"]
    checks = tiny["systems"]["bf16"]
    assert checks["reload_identical"] and checks["fast_weights_fp32"] and checks["pipeline_transcript_matches"]
    assert checks["file_bytes"] < tiny["systems"]["fp32"]["file_bytes"]
    assert set(tiny["accuracy"]["test_seen"]) == {"fp32", "bf16"}
    assert len(tiny["accuracy"]["test_seen"]["bf16"]["greedy"]["wer_diff"]) == 3
    assert tiny["speed"]["bf16"]["streaming"]["max_abs_diff_vs_offline"] < 0.1  # bf16 stream against bf16 offline
    report = (tmp_path / "bf16" / "REPORT.md").read_text()
    assert "| tiny | bf16 |" in report and "native: run as the system of that name" in report
