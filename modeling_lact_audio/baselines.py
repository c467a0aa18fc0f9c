"""Baselines of the same size as a LaCT model, for fair comparisons.

- ``BaselineASRTransformer`` / ``BaselineAudioTransformer``: the lact-audio CTC model / audio-token LM
  with the LaCT mixer replaced by full attention (``mixer="attention"``) or sliding-window attention
  only (``mixer="sliding_window"``); the MLP width is re-fitted so the parameter count matches.
- ``build_wav2vec2_for_ctc`` / ``build_whisper``: transformers' own ``Wav2Vec2ForCTC`` and
  ``WhisperForConditionalGeneration``, randomly initialised, sized to a LaCT model's parameter count.
"""

import copy

import torch

from .configuration_lact_audio import LaCTAudioConfig
from .modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters


def _params_on_meta(build) -> int:
    with torch.device("meta"):
        return count_parameters(build())


def _fit_int(count_for, target: int, lo: int, hi: int, multiple: int = 8) -> int:
    """Smallest-error ``x`` (a multiple of ``multiple``) in [lo, hi] for an increasing ``count_for(x)``."""
    lo, hi = max(multiple, lo // multiple * multiple), max(multiple, hi // multiple * multiple)
    while hi - lo > multiple:
        mid = (lo + hi) // 2 // multiple * multiple
        if count_for(mid) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda x: abs(count_for(x) - target))


def matched_baseline_config(config: LaCTAudioConfig, mixer: str = "attention", model_cls=LaCTAudioForCTC):
    """A copy of ``config`` with ``mixer`` set (``"attention"``: unlimited window) and ``intermediate_size``
    re-fitted so that ``model_cls(copy)`` has the parameter count of ``model_cls(config)``."""
    if mixer not in ("attention", "sliding_window"):
        raise ValueError(f"mixer must be 'attention' or 'sliding_window' for a baseline, got {mixer!r}")
    target = _params_on_meta(lambda: model_cls(config))
    base = copy.deepcopy(config)
    base.mixer = mixer
    if mixer == "attention":
        base.window_size = None
    elif base.window_size is None:
        base.window_size = 64

    def count_for(inter: int) -> int:
        base.intermediate_size = inter
        return _params_on_meta(lambda: model_cls(base))

    base.intermediate_size = _fit_int(count_for, target, 8, 8 * config.intermediate_size)
    base.validate_lact()
    return base


def _require_attention_mixer(cls_name: str, config: LaCTAudioConfig) -> None:
    if config.mixer == "lact":
        raise ValueError(
            f"{cls_name} needs mixer='attention' or 'sliding_window'; build it with "
            f"{cls_name}.from_lact_config(lact_config)"
        )


class BaselineASRTransformer(LaCTAudioForCTC):
    """``LaCTAudioForCTC`` with attention in place of LaCT. Build one with ``from_lact_config``."""

    def __init__(self, config: LaCTAudioConfig):
        _require_attention_mixer(type(self).__name__, config)
        super().__init__(config)

    @classmethod
    def from_lact_config(cls, config: LaCTAudioConfig, mixer: str = "attention") -> "BaselineASRTransformer":
        """A randomly initialised baseline with the parameter count of ``LaCTAudioForCTC(config)``."""
        return cls(matched_baseline_config(config, mixer, LaCTAudioForCTC))


class BaselineAudioTransformer(LaCTAudioForCausalLM):
    """``LaCTAudioForCausalLM`` with attention in place of LaCT (a KV-cache transformer LM)."""

    def __init__(self, config: LaCTAudioConfig):
        _require_attention_mixer(type(self).__name__, config)
        super().__init__(config)

    @classmethod
    def from_lact_config(cls, config: LaCTAudioConfig, mixer: str = "attention") -> "BaselineAudioTransformer":
        """A randomly initialised baseline with the parameter count of ``LaCTAudioForCausalLM(config)``."""
        return cls(matched_baseline_config(config, mixer, LaCTAudioForCausalLM))


def build_wav2vec2_for_ctc(config: LaCTAudioConfig, vocab_size: int | None = None):
    """transformers' ``Wav2Vec2ForCTC`` (raw waveform in) with the parameter count of ``LaCTAudioForCTC(config)``.

    Same hidden size, depth and heads; a conv feature encoder of ``hidden_size`` channels with
    wav2vec2's 320x stride; layer-norm variant (``do_stable_layer_norm``); the feed-forward width is
    fitted to the budget. ``vocab_size`` defaults to the LaCT config's (same blank/pad id).
    """
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    target = _params_on_meta(lambda: LaCTAudioForCTC(config))
    d = config.hidden_size
    w2v = Wav2Vec2Config(
        vocab_size=vocab_size or config.vocab_size,
        hidden_size=d,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        conv_dim=(d,) * 7,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        pad_token_id=config.pad_token_id,
        ctc_loss_reduction=config.ctc_loss_reduction,
        ctc_zero_infinity=True,
        mask_time_prob=0.0,
        layerdrop=0.0,
        hidden_dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=config.final_dropout,
    )

    def count_for(inter: int) -> int:
        w2v.intermediate_size = inter
        return _params_on_meta(lambda: Wav2Vec2ForCTC(w2v))

    w2v.intermediate_size = _fit_int(count_for, target, 8, 8 * config.intermediate_size)
    return Wav2Vec2ForCTC(w2v)


def build_whisper(config: LaCTAudioConfig, vocab_size: int | None = None, max_source_positions: int = 750):
    """transformers' ``WhisperForConditionalGeneration`` with the parameter count of ``LaCTAudioForCTC(config)``.

    Encoder and decoder each get half the LaCT model's depth (at least 1), the same width and heads,
    and a fitted feed-forward width. The character vocabulary gets two extra ids: decoder start
    (``vocab_size``) and end of text (``vocab_size + 1``). ``max_source_positions`` encoder frames
    (x2 mel frames: 750 -> 15 s of audio at a 10 ms hop) is Whisper's fixed input length.
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    target = _params_on_meta(lambda: LaCTAudioForCTC(config))
    V = (vocab_size or config.vocab_size) + 2
    layers = max(1, config.num_hidden_layers // 2)
    wc = WhisperConfig(
        vocab_size=V,
        num_mel_bins=config.num_mel_bins,
        d_model=config.hidden_size,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=config.num_attention_heads,
        decoder_attention_heads=config.num_attention_heads,
        encoder_ffn_dim=config.intermediate_size,
        decoder_ffn_dim=config.intermediate_size,
        max_source_positions=max_source_positions,
        max_target_positions=448,
        pad_token_id=config.pad_token_id,
        bos_token_id=V - 2,
        eos_token_id=V - 1,
        decoder_start_token_id=V - 2,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        dropout=config.hidden_dropout,
        attention_dropout=config.attention_dropout,
    )

    def count_for(ffn: int) -> int:
        wc.encoder_ffn_dim = wc.decoder_ffn_dim = ffn
        return _params_on_meta(lambda: WhisperForConditionalGeneration(wc))

    ffn = _fit_int(count_for, target, 8, 8 * config.intermediate_size)
    wc.encoder_ffn_dim = wc.decoder_ffn_dim = ffn
    return WhisperForConditionalGeneration(wc)
