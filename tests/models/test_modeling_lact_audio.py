"""The model suite: shapes, CTC loss and gradients, padding, streaming/cached decoding, save/load, Auto classes."""

import copy

import pytest
import torch
from tests.model_testers import LaCTAudioModelTester
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForCTC

from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCausalLM, LaCTAudioForCTC, LaCTAudioModel, LaCTCache

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
    from modeling_lact_audio.baselines import BaselineAudioTransformer

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


def test_lm_loss_and_bad_inputs():
    model = _lm()
    ids = torch.randint(0, 13, (4, 9))
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="codebook_size"):
        model(input_ids=ids + 13)
    with pytest.raises(ValueError, match="num_codebooks"):
        model(input_ids=ids[:3])
    with pytest.raises(ValueError, match="conditioning_ids"):
        model(input_ids=ids, conditioning_ids=torch.tensor([0, 7]))


def test_ctc_bad_inputs():
    model = _ctc()
    with pytest.raises(ValueError, match="num_mel_bins"):
        model(input_features=torch.randn(1, 10, 3))
    with pytest.raises(ValueError, match="frontend='waveform'"):
        model(input_values=torch.randn(1, 100))
    with pytest.raises(ValueError, match="vocab_size"):
        x, _ = tester.features(T=30)
        model(input_features=x, labels=torch.full((2, 2), 99))


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
]


@pytest.mark.parametrize("overrides,message", INVALID)
def test_invalid_configs_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tester.ctc_config(**overrides)


def test_config_round_trip_keeps_every_field(tmp_path):
    config = tester.ctc_config(use_momentum=False, weight_norm=False, base_lr=0.05)
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

