"""A million-frame stream through the ``small`` preset's mixer stays finite, and weight norm holds the fast
weights' rows at their initial norms (issue 20)."""

import pytest
import torch

from modeling_lact_audio.cache_lact_audio import LaCTLayerCache
from modeling_lact_audio.cpu_features import cpu_has_native_bf16
from modeling_lact_audio.kernels import lact_swiglu
from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer
from modeling_lact_audio.presets import preset_config

FRAMES = 1_000_000
PIECE = 16_384


def row_norm_error(state) -> float:
    """Largest relative gap between a fast-weight row's norm and its initial norm (w0, w2 rows; w1's rows)."""
    gaps = [
        (state.w0.norm(dim=-1, keepdim=True) - state.w0_norm).abs() / state.w0_norm,
        (state.w2.norm(dim=-1, keepdim=True) - state.w2_norm).abs() / state.w2_norm,
        (state.w1.norm(dim=-1, keepdim=True) - state.w1_norm).abs() / state.w1_norm,
    ]
    return max(float(g.max()) for g in gaps)


BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is emulated on this CPU"),
)


@pytest.mark.slow
@pytest.mark.parametrize("autocast_dtype", [None, BF16], ids=["fp32", "bf16"])
@torch.no_grad()
def test_a_million_frames_through_the_small_mixer_stay_finite_with_rows_at_their_norms(autocast_dtype):
    torch.manual_seed(0)
    config = preset_config("small", "ctc")
    mixer = LaCTAudioMixer(config, 0).eval()
    # the hostile case for growth: every chunk pushes the fast weights the same way (a fixed frame plus noise)
    base = torch.randn(1, 1, config.hidden_size)
    cache, start, largest = LaCTLayerCache(), 0, 0.0
    while start < FRAMES:
        x = base + 0.1 * torch.randn(1, PIECE, config.hidden_size)
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            out, cache = mixer(x, start=start, layer_cache=cache)
        assert torch.isfinite(out).all(), f"non-finite output after {start} frames"
        largest = max(largest, float(out.abs().max()))
        start += PIECE
    assert cache.fast.seen == start >= FRAMES
    assert row_norm_error(cache.fast) < 1e-4
    assert largest < 1e3  # bounded, not merely finite


@torch.no_grad()
def test_without_weight_norm_the_same_push_grows_the_fast_weights():
    # what the config's refusal of weight_norm=False rests on, at the op level (which still allows it)
    torch.manual_seed(0)
    config = preset_config("small", "ctc")
    mixer = LaCTAudioMixer(config, 0).eval()
    B, T, H, D = 1, 4096, mixer.lact_heads, mixer.lact_dim
    k = torch.nn.functional.normalize(torch.randn(1, 1, H, D) + 0.1 * torch.randn(B, T, H, D), dim=-1)
    v = torch.randn(1, 1, H, D).expand(B, T, H, D)
    lr = torch.full((B, T, H, 3), config.base_lr)
    sizes = {}
    for weight_norm in (True, False):
        _, state = lact_swiglu(
            k,
            k,
            v,
            lr,
            mixer.initial_state(B),
            chunk_size=config.lact_chunk_size,
            order="update_apply",
            muon_steps=config.muon_steps,
            weight_norm=weight_norm,
        )
        sizes[weight_norm] = float(state.w1.norm() / mixer.w1.norm())
    assert sizes[True] == pytest.approx(1.0, abs=1e-3)
    assert sizes[False] > 2.0, sizes
