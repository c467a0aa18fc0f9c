"""A pretrained Whisper encoder as the front end of a LaCT recogniser (``frontend="whisper_encoder"``).

Whisper's encoder is not causal and was trained on 30 s windows only: a model with this front end is
offline (bidirectional LaCT and attention), reads Whisper's log-mel features padded to the window
(``WhisperFeatureExtractor``, ``input_features [B, num_mel_bins, 3000]``) and keeps the encoder frames
of real audio (``attention_mask [B, 3000]`` at the log-mel rate, as the feature extractor returns it
with ``return_attention_mask=True``). Encoder states computed earlier (a feature cache) can be given
instead, as ``frontend_states [B, T', d_model]``. Cropping to the longest real length reads that length
on the host (one sync per call): the output's shape depends on it, and it saves the blocks 1500 frames of
padding per 30 s window.
"""

import torch
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

# WhisperConfig fields a recogniser's config does not need to keep (decoder, generation, bookkeeping).
_DROPPED_WHISPER_FIELDS = (
    "transformers_version",
    "architectures",
    "_name_or_path",
    "begin_suppress_tokens",
    "suppress_tokens",
    "forced_decoder_ids",
    "alignment_heads",
    "lang_ids",
    "task_to_id",
    "is_multilingual",
)


def whisper_encoder_config(config: WhisperConfig) -> dict:
    """The dict a ``LaCTAudioConfig(frontend="whisper_encoder")`` stores for ``config`` (``config.json``-ready)."""
    fields = config.to_dict()
    for key in _DROPPED_WHISPER_FIELDS:
        fields.pop(key, None)
    return fields


def whisper_output_lengths(mel_frames):
    """Encoder frames for ``mel_frames`` log-mel frames (int or LongTensor ``[B]``): Whisper's second conv
    (kernel 3, padding 1) has stride 2, so ``L -> (L - 1) // 2 + 1``."""
    return (mel_frames - 1) // 2 + 1


class LaCTWhisperFrontend(nn.Module):
    """Whisper's encoder (frozen but for its top ``config.whisper_trainable_layers``) and a projection to
    ``config.hidden_size``.

    ``forward(input_features [B, num_mel_bins, window], mel_mask [B, window] bool or None)`` runs the
    encoder on its full window and crops to the frames of real audio (the longest in the batch);
    ``forward(frontend_states=[B, T', d_model], frame_mask=[B, T'] or None)`` only projects states the
    encoder computed earlier.

    Returns ``(hidden [B, T', hidden_size], frame_mask [B, T'] bool or None)``.
    """

    def __init__(self, config):
        super().__init__()
        self.whisper_config = WhisperConfig(**config.whisper_config)
        self.encoder = WhisperEncoder(self.whisper_config)
        self.projection = nn.Linear(self.whisper_config.d_model, config.hidden_size)
        self.set_trainable_layers(config.whisper_trainable_layers)

    def set_trainable_layers(self, count: int) -> None:
        """Freeze the encoder except its top ``count`` layers (and its final norm when ``count > 0``)."""
        self.encoder.requires_grad_(False)
        if count > 0:
            for layer in self.encoder.layers[-count:]:
                layer.requires_grad_(True)
            self.encoder.layer_norm.requires_grad_(True)
        self.trainable_layers = count

    @property
    def window_frames(self) -> int:
        """Log-mel frames of the encoder's window (3000 for the pretrained 30 s models)."""
        return 2 * self.whisper_config.max_source_positions

    def forward(self, input_features=None, mel_mask=None, frontend_states=None, frame_mask=None):
        if frontend_states is not None:
            return self.projection(frontend_states), frame_mask
        frozen = self.trainable_layers == 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            states = self.encoder(input_features.to(self.projection.weight.dtype)).last_hidden_state
        frame_mask = None
        if mel_mask is not None:
            lengths = whisper_output_lengths(mel_mask.long().sum(-1))  # [B]
            T = int(lengths.max())
            states = states[:, :T]
            frame_mask = torch.arange(T, device=states.device)[None, :] < lengths[:, None]
        return self.projection(states), frame_mask
