"""Audio front ends: causal, streamable conv stacks over log-mel frames or the raw waveform.

Every conv layer is causal (left context ``kernel - stride`` inputs, zeros at the start of a
stream) and right-pads to a multiple of its stride, so a layer maps ``L`` inputs to
``ceil(L / stride)`` outputs. Fed through the cache in pieces whose length is a multiple of the
total stride, a stream gives exactly the frames of one call over the whole input.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_lact_audio import LaCTAudioConfig


def conv_output_lengths(lengths, strides):
    """Frames out of the conv stack for ``lengths`` inputs (int or LongTensor): ``ceil`` per layer."""
    for s in strides:
        lengths = (lengths + s - 1) // s
    return lengths


class CausalConvLayer(nn.Module):
    """Conv1d + per-frame LayerNorm + GELU: ``[B, C_in, L] -> [B, C_out, ceil(L / stride)]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.context = kernel - stride
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None):
        """x ``[B, C_in, L]``; state ``[B, C_in, kernel - stride]`` (the previous inputs) or None.

        Returns ``(y [B, C_out, ceil(L / stride)], new_state)``.
        """
        B, C, L = x.shape
        if state is None:
            state = x.new_zeros(B, C, self.context)
        x = torch.cat([state.to(x.dtype), x], dim=-1)
        new_state = x[..., x.shape[-1] - self.context :]
        x = F.pad(x, (0, (-L) % self.stride))
        y = self.conv(x)
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        return F.gelu(y), new_state


class LaCTAudioFrontend(nn.Module):
    """Conv subsampling to model frames.

    ``log_mel``: ``input_features [B, T, num_mel_bins]`` (the feature extractor's layout);
    ``waveform``: ``input_values [B, L]``. Output: ``[B, T', hidden_size]`` with
    ``T' = conv_output_lengths(T, conv_strides)``, and the frame mask ``[B, T']``.
    """

    def __init__(self, config: LaCTAudioConfig):
        super().__init__()
        c_in = config.num_mel_bins if config.frontend == "log_mel" else 1
        layers = []
        for c_out, k, s in zip(config.conv_channels, config.conv_kernel_sizes, config.conv_strides):
            layers.append(CausalConvLayer(c_in, c_out, k, s))
            c_in = c_out
        self.layers = nn.ModuleList(layers)
        self.projection = nn.Linear(c_in, config.hidden_size)

    def forward(self, inputs: torch.Tensor, input_mask: torch.Tensor | None, states: list | None):
        """inputs: ``[B, T, num_mel_bins]`` or ``[B, L]``; input_mask ``[B, T]`` bool or None.

        Returns ``(hidden [B, T', hidden_size], frame_mask [B, T'] or None, new_states)``.
        """
        x = inputs.transpose(1, 2) if inputs.dim() == 3 else inputs[:, None, :]  # [B, C, L]
        mask = input_mask
        new_states = []
        for i, layer in enumerate(self.layers):
            if mask is not None:
                # Padding must look like the zeros a lone example is padded with.
                x = x * mask[:, None, :].to(x.dtype)
            x, st = layer(x, None if states is None else states[i])
            new_states.append(st)
            if mask is not None:
                lengths = (mask.sum(-1) + layer.stride - 1) // layer.stride
                mask = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
        if mask is not None:
            x = x * mask[:, None, :].to(x.dtype)
        return self.projection(x.transpose(1, 2)), mask, new_states
