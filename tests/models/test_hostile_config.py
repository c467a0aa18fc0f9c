"""Hostile configs: values that used to be accepted and break later now raise naming the field."""

import pytest

from modeling_lact_audio import LaCTAudioConfig


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rope_theta", 0, "rope_theta must be a real number > 0"),
        ("rope_theta", -1.0, "rope_theta must be a real number > 0"),
        ("rope_theta", float("inf"), "rope_theta must be a real number > 0"),
        ("rms_norm_eps", -1e-6, "rms_norm_eps must be a real number > 0"),
        ("rms_norm_eps", "1e-6", "rms_norm_eps must be a real number > 0"),
        ("feature_hop_length", 0, "feature_hop_length must be a positive int"),
        ("vocab_size", "30", "vocab_size must be a positive int, got '30'"),
        ("num_hidden_layers", True, "num_hidden_layers must be a positive int"),
        ("lact_chunk_size", 64.0, "lact_chunk_size must be a positive int"),
        ("base_lr", float("nan"), "base_lr must be > 0"),
        ("hidden_dropout", "0.1", r"hidden_dropout must lie in \[0, 1\)"),
        ("initializer_range", -0.02, "initializer_range must be a real number >= 0"),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=f"LaCTAudioConfig: {message}"):
        LaCTAudioConfig(**{field: value})


def test_valid_edge_values_are_accepted():
    config = LaCTAudioConfig(rope_theta=500_000, rms_norm_eps=1e-12, initializer_range=0.0)
    assert config.rope_theta == 500_000
    assert LaCTAudioConfig.from_dict(config.to_dict()).rms_norm_eps == 1e-12
