"""The ablation options of the models: ``lact_update_rule``, ``lact_lr_mode``, ``allow_unnormalised_fast_weights``
in the config, and the forward kwarg ``lact_chunk_ends`` down to the op; caches and presets carry the new state."""

import json

import pytest
import torch

from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCausalLM, LaCTAudioForCTC, LaCTCache, mixer_lact_audio
from modeling_lact_audio.cache_lact_audio import config_fingerprint
from modeling_lact_audio.recogniser.heads import CachedStatesCTC, recogniser_config
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester()
ADAM = dict(lact_update_rule="adam", muon_steps=0)
NEW_FIELDS = ("lact_update_rule", "lact_lr_mode", "allow_unnormalised_fast_weights")


def _ctc(**overrides) -> LaCTAudioForCTC:
    torch.manual_seed(0)
    return LaCTAudioForCTC(tester.ctc_config(**overrides)).eval()


def _frames(model, T):
    return int(model._get_feat_extract_output_lengths(T))


def _spy(monkeypatch) -> list:
    """Record the keyword arguments of every op call of the mixers."""
    calls, op = [], mixer_lact_audio.lact_swiglu

    def recording(*args, **kwargs):
        calls.append({"lr": args[3], **kwargs})
        return op(*args, **kwargs)

    monkeypatch.setattr(mixer_lact_audio, "lact_swiglu", recording)
    return calls


def test_defaults_keep_the_models_of_before():
    config = LaCTAudioConfig()
    assert (config.lact_update_rule, config.lact_lr_mode, config.allow_unnormalised_fast_weights) == (
        "sgd",
        "learned",
        False,
    )
    old = {k: v for k, v in config.to_dict().items() if k not in NEW_FIELDS}  # a config.json of before
    loaded = LaCTAudioConfig.from_dict(old)
    assert loaded.lact_update_rule == "sgd" and loaded.lact_lr_mode == "learned"
    # presets made before these fields existed still match
    legacy = type("Legacy", (), {"to_dict": lambda self: old})()
    assert config_fingerprint(legacy) == config_fingerprint(config)
    for change in (ADAM, dict(lact_lr_mode="fixed"), dict(weight_norm=False, allow_unnormalised_fast_weights=True)):
        assert config_fingerprint(LaCTAudioConfig(**change)) != config_fingerprint(config), change


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(lact_update_rule="lion"), "lact_update_rule must be one of"),
        (dict(lact_update_rule="adam"), "lact_update_rule='adam' needs muon_steps=0"),
        (dict(lact_lr_mode="cosine"), "lact_lr_mode must be one of"),
        (dict(weight_norm=False), "allow_unnormalised_fast_weights=True"),
        (dict(allow_unnormalised_fast_weights="yes"), "allow_unnormalised_fast_weights must be a bool"),
    ],
)
def test_invalid_options_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        LaCTAudioConfig(**fields)


def test_round_trip_keeps_the_options(tmp_path):
    config = tester.ctc_config(**ADAM, lact_lr_mode="fixed", weight_norm=False, allow_unnormalised_fast_weights=True)
    config.save_pretrained(tmp_path)
    loaded = LaCTAudioConfig.from_pretrained(tmp_path)
    for name in NEW_FIELDS + ("weight_norm", "muon_steps"):
        assert getattr(loaded, name) == getattr(config, name), name


def test_fixed_rates_have_no_projection_and_reach_the_op(monkeypatch):
    model = _ctc(lact_lr_mode="fixed", base_lr=0.03)
    assert not any("lr_proj" in name for name, _ in model.named_parameters())
    assert all(layer.mixer.lr_proj is None for layer in model.model.layers)
    learned = _ctc()
    assert sum(p.numel() for p in learned.parameters()) > sum(p.numel() for p in model.parameters())
    calls = _spy(monkeypatch)
    x, mask = tester.features(T=24, lengths=[24, 17])
    with torch.no_grad():
        out = model(input_features=x, attention_mask=mask)
    assert torch.isfinite(out.logits).all() and len(calls) == 2
    for call in calls:
        assert call["lr"].dtype == torch.float32 and torch.equal(call["lr"], torch.full_like(call["lr"], 0.03))
        assert call["update_rule"] == "sgd" and call["chunk_ends"] is None


def test_adam_model_trains_streams_and_saves_its_second_moments(tmp_path, monkeypatch):
    model = _ctc(**ADAM)
    x, mask = tester.features(T=40, lengths=[40, 29])
    out = model.train()(input_features=x, attention_mask=mask, labels=tester.labels())
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    calls = _spy(monkeypatch)
    with torch.no_grad():
        whole = model(input_features=x).logits
        cache = LaCTCache(2)
        pieces = [
            model(input_features=x[:, s : s + 16], past_key_values=cache, use_cache=True).logits for s in (0, 16, 32)
        ]
    assert calls[0]["update_rule"] == "adam" and calls[0]["muon_steps"] == 0
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-5, atol=1e-5)  # streaming equals one call
    fast = cache.layer_caches[0].fast
    assert fast.v0 is not None and fast.v_count.tolist() == [[3, 3], [3, 3]]  # one update per 4-frame chunk
    cache.batch_select_indices(torch.tensor([1]))
    assert cache.layer_caches[0].fast.v1.shape[0] == 1
    cache.save_pretrained(tmp_path, model.config)
    info = json.loads((tmp_path / "lact_cache.json").read_text())
    assert info["has_second_moment"] is True
    loaded = LaCTCache.from_pretrained(tmp_path, model.config, dtype=torch.float64)
    cache.start_new_utterance()
    for a, b in zip(cache.layer_caches, loaded.layer_caches):
        assert b.fast.v_count.dtype == torch.long and torch.equal(a.fast.v_count, b.fast.v_count)
        for name in ("v0", "v1", "v2"):
            torch.testing.assert_close(getattr(b.fast, name).float(), getattr(a.fast, name), rtol=0, atol=0)
    with torch.no_grad():
        want = model(input_features=x[1:, :16], past_key_values=cache, use_cache=True).logits
        got = model(input_features=x[1:, :16], past_key_values=loaded, use_cache=True).logits
    torch.testing.assert_close(got.float(), want, rtol=1e-5, atol=1e-5)


def test_unnormalised_fast_weights_when_allowed(monkeypatch):
    model = _ctc(weight_norm=False, allow_unnormalised_fast_weights=True)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        out = model(input_features=tester.features(T=24)[0])
    assert torch.isfinite(out.logits).all() and all(c["weight_norm"] is False for c in calls)


def test_chunk_ends_reach_the_op_and_change_the_chunks(monkeypatch):
    model = _ctc()
    x, mask = tester.features(T=40, lengths=[40, 33])
    F = _frames(model, 40)
    calls = _spy(monkeypatch)
    with torch.no_grad():
        plain = model(input_features=x, attention_mask=mask).logits
        none = model(input_features=x, attention_mask=mask, lact_chunk_ends=torch.zeros(2, F, dtype=torch.bool)).logits
        ends = torch.zeros(2, F, dtype=torch.bool)
        ends[0, 1], ends[1, 5] = True, True
        varied = model(input_features=x, attention_mask=mask, lact_chunk_ends=ends).logits
    torch.testing.assert_close(none, plain, rtol=1e-6, atol=1e-6)  # no extra ends: the fixed chunks
    assert not torch.allclose(varied, plain, atol=1e-4)
    assert torch.equal(calls[-1]["chunk_ends"], ends) and calls[0]["chunk_ends"] is None


def test_streaming_with_chunk_ends_equals_one_call():
    """update_apply + block_causal, cut where every row ends a chunk: pieces equal one call."""
    model = _ctc()
    x = tester.features(T=48)[0]
    F = _frames(model, 48)  # 12 frames
    ends = torch.zeros(2, F, dtype=torch.bool)
    ends[0, [2, 3, 7]] = True
    ends[1, [0, 3, 5, 7]] = True  # both rows end a chunk at frames 3 and 7: cut after 16 and 32 input frames
    with torch.no_grad():
        whole = model(input_features=x, lact_chunk_ends=ends).logits
        cache = LaCTCache(2)
        pieces = [
            model(
                input_features=x[:, 16 * i : 16 * (i + 1)],
                past_key_values=cache,
                use_cache=True,
                lact_chunk_ends=ends[:, 4 * i : 4 * (i + 1)],
            ).logits
            for i in range(3)
        ]
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-5, atol=1e-5)
    assert cache.layer_caches[0].fast.chunk_fill is not None


def test_generation_order_stream_with_chunk_ends_split_anywhere():
    """apply_update + causal: the partial chunk of each row waits in the cache, so any cut equals one call."""
    model = _ctc(lact_order="apply_update", attention_pattern="causal")
    x = tester.features(T=48)[0]
    ends = torch.rand(2, 12, generator=torch.Generator().manual_seed(1)) < 0.3
    with torch.no_grad():
        whole = model(input_features=x, lact_chunk_ends=ends).logits
        cache = LaCTCache(2)
        pieces = [
            model(
                input_features=x[:, a:b],
                past_key_values=cache,
                use_cache=True,
                lact_chunk_ends=ends[:, a // 4 : b // 4],
            ).logits
            for a, b in ((0, 8), (8, 28), (28, 48))
        ]
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-5, atol=1e-5)


def test_bad_chunk_ends_raise():
    model = _ctc()
    x = tester.features(T=40)[0]
    with pytest.raises(ValueError, match=r"lact_chunk_ends must be a bool tensor \[B, frames\] = \(2, 10\)"):
        model(input_features=x, lact_chunk_ends=torch.zeros(2, 40, dtype=torch.bool))
    with pytest.raises(ValueError, match="lact_chunk_ends must be bool"):
        model(input_features=x, lact_chunk_ends=torch.zeros(2, 10))
    baseline = _ctc(mixer="sliding_window")
    with pytest.raises(ValueError, match="has no fast weights"):
        baseline(input_features=x, lact_chunk_ends=torch.zeros(2, 10, dtype=torch.bool))


def test_lm_with_a_prefix_takes_chunk_ends():
    torch.manual_seed(0)
    model = LaCTAudioForCausalLM(tester.lm_config()).eval()
    ids = torch.randint(0, 13, (2 * 2, 9), generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0, 2])
    with torch.no_grad():
        plain = model(input_ids=ids, conditioning_ids=cond).logits
        none = model(input_ids=ids, conditioning_ids=cond, lact_chunk_ends=torch.zeros(2, 9, dtype=torch.bool)).logits
        ends = torch.zeros(2, 9, dtype=torch.bool)
        ends[:, 1] = True
        varied = model(input_ids=ids, conditioning_ids=cond, lact_chunk_ends=ends).logits
    torch.testing.assert_close(none, plain, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(varied, plain, atol=1e-4)


def test_cached_states_head_passes_chunk_ends(monkeypatch):
    config = recogniser_config(11, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_lact_heads=2,
                               intermediate_size=32, lact_chunk_size=4, window_size=3, muon_steps=2)  # fmt: skip
    torch.manual_seed(0)
    head = CachedStatesCTC(config, 8).eval()
    states = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 11, dtype=torch.long)
    ends = torch.zeros(2, 11, dtype=torch.bool)
    ends[:, 2] = True
    calls = _spy(monkeypatch)
    with torch.no_grad():
        plain = head(states, mask).logits
        varied = head(states, mask, lact_chunk_ends=ends).logits
    assert torch.equal(calls[-1]["chunk_ends"], ends) and not torch.allclose(varied, plain, atol=1e-4)
