"""The model factory: every ``--model`` built from one LaCT preset, so comparisons differ only in the model."""

import json

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters
from modeling_lact_audio.baselines import (
    BaselineASRTransformer,
    BaselineAudioTransformer,
    build_wav2vec2_for_ctc,
    build_whisper,
)
from modeling_lact_audio.presets import PRESETS, preset_config

from .arguments import MODELS, TASKS

LM_MODELS = ("lact", "baseline_transformer", "baseline_sliding_window")


def check_model_arguments(model_args) -> None:
    """Raise ``ValueError`` saying what to change when ``--model`` / ``--task`` / ``--preset`` do not fit."""
    if model_args.task not in TASKS:
        raise ValueError(f"--task {model_args.task!r} is unknown; choose one of {TASKS}")
    if model_args.model not in MODELS:
        raise ValueError(f"--model {model_args.model!r} is unknown; choose one of {MODELS}")
    if model_args.task == "lm" and model_args.model not in LM_MODELS:
        raise ValueError(
            f"--task lm trains audio-token LMs; --model must be one of {LM_MODELS}, not {model_args.model!r}"
        )
    if model_args.model == "whisper_pretrained":
        if not model_args.pretrained_path:
            raise ValueError(
                "--model whisper_pretrained needs --pretrained_path (a converted transformers Whisper folder)"
            )
    elif model_args.preset not in PRESETS:
        raise ValueError(f"--preset {model_args.preset!r} is unknown; choose one of {PRESETS}")


def lact_config(model_args, **fields):
    """The LaCT config every model of a run is sized from (preset + ``config_overrides`` + ``fields``)."""
    overrides = model_args.config_overrides
    overrides = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    return preset_config(model_args.preset, model_args.task, **{**overrides, **fields})


def build_model(model_args, vocab_size: int | None = None, audio_tokenizer=None):
    """A freshly initialised model (or the converted pretrained Whisper) and the LaCT config it is matched to.

    ``vocab_size``: the CTC tokenizer's (``--task ctc``); ``audio_tokenizer``: the fitted mel_rvq
    tokenizer (``--task lm``), whose codebooks set ``num_codebooks`` / ``codebook_size``.
    """
    name = model_args.model
    if name == "whisper_pretrained":
        from transformers import WhisperForConditionalGeneration

        return WhisperForConditionalGeneration.from_pretrained(model_args.pretrained_path), None
    if model_args.task == "lm":
        config = lact_config(
            model_args,
            num_codebooks=audio_tokenizer.config.num_codebooks,
            codebook_size=audio_tokenizer.config.codebook_size,
        )
        if name == "lact":
            return LaCTAudioForCausalLM(config), config
        mixer = "attention" if name == "baseline_transformer" else "sliding_window"
        return BaselineAudioTransformer.from_lact_config(config, mixer), config
    config = lact_config(model_args, vocab_size=vocab_size, pad_token_id=0)
    if name == "lact":
        return LaCTAudioForCTC(config), config
    if name in ("baseline_transformer", "baseline_sliding_window"):
        mixer = "attention" if name == "baseline_transformer" else "sliding_window"
        return BaselineASRTransformer.from_lact_config(config, mixer), config
    if name == "wav2vec2":
        return build_wav2vec2_for_ctc(config, vocab_size), config
    return build_whisper(config, vocab_size, model_args.whisper_max_source_positions), config


def activation_bytes(config, frames: int, gradient_checkpointing: bool) -> float:
    """Rough training activation memory (bytes) of ``frames`` model frames of a model sized from ``config``.

    Per frame and layer: the block input (4 bytes x hidden) plus, for the layer being computed (every
    layer without gradient checkpointing), about 34 x hidden + 6 x intermediate values of 4 bytes.
    """
    d, L = config.hidden_size, config.num_hidden_layers
    block = 4 * (34 * d + 6 * config.intermediate_size)
    if config.mixer == "lact":
        block += 4 * 20 * config.lact_hidden_dim * config.num_lact_heads
    kept = 4 * d * L
    return frames * (kept + block * (1 if gradient_checkpointing else L))


def parameter_count(model) -> int:
    return count_parameters(model)
