"""Fast-weight presets: LaCTCache.save_pretrained / from_pretrained and config_fingerprint."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCTC, LaCTCache
from modeling_lact_audio.cache_lact_audio import config_fingerprint
from modeling_lact_audio.recogniser.heads import CachedStatesCTC, recogniser_config
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester()
D_MODEL = 8


def _small() -> dict:
    """The tiny recogniser head's config fields (hidden 16, 2 layers, chunk 4, momentum on)."""
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


def _head(**overrides) -> CachedStatesCTC:
    """A tiny offline recogniser head (bidirectional order, momentum on)."""
    torch.manual_seed(0)
    return CachedStatesCTC(recogniser_config(11, **(_small() | overrides)), D_MODEL).eval()


def _states(batch: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, D_MODEL, generator=g)
    mask = torch.ones(batch, T, dtype=torch.long)
    mask[1:, T - 5 :] = 0  # the second example is padded
    return {"frontend_states": x, "attention_mask": mask}


def _ctc(**overrides) -> LaCTAudioForCTC:
    torch.manual_seed(0)
    return LaCTAudioForCTC(tester.ctc_config(**overrides)).eval()


def _run(model, inputs, cache, piece=None):
    """Logits of one utterance fed whole, or in ``piece``-long parts (streaming), with ``cache``."""
    if piece is None:
        return model(**inputs, past_key_values=cache, use_cache=True).logits
    T = inputs["input_features"].shape[1]
    return torch.cat(
        [
            model(
                input_features=inputs["input_features"][:, s : s + piece], past_key_values=cache, use_cache=True
            ).logits
            for s in range(0, T, piece)
        ],
        dim=1,
    )


def _features(T: int, seed: int):
    return {"input_features": tester.features(T=T, seed=seed)[0]}


SETUPS = {
    # offline recogniser head: bidirectional order, whole utterances; batch 1 and a padded batch of 2
    "offline_batch1": (lambda: _head(), lambda seed: _states(1, 21, seed), None),
    "offline_batch2": (lambda: _head(), lambda seed: _states(2, 21, seed), None),
    # streaming ASR: update_apply + block_causal, fed one LaCT chunk (4 frames = 16 mel frames) at a time
    "streaming": (lambda: _ctc(), lambda seed: _features(40 + 8 * seed, seed), 16),
    # generation order: a trailing partial chunk stays pending in the state and must be dropped
    "apply_update_pending": (
        lambda: _ctc(lact_order="apply_update", attention_pattern="causal"),
        lambda seed: _features(44 - 8 * seed, seed),
        None,
    ),
}


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_loaded_preset_continues_like_start_new_utterance(setup, tmp_path):
    make_model, make_inputs, piece = SETUPS[setup]
    model = make_model()
    cache = LaCTCache(model.config.num_hidden_layers)
    with torch.no_grad():
        _run(model, make_inputs(0), cache, piece)
        states = [lc.fast for lc in cache.layer_caches]
        assert all(s is not None and s.m0 is not None for s in states)  # momentum is part of the preset
        if setup == "apply_update_pending":
            assert all(s.pending is not None for s in states)  # 11 frames: 3 tokens of a chunk wait
        cache.save_pretrained(tmp_path / "preset", model.config)
        assert cache.seen_frames > 0  # saving leaves the cache alone
        info = json.loads((tmp_path / "preset" / "lact_cache.json").read_text())
        assert info["num_layers"] == 2 and info["layers_with_state"] == [0, 1] and info["has_momentum"]
        assert info["batch_size"] == cache.batch_size and info["chunk_size"] == model.config.lact_chunk_size
        assert info["config_fingerprint"] == config_fingerprint(model.config)

        loaded = LaCTCache.from_pretrained(tmp_path / "preset", model.config)
        cache.start_new_utterance()
        assert loaded.seen_frames == loaded.seen_inputs == 0 and loaded.frontend_states is None
        for a, b in zip(cache.layer_caches, loaded.layer_caches):
            assert b.keys is None and b.fast.pending is None and b.fast.seen == 0
            for name in ("w0", "w1", "w2", "w0_norm", "w1_norm", "w2_norm", "m0", "m1", "m2"):
                assert torch.equal(getattr(a.fast, name), getattr(b.fast, name)), name
        nxt = make_inputs(1)
        want = _run(model, nxt, cache, piece)
        got = _run(model, nxt, loaded, piece)
        fresh = _run(model, nxt, LaCTCache(model.config.num_hidden_layers), piece)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(fresh, want)  # the preset matters: it is not the initial state
    for a, b in zip(cache.layer_caches, loaded.layer_caches):  # and the streams stay equal afterwards
        torch.testing.assert_close(b.fast.w0, a.fast.w0, rtol=0, atol=1e-6)


def test_device_and_dtype_on_load(tmp_path):
    model = _head()
    cache = LaCTCache(2)
    with torch.no_grad():
        model(**_states(1, 9, 0), past_key_values=cache, use_cache=True)
    cache.save_pretrained(tmp_path, model.config)
    loaded = LaCTCache.from_pretrained(tmp_path, model.config, device="cpu", dtype=torch.float64)
    assert loaded.layer_caches[0].fast.w1.dtype == torch.float64
    torch.testing.assert_close(loaded.layer_caches[0].fast.w1.float(), cache.layer_caches[0].fast.w1)
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        LaCTCache.from_pretrained(tmp_path, model.config, dtype=torch.bfloat16)


def test_config_fingerprint(tmp_path):
    config = _head().config
    same = recogniser_config(11, **_small())
    assert config_fingerprint(same) == config_fingerprint(config)
    config.save_pretrained(tmp_path)
    reloaded = LaCTAudioConfig.from_pretrained(tmp_path)
    reloaded._attn_implementation = "eager"
    reloaded.output_hidden_states = True
    assert config_fingerprint(reloaded) == config_fingerprint(config)
    fingerprint = config_fingerprint(config)
    assert len(fingerprint) == 64 and int(fingerprint, 16) >= 0
    for change in (
        dict(hidden_size=32),
        dict(num_lact_heads=1),
        dict(lact_chunk_size=8),
        dict(num_hidden_layers=3),
        dict(use_momentum=False),
    ):
        other = recogniser_config(11, **(_small() | change))
        assert config_fingerprint(other) != fingerprint, change
    with pytest.raises(TypeError, match="model.config"):
        config_fingerprint({"hidden_size": 16})


@pytest.fixture
def preset(tmp_path):
    """A saved preset of the tiny offline head: ``(folder, config)``."""
    model = _head()
    cache = LaCTCache(2)
    with torch.no_grad():
        model(**_states(1, 13, 0), past_key_values=cache, use_cache=True)
    cache.save_pretrained(tmp_path / "preset", model.config)
    return tmp_path / "preset", model.config


def test_preset_of_another_model_is_refused(preset):
    folder, config = preset
    other = recogniser_config(11, **(_small() | dict(hidden_size=32)))
    with pytest.raises(ValueError, match="made for another model") as error:
        LaCTCache.from_pretrained(folder, other)
    assert config_fingerprint(config) in str(error.value) and config_fingerprint(other) in str(error.value)


def test_missing_files_are_named(preset, tmp_path):
    folder, config = preset
    with pytest.raises(FileNotFoundError, match="no preset folder"):
        LaCTCache.from_pretrained(tmp_path / "nowhere", config)
    (folder / "fast_weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="fast_weights.safetensors"):
        LaCTCache.from_pretrained(folder, config)
    (folder / "lact_cache.json").unlink()
    with pytest.raises(FileNotFoundError, match="lact_cache.json"):
        LaCTCache.from_pretrained(folder, config)


def test_tampered_or_truncated_files_are_refused(preset):
    folder, config = preset
    weights = folder / "fast_weights.safetensors"
    data = weights.read_bytes()
    tampered = bytearray(data)
    tampered[-3] ^= 0xFF  # one byte of the last tensor's data
    weights.write_bytes(bytes(tampered))
    with pytest.raises(ValueError, match="corrupt.*SHA-256"):
        LaCTCache.from_pretrained(folder, config)
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        LaCTCache.from_pretrained(folder, config)
    # a broken file whose checksum was recorded anyway is still caught by the parser
    info_file = folder / "lact_cache.json"
    info = json.loads(info_file.read_text())
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"
    weights.write_bytes(garbage)
    info_file.write_text(json.dumps(info | {"fast_weights_sha256": hashlib.sha256(garbage).hexdigest()}))
    with pytest.raises(ValueError, match="is corrupt"):
        LaCTCache.from_pretrained(folder, config)
    info_file.write_text('{"format": 1, "config_')
    with pytest.raises(ValueError, match="corrupt.*not JSON"):
        LaCTCache.from_pretrained(folder, config)


def _rewrite(folder, edit):
    """Apply ``edit`` to the preset's tensors and record the new file's checksum (a consistent, wrong preset)."""
    weights = folder / "fast_weights.safetensors"
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights)
    info_file = folder / "lact_cache.json"
    info = json.loads(info_file.read_text())
    info["fast_weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    info_file.write_text(json.dumps(info))


def test_shapes_layers_and_values_are_checked(preset):
    folder, config = preset

    def shrink(tensors):
        tensors["layers.1.w0"] = tensors["layers.1.w0"][:, :, :4].contiguous()

    _rewrite(folder, shrink)
    with pytest.raises(ValueError, match=r"layers.1.w0 is \(1, 2, 4, 8\) but this config's LaCT layers need"):
        LaCTCache.from_pretrained(folder, config)

    def poison(tensors):
        tensors["layers.1.w0"] = torch.full((1, 2, 8, 8), float("nan"))

    _rewrite(folder, poison)
    with pytest.raises(ValueError, match="layers.1.w0 .* not a finite"):
        LaCTCache.from_pretrained(folder, config)

    _rewrite(folder, lambda tensors: tensors.pop("layers.0.m1"))
    with pytest.raises(ValueError, match=r"missing \['layers.0.m1'\]"):
        LaCTCache.from_pretrained(folder, config)

    info_file = folder / "lact_cache.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps(info | {"num_layers": 3}))
    with pytest.raises(ValueError, match="preset has 3 layers"):
        LaCTCache.from_pretrained(folder, config)
    info_file.write_text(json.dumps(info | {"layers_with_state": [0, 5]}))
    with pytest.raises(ValueError, match=r"layers_with_state \[0, 5\] does not fit"):
        LaCTCache.from_pretrained(folder, config)


def test_empty_cache_is_refused(tmp_path):
    config = _head().config
    with pytest.raises(ValueError, match="nothing to save: no layer holds fast weights; run the model"):
        LaCTCache(2).save_pretrained(tmp_path, config)
    baseline = _ctc(mixer="attention", window_size=None)
    cache = LaCTCache(2)
    with torch.no_grad():
        baseline(**_features(16, 0), past_key_values=cache, use_cache=True)
    with pytest.raises(ValueError, match="nothing to save"):
        cache.save_pretrained(tmp_path, baseline.config)
    with pytest.raises(ValueError, match="num_hidden_layers is 3"):
        LaCTCache(2).save_pretrained(tmp_path, recogniser_config(11, **(_small() | dict(num_hidden_layers=3))))
    assert not (tmp_path / "lact_cache.json").exists()
