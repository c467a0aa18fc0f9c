"""The model suite: shapes, CTC loss and gradients, padding, streaming/cached decoding, save/load, Auto classes."""

import copy
import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForCTC

from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCausalLM, LaCTAudioForCTC, LaCTAudioModel, LaCTCache
from modeling_lact_audio.baselines import BaselineAudioTransformer
from modeling_lact_audio.kernels.validation import check_values
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester()

ASR_MODES = [
    ("update_apply", "block_causal"),
    ("bidirectional", "bidirectional"),
    ("apply_update", "causal"),
]


def _ctc(**overrides):
    torch.manual_seed(0)
    return LaCTAudioForCTC(tester.ctc_config(**overrides)).eval()


def test_ctc_output_shapes_log_mel_and_waveform():
    model = _ctc()
    x, mask = tester.features(T=37)
    out = model(input_features=x, attention_mask=mask)
    assert out.logits.shape == (2, 10, tester.vocab_size)  # ceil(ceil(37 / 2) / 2)
    assert out.output_lengths.tolist() == [10, 10]
    wave = LaCTAudioForCTC(tester.waveform_config()).eval()
    out = wave(input_values=torch.randn(2, 400))
    assert out.logits.shape == (2, 20, tester.vocab_size)
    assert wave.main_input_name == "input_values" and model.main_input_name == "input_features"


def test_ctc_loss_finite_and_gradients_reach_fast_weights_and_rates():
    model = _ctc()
    model.train()
    x, mask = tester.features(T=40, lengths=[40, 25])
    out = model(input_features=x, attention_mask=mask, labels=tester.labels())
    assert torch.isfinite(out.loss)
    out.loss.backward()
    mixer = model.model.layers[0].mixer
    for name, p in (
        ("w0", mixer.w0),
        ("w1", mixer.w1),
        ("w2", mixer.w2),
        ("lr_proj", mixer.lr_proj.weight),
        ("momentum_proj", mixer.momentum_proj.weight),
        ("frontend", model.model.frontend.layers[0].conv.weight),
    ):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("order,pattern", ASR_MODES)
def test_padded_batch_equals_single_examples(order, pattern):
    model = _ctc(lact_order=order, attention_pattern=pattern)
    x, mask = tester.features(T=41, lengths=[41, 26])
    batch = model(input_features=x, attention_mask=mask)
    for b, n in enumerate([41, 26]):
        alone = model(input_features=x[b : b + 1, :n])
        frames = alone.logits.shape[1]
        assert batch.output_lengths[b] == frames
        torch.testing.assert_close(batch.logits[b : b + 1, :frames], alone.logits, rtol=1e-4, atol=1e-5)


def test_streaming_ctc_chunk_by_chunk_equals_one_call():
    model = _ctc()  # update_apply + block_causal
    x, _ = tester.features(T=64)
    full = model(input_features=x).logits
    piece = tester.chunk * model.config.total_stride  # one LaCT chunk of model frames, in mel frames
    cache, outs = None, []
    for s in range(0, 64, piece):
        out = model(input_features=x[:, s : s + piece], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        outs.append(out.logits)
    assert isinstance(cache, LaCTCache) and cache.seen_inputs == 64
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-5)


def test_stream_pieces_must_respect_the_front_end_stride():
    model = _ctc()
    x, _ = tester.features(T=20)
    cache = model(input_features=x[:, :5], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="multiple of the front end's total stride"):
        model(input_features=x[:, 5:], past_key_values=cache, use_cache=True)


def test_cache_carries_adaptation_across_utterances():
    model = _ctc()
    x, _ = tester.features(T=32)
    cache = model(input_features=x, use_cache=True).past_key_values
    adapted = cache.layer_caches[0].fast.w0.clone()
    cache.start_new_utterance()
    assert cache.seen_frames == 0 and cache.layer_caches[0].keys is None
    torch.testing.assert_close(cache.layer_caches[0].fast.w0, adapted)
    y, _ = tester.features(T=16, seed=1)
    fresh = model(input_features=y).logits
    after = model(input_features=y, past_key_values=cache, use_cache=True).logits
    assert not torch.allclose(fresh, after)  # the second utterance starts from adapted fast weights


def _lm():
    torch.manual_seed(0)
    return LaCTAudioForCausalLM(tester.lm_config()).eval()


@pytest.mark.parametrize("conditioned", [False, True])
def test_lm_token_by_token_equals_full_forward(conditioned):
    model = _lm()
    ids = torch.randint(0, 13, (4, 23))  # B=2, K=2; crosses several chunks (4) and windows (3)
    cond = dict(conditioning_ids=torch.tensor([0, 2]), conditioning_embeds=torch.randn(2, 5)) if conditioned else {}
    full = model(input_ids=ids, **cond).logits
    assert full.shape == (4, 23, 13)
    cache, outs = None, []
    for t in range(23):
        out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True, **cond)
        cache = out.past_key_values
        outs.append(out.logits)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-5)
    # chunked prefill then token by token
    out = model(input_ids=ids[:, :10], use_cache=True, **cond)
    rest = [
        model(input_ids=ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True).logits
        for t in range(10, 23)
    ]
    torch.testing.assert_close(torch.cat([out.logits, *rest], 1), full, rtol=1e-4, atol=1e-5)


def _cache_bytes(cache):
    total = 0
    for lc in cache.layer_caches:
        for t in (lc.keys, lc.values, lc.key_mask):
            total += 0 if t is None else t.numel() * t.element_size()
        f = lc.fast
        pend = [] if f is None or f.pending is None else [f.pending.k, f.pending.v, f.pending.lr]
        for t in [] if f is None else [f.w0, f.w1, f.w2, f.m0, f.m1, f.m2, *pend]:
            total += 0 if t is None else t.numel() * t.element_size()
    return total


def _decode_cache_sizes(model, steps=40):
    cache = model(input_ids=torch.randint(0, 13, (4, 4)), use_cache=True).past_key_values
    sizes = []
    for t in range(steps):
        cache = model(input_ids=torch.randint(0, 13, (4, 1)), past_key_values=cache, use_cache=True).past_key_values
        if t % tester.chunk == 0:  # compare at the same position inside a chunk
            sizes.append(_cache_bytes(cache))
    return sizes


def test_lm_cache_memory_does_not_grow_with_length():
    sizes = _decode_cache_sizes(_lm())
    assert len(set(sizes)) == 1, sizes

    baseline = BaselineAudioTransformer.from_lact_config(tester.lm_config()).eval()
    grow = _decode_cache_sizes(baseline)
    assert grow == sorted(grow) and grow[-1] > grow[0]  # the full-attention KV cache grows


def test_generate_greedy_matches_manual_argmax_and_sampling_is_valid():
    model = _lm()
    prompt = torch.randint(0, 13, (4, 6))
    out = model.generate(input_ids=prompt, max_new_tokens=9, do_sample=False, conditioning_ids=torch.tensor([1, 2]))
    ids, cache = prompt, None
    step = prompt
    for _ in range(9):
        o = model(input_ids=step, past_key_values=cache, use_cache=True, conditioning_ids=torch.tensor([1, 2]))
        cache = o.past_key_values
        step = o.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, step], 1)
    assert torch.equal(out, ids)
    for kw in (dict(top_k=4), dict(top_p=0.8), dict(temperature=0.7)):
        s = model.generate(input_ids=prompt, max_new_tokens=5, do_sample=True, **kw)
        assert s.shape == (4, 11) and s.min() >= 0 and s.max() < 13
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(input_ids=prompt, max_new_tokens=2, num_beams=2)


@pytest.mark.parametrize("kind", ["lact", "attention"])
def test_generate_never_masks_a_code_equal_to_pad_token_id(kind):
    # transformers infers attention_mask = (input_ids != pad_token_id) when none is given; a code is not padding
    model = _lm() if kind == "lact" else BaselineAudioTransformer.from_lact_config(tester.lm_config()).eval()
    prompt = torch.randint(1, 13, (4, 10))
    prompt[0, 2] = prompt[0, 7] = 0  # codebook-0 codes equal to pad_token_id
    out = model.generate(input_ids=prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    ids = prompt
    for _ in range(4):  # greedy by full forwards over every frame
        ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)
    masked = torch.ones_like(prompt)
    assert torch.equal(
        model.generate(prompt, attention_mask=masked, max_new_tokens=4, do_sample=False, pad_token_id=0), ids
    )


def test_lm_loss_and_bad_inputs():
    model = _lm()
    ids = torch.randint(0, 13, (4, 9))
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="num_codebooks"):  # shape checks always run
        model(input_ids=ids[:3])
    with pytest.raises(ValueError, match=r"conditioning_ids must be \[B=2\]"):
        model(input_ids=ids, conditioning_ids=torch.tensor([0, 1, 2]))
    with check_values():  # checks that read values (a host sync each) run only when asked for
        with pytest.raises(ValueError, match="codebook_size"):
            model(input_ids=ids + 13)
        with pytest.raises(ValueError, match="conditioning_ids"):
            model(input_ids=ids, conditioning_ids=torch.tensor([0, 7]))


def test_ctc_bad_inputs():
    model = _ctc()
    with pytest.raises(ValueError, match="num_mel_bins"):
        model(input_features=torch.randn(1, 10, 3))
    with pytest.raises(ValueError, match="frontend='waveform'"):
        model(input_values=torch.randn(1, 100))
    with check_values(), pytest.raises(ValueError, match="vocab_size"):
        x, _ = tester.features(T=30)
        model(input_features=x, labels=torch.full((2, 2), 99))


def _tiny_inputs(model):
    if isinstance(model, LaCTAudioForCausalLM):
        return {"input_ids": torch.randint(0, model.config.codebook_size, (2 * model.config.num_codebooks, 5))}
    if isinstance(model, LaCTAudioModel) and model.config.task == "lm":
        return {"inputs_embeds": torch.randn(2, 5, model.config.hidden_size)}
    return {"input_features": torch.randn(2, 24, model.config.num_mel_bins)}


@pytest.mark.parametrize(
    "auto,task", [(AutoModelForCTC, "ctc"), (AutoModelForCausalLM, "lm"), (AutoModel, "ctc"), (AutoModel, "lm")]
)
def test_default_config_of_each_task_builds_a_working_model(auto, task):
    from modeling_lact_audio.presets import preset_config

    config = LaCTAudioConfig() if task == "ctc" else LaCTAudioConfig(task="lm")
    assert config.to_dict() == preset_config("small", task).to_dict()  # the defaults are the small preset
    model = auto.from_config(config).eval()
    with torch.no_grad():
        out = model(**_tiny_inputs(model))
    assert torch.isfinite(out[0]).all()


def test_a_model_refuses_the_config_of_the_other_task():
    with pytest.raises(ValueError, match=r"LaCTAudioConfig\(task='lm'\)"):
        AutoModelForCausalLM.from_config(LaCTAudioConfig())
    with pytest.raises(ValueError, match=r"LaCTAudioConfig\(task='ctc'\)"):
        LaCTAudioForCTC(LaCTAudioConfig(task="lm"))
    with pytest.raises(ValueError, match="has no audio front end"):
        LaCTAudioModel(LaCTAudioConfig(task="lm"))(input_features=torch.randn(1, 8, 80))


LM_FIELDS = {"num_codebooks", "codebook_size", "num_conditions", "condition_dim"}
CTC_FIELDS = {"frontend", "vocab_size", "final_dropout", "ctc_loss_reduction", "ctc_zero_infinity", "conv_strides"}


def test_a_config_carries_only_the_fields_of_its_task_and_front_end(tmp_path):
    ctc, lm, wave = tester.ctc_config(), tester.lm_config(), tester.waveform_config()
    assert not LM_FIELDS & ctc.to_dict().keys() and CTC_FIELDS <= ctc.to_dict().keys()
    assert not CTC_FIELDS & lm.to_dict().keys() and LM_FIELDS <= lm.to_dict().keys()
    assert "num_mel_bins" not in wave.to_dict() and "feature_hop_length" not in wave.to_dict()
    assert lm.pad_token_id is None and ctc.pad_token_id == 0  # an audio code 0 is not padding
    with pytest.raises(ValueError, match="num_codebooks is not a field of task='ctc'.*belongs to task='lm'"):
        tester.ctc_config(num_codebooks=4)
    with pytest.raises(ValueError, match="vocab_size is not a field of task='lm'"):
        tester.lm_config(vocab_size=30)
    with pytest.raises(ValueError, match="num_mel_bins is not a field of task='ctc' with frontend='waveform'"):
        tester.waveform_config(num_mel_bins=80)
    with pytest.raises(ValueError, match="audio-token LM is task='lm'"):
        LaCTAudioConfig(frontend="tokens")
    with pytest.raises(ValueError, match="task='lm' generates: attention_pattern must be 'causal'"):
        tester.lm_config(attention_pattern="bidirectional", lact_order="bidirectional")
    ctc.save_pretrained(tmp_path)
    assert not LM_FIELDS & json.loads((tmp_path / "config.json").read_text()).keys()


def test_config_json_written_before_the_task_field_still_loads(tmp_path):
    """Such files carry every field of both tasks; the ones of the other task are dropped on load."""
    legacy_ctc = {
        "model_type": "lact_audio",
        "frontend": "log_mel",
        "vocab_size": 30,
        "num_mel_bins": 80,
        "num_codebooks": 4,
        "codebook_size": 256,
        "num_conditions": 0,
        "condition_dim": 0,
    }
    legacy_lm = {
        "model_type": "lact_audio",
        "frontend": "tokens",
        "vocab_size": 32,
        "num_mel_bins": 80,
        "conv_strides": [2, 2],
        "num_codebooks": 2,
        "codebook_size": 13,
        "lact_order": "apply_update",
        "attention_pattern": "causal",
    }
    for legacy, task in ((legacy_ctc, "ctc"), (legacy_lm, "lm")):
        (tmp_path / "config.json").write_text(json.dumps(legacy))
        config = AutoConfig.from_pretrained(tmp_path)
        assert config.task == task
        assert not (LM_FIELDS if task == "ctc" else CTC_FIELDS | {"num_mel_bins"}) & config.to_dict().keys()
    assert (config.num_codebooks, config.codebook_size) == (2, 13)


@pytest.mark.parametrize("cls", [LaCTAudioForCTC, LaCTAudioForCausalLM, LaCTAudioModel])
def test_forward_rejects_unknown_keyword_arguments_and_returns_tuples_on_request(cls):
    torch.manual_seed(0)
    config = tester.lm_config() if cls is LaCTAudioForCausalLM else tester.ctc_config()
    model = cls(config).eval()
    inputs = _tiny_inputs(model)
    with pytest.raises(TypeError, match="unexpected keyword argument 'atention_mask'"):
        model(**inputs, atention_mask=None)
    out = model(**inputs)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out[0])


def test_forward_reads_no_tensor_value_on_the_host():
    """Without value checks no model layer syncs with the device (``.item()``, ``bool(t)``, ``int(t)``), so
    the models can run under CUDA graphs and ``torch.compile``. (The op's own syncs are tested in tests/ops.)"""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    model_files = {f"{name}_lact_audio.py" for name in ("modeling", "mixer", "frontend", "layers", "cache")}
    syncs = []

    class RecordSyncs(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                frames = [f for f in traceback.extract_stack() if "site-packages" not in f.filename]
                caller = next(f for f in reversed(frames) if not f.filename.endswith("test_modeling_lact_audio.py"))
                if caller.filename.rsplit("/", 1)[-1] in model_files:
                    syncs.append(f"{caller.filename}:{caller.lineno}: {caller.line}")
            return func(*args, **(kwargs or {}))

    ctc, lm = _ctc(), _lm()
    x, mask = tester.features(T=41, lengths=[41, 26])
    ids = torch.randint(0, 13, (4, 9))
    with torch.no_grad(), RecordSyncs():
        ctc(input_features=x, attention_mask=mask)
        cache = ctc(input_features=x[:, :16], use_cache=True).past_key_values
        ctc(input_features=x[:, 16:], past_key_values=cache, use_cache=True)
        out = lm(input_ids=ids, conditioning_ids=torch.tensor([0, 2]), use_cache=True)
        lm(input_ids=ids[:, :1], past_key_values=out.past_key_values, use_cache=True)
    assert syncs == []


@pytest.mark.parametrize(
    "cls,config", [(LaCTAudioForCTC, tester.ctc_config()), (LaCTAudioForCausalLM, tester.lm_config())]
)
def test_save_load_round_trip_and_auto_classes(tmp_path, cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    inputs = (
        {"input_features": tester.features(T=20)[0]}
        if cls is LaCTAudioForCTC
        else {"input_ids": torch.randint(0, 13, (4, 7))}
    )
    ref = model(**inputs).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    for loader in (
        cls.from_pretrained,
        AutoModelForCTC.from_pretrained if cls is LaCTAudioForCTC else AutoModelForCausalLM.from_pretrained,
    ):
        loaded = loader(tmp_path).eval()
        assert type(loaded) is cls
        torch.testing.assert_close(loaded(**inputs).logits, ref, rtol=0, atol=0)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LaCTAudioConfig)
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, LaCTAudioModel)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = _ctc()
    model.train()
    x, mask = tester.features(T=40, lengths=[40, 30])
    labels = tester.labels()
    loss = model(input_features=x, attention_mask=mask, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    loss2 = model(input_features=x, attention_mask=mask, labels=labels).loss
    loss2.backward()
    torch.testing.assert_close(loss2, loss)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)


INVALID = [
    (dict(mixer="mamba"), "mixer must be one of"),
    (dict(lact_order="random"), "lact_order must be one of"),
    (dict(attention_pattern="causal", lact_order="update_apply"), "needs lact_order='apply_update'"),
    (dict(attention_pattern="block_causal", lact_order="bidirectional"), "block_causal"),
    (dict(hidden_size=15), "divisible by num_attention_heads"),
    (dict(window_size=None), "window_size=None"),
    (dict(lact_chunk_size=0), "lact_chunk_size must be a positive int"),
    (dict(conv_kernel_sizes=[1, 3]), "kernel >= stride"),
    (dict(conv_strides=[2]), "same length"),
    (dict(base_lr=0.0), "base_lr"),
    (dict(pad_token_id=50), "pad_token_id"),
    (dict(muon_steps=-1), "muon_steps"),
    (dict(weight_norm=False), "weight_norm=False is not supported for mixer='lact'"),
    (dict(weight_norm=0), "weight_norm=False is not supported"),
    (dict(task="asr"), "task must be one of"),
    (dict(frontend="mfcc"), "frontend must be one of"),
]


@pytest.mark.parametrize("overrides,message", INVALID)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tester.ctc_config(**overrides)


@pytest.mark.parametrize("task", ["ctc", "lm"])
def test_config_round_trip_keeps_every_field(tmp_path, task):
    config = (tester.ctc_config if task == "ctc" else tester.lm_config)(use_momentum=False, muon_steps=3, base_lr=0.05)
    config.save_pretrained(tmp_path)
    loaded = LaCTAudioConfig.from_pretrained(tmp_path)
    for key, value in config.to_diff_dict().items():
        assert getattr(loaded, key) == value, key
    assert copy.deepcopy(config).lact_hidden_dim == config.lact_hidden_dim


def test_rms_norm_matches_the_formula_and_keeps_the_input_dtype():
    from modeling_lact_audio.layers_lact_audio import LaCTRMSNorm

    norm = LaCTRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    want = norm.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), want)
    (g,) = torch.autograd.grad(norm(x).sum(), x)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g, g_want)
    assert norm(x.detach().bfloat16()).dtype == torch.bfloat16
