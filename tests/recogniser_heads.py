"""Tiny recogniser-head configurations shared by the recogniser and adaptation tests."""

from modeling_lact_audio.recogniser.heads import recogniser_config


def tiny_recogniser_config(vocab_size: int, **overrides):
    """``recogniser_config`` shrunk to 2 blocks of width 32 (one LaCT head): fast enough for any CPU test.
    ``overrides`` replace any field (chunk size, window, dropout)."""
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_lact_heads=1,
        intermediate_size=64,
        lact_chunk_size=8,
        window_size=4,
    )
    fields.update(overrides)
    return recogniser_config(vocab_size, **fields)
