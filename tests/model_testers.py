"""Tiny configs and inputs for the model tests, in the style of transformers' ``*ModelTester``."""

import torch

from modeling_lact_audio import LaCTAudioConfig


class LaCTAudioModelTester:
    """Builds tiny configs (hidden 16, 2 layers) and matching random inputs."""

    def __init__(self, batch_size=2, num_mel_bins=8, hidden_size=16, chunk=4, window=3, vocab_size=11):
        self.batch_size = batch_size
        self.num_mel_bins = num_mel_bins
        self.hidden_size = hidden_size
        self.chunk = chunk
        self.window = window
        self.vocab_size = vocab_size

    def ctc_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_lact_heads=2,
            intermediate_size=32,
            lact_chunk_size=self.chunk,
            window_size=self.window,
            num_mel_bins=self.num_mel_bins,
            vocab_size=self.vocab_size,
            lact_order="update_apply",
            attention_pattern="block_causal",
            muon_steps=2,
            conv_channels=[12, 12],
            conv_kernel_sizes=[3, 3],
            conv_strides=[2, 2],
        )
        fields.update(overrides)
        return LaCTAudioConfig(**fields)

    def waveform_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            frontend="waveform", conv_channels=[8, 8, 8], conv_kernel_sizes=[10, 3, 3], conv_strides=[5, 2, 2]
        )
        fields.update(overrides)
        return self.ctc_config(**fields)

    def lm_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_lact_heads=2,
            intermediate_size=32,
            lact_chunk_size=self.chunk,
            window_size=self.window,
            frontend="tokens",
            lact_order="apply_update",
            attention_pattern="causal",
            num_codebooks=2,
            codebook_size=13,
            num_conditions=3,
            condition_dim=5,
            muon_steps=2,
        )
        fields.update(overrides)
        return LaCTAudioConfig(**fields)

    def features(self, T=37, lengths=None, seed=0):
        """``input_features [B, T, mels]`` and ``attention_mask [B, T]`` (int, 1 = real)."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch_size, T, self.num_mel_bins, generator=g)
        lengths = lengths or [T] * self.batch_size
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
        return x * mask[..., None], mask

    def labels(self, lengths=(5, 3), seed=0):
        g = torch.Generator().manual_seed(seed)
        labels = torch.full((len(lengths), max(lengths)), -100, dtype=torch.long)
        for i, n in enumerate(lengths):
            labels[i, :n] = torch.randint(1, self.vocab_size, (n,), generator=g)
        return labels
