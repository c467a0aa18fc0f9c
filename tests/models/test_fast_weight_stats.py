"""Fast-weight statistics for the adaptation report: vectors, a session's trace, the 2-D projection."""

import numpy as np
import pytest
import torch

from modeling_lact_audio import LaCTAudioForCTC, LaCTCache
from modeling_lact_audio.adaptation.fast_weight_stats import (
    evolution_trace,
    fast_weight_vector,
    initial_fast_weight_vector,
    project_2d,
)
from modeling_lact_audio.recogniser.heads import CachedStatesCTC, recogniser_config
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester(batch_size=1)
D_MODEL = 8
SMALL = dict(
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
N_PER_LAYER = 3 * 2 * 8 * 8  # w0, w1, w2 of 2 heads, D = Dh = 8


def _head(**overrides) -> CachedStatesCTC:
    torch.manual_seed(0)
    return CachedStatesCTC(recogniser_config(11, **(SMALL | overrides)), D_MODEL).eval()


def _session(lengths=(13, 9, 17)) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [
        {"frontend_states": torch.randn(1, T, D_MODEL, generator=g), "attention_mask": torch.ones(1, T)}
        for T in lengths
    ]


def test_vectors_have_one_order_and_start_at_the_initial_weights():
    model = _head()
    v0 = initial_fast_weight_vector(model)
    assert v0.shape == (2 * N_PER_LAYER,) and v0.dtype == torch.float32
    mixer = model.ctc.model.layers[1].mixer
    start = 2 * N_PER_LAYER // 2
    torch.testing.assert_close(v0[start : start + 128], mixer.w0.detach().reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(v0[start + 128 : start + 256], mixer.w1.detach().reshape(-1), rtol=0, atol=0)
    # a cache holding the initial state gives the initial vector
    cache = LaCTCache(2)
    for lc, layer in zip(cache.layer_caches, model.ctc.model.layers):
        lc.fast = layer.mixer.initial_state(1)
    assert torch.equal(fast_weight_vector(cache), v0)
    with pytest.raises(ValueError, match=r"layers \[0, 1\] of the cache hold no fast weights"):
        fast_weight_vector(LaCTCache(2))
    with pytest.raises(ValueError, match="outside the cache's batch of 1"):
        fast_weight_vector(cache, index=1)


def test_batch_elements_are_separate():
    model = _head()
    x = torch.randn(2, 11, D_MODEL, generator=torch.Generator().manual_seed(0))
    cache = model(frontend_states=x, attention_mask=torch.ones(2, 11), use_cache=True).past_key_values
    alone = model(frontend_states=x[1:], attention_mask=torch.ones(1, 11), use_cache=True).past_key_values
    # batch 2 vs batch 1 take different float32 matmul paths: equal up to rounding (seen: 1.2e-6 absolute)
    torch.testing.assert_close(fast_weight_vector(cache, index=1), fast_weight_vector(alone), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_weight_vector(cache, index=-1), fast_weight_vector(cache, index=1))


def test_trace_of_a_session():
    model = _head()
    session = _session()
    trace = evolution_trace(model, session)
    V = trace["vectors"]
    assert V.shape == (4, 2 * N_PER_LAYER) and trace["granularity"] == "utterance"
    assert trace["utterance"] == [0, 1, 2] and trace["piece"] == [0, 0, 0] and trace["length"] == [13, 9, 17]
    assert torch.equal(V[0], initial_fast_weight_vector(model))
    assert all(n > 0 for n in trace["update_norm"])  # every utterance moves the weights
    for i in range(3):
        d = (V[i + 1].double() - V[0].double()).norm().item()
        u = (V[i + 1].double() - V[i].double()).norm().item()
        assert trace["distance_from_initial"][i] == pytest.approx(d, rel=1e-12)
        assert trace["update_norm"][i] == pytest.approx(u, rel=1e-12)
        assert trace["relative_distance"][i] == pytest.approx(d / V[0].double().norm().item(), rel=1e-12)
        assert trace["relative_update_norm"][i] == pytest.approx(u / V[i].double().norm().item(), rel=1e-12)
    assert trace["distance_from_initial"][0] == pytest.approx(trace["update_norm"][0], rel=1e-12)
    # the carried state is what a hand-run session with start_new_utterance leaves
    cache = LaCTCache(2)
    with torch.no_grad():
        for i, inputs in enumerate(session):
            if i:
                cache.start_new_utterance()
            model(**inputs, past_key_values=cache, use_cache=True)
    assert torch.equal(fast_weight_vector(cache), V[-1])


def test_zero_learning_rate_leaves_the_weights_where_they_start():
    model = _head()
    for layer in model.ctc.model.layers:
        with torch.no_grad():
            layer.mixer.lr_proj.weight.zero_()
            layer.mixer.lr_proj.bias.fill_(-1e4)  # softplus(-1e4 + offset) == 0 in float32
    trace = evolution_trace(model, _session())
    # only the renormalisation moves them: rows rescaled by norm / (norm + 1e-5), as in the official LaCT
    assert max(trace["relative_update_norm"]) < 2e-5 and max(trace["relative_distance"]) < 2e-5


def test_streamed_pieces_give_per_chunk_steps_that_end_where_one_call_ends():
    torch.manual_seed(0)
    model = LaCTAudioForCTC(tester.ctc_config()).eval()  # update_apply + block_causal
    session = [{"input_features": tester.features(T=T, seed=s)[0]} for s, T in enumerate((40, 32))]
    piece = model.config.lact_chunk_size * model.config.total_stride  # one LaCT update per piece
    chunked = evolution_trace(model, session, chunk_frames=piece)
    whole = evolution_trace(model, session)
    assert chunked["granularity"] == "piece"
    assert chunked["utterance"] == [0, 0, 0, 1, 1] and chunked["piece"] == [0, 1, 2, 0, 1]
    assert chunked["length"] == [16, 16, 8, 16, 16]
    # fp32: a streamed piece and one whole call sum the same products in another order (~1e-6)
    torch.testing.assert_close(chunked["vectors"][3], whole["vectors"][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked["vectors"][-1], whole["vectors"][-1], rtol=1e-5, atol=1e-5)
    assert all(n > 0 for n in chunked["update_norm"])


def test_bad_calls_say_what_to_do():
    model = _head()
    with pytest.raises(ValueError, match="chunk_frames needs a streaming order"):
        evolution_trace(model, _session(), chunk_frames=4)
    with pytest.raises(ValueError, match="batch 1"):
        evolution_trace(model, [{"frontend_states": torch.randn(2, 5, D_MODEL), "attention_mask": torch.ones(2, 5)}])
    with pytest.raises(ValueError, match="set by evolution_trace"):
        evolution_trace(model, [_session()[0] | {"use_cache": True}])
    with pytest.raises(ValueError, match="non-empty list"):
        evolution_trace(model, [])
    with pytest.raises(ValueError, match=r"model.eval\(\)"):
        evolution_trace(model.train(), _session())
    baseline = _head(mixer="attention", window_size=None).eval()
    with pytest.raises(ValueError, match="no LaCT fast weights"):
        initial_fast_weight_vector(baseline)


def test_projection_of_points_on_a_line():
    g = torch.Generator().manual_seed(0)
    direction, origin = torch.randn(500, generator=g, dtype=torch.float64), torch.randn(500, generator=g)
    t = torch.tensor([0.0, 1.0, 2.5, -1.0, 4.0], dtype=torch.float64)
    points = origin + t[:, None] * direction
    xy = project_2d(points)
    assert xy.shape == (5, 2) and xy.dtype == np.float64
    spread = np.abs(xy[:, 0]).max()
    assert np.abs(xy[:, 1]).max() <= 1e-6 * spread
    # the first coordinate is the position along the line, centred, with the largest one positive
    expected = (t - t.mean()).numpy() * direction.norm().item()
    np.testing.assert_allclose(xy[:, 0], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(project_2d(-points)[:, 0], xy[:, 0], atol=1e-9)  # the sign is not the data's
    np.testing.assert_allclose(project_2d(points.numpy()), xy, atol=1e-12)
    assert np.array_equal(project_2d(points[:1]), np.zeros((1, 2)))


def test_projection_keeps_a_plane():
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=torch.float64))[0]  # orthonormal [50, 2]
    plane = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    xy = project_2d(plane @ basis.T)
    np.testing.assert_allclose(np.abs(xy), np.abs(plane.numpy()), atol=1e-9)
    assert xy[0, 0] == pytest.approx(3.0) and xy[2, 1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[N, n\] matrix"):
        project_2d(torch.zeros(3))
