"""The model factory: every ``--model`` built from one LaCT preset, so comparisons differ only in the model."""

import json

from ..asr import load_whisper
from ..baselines import BaselineASRTransformer, BaselineAudioTransformer, build_wav2vec2_for_ctc, build_whisper
from ..memory import STRATEGY_NAMES, model_state_bytes, parameter_count
from ..modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC
from ..presets import PRESETS, preset_config, training_memory_bytes
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
        return load_whisper(model_args.pretrained_path), None
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


def check_memory(
    model_args, data_args, lact_config, num_params: int, min_length: int, free_bytes: float, bytes_per_value: int,
    gradient_checkpointing: bool,
    strategy: str = "ddp",
    processes: int = 1,
    device: str = "cuda",
) -> None:
    """Raise ``ValueError`` now, not after an hour, when a full micro-batch would not fit in ``free_bytes``.

    ``min_length``: the shortest training utterance in frames (a Whisper pads every row to its fixed
    length, so its batch holds as many rows as the shortest utterances allow). ``strategy`` (``"ddp"``,
    ``"zero2"`` or ``"fsdp"``, as in ``modeling_lact_audio.memory``), ``processes`` and ``device``: how the
    model states are spread; sharded, each process holds the plan's per-process share of them.
    """
    frames = data_args.max_frames_per_batch // max(1, lact_config.total_stride)
    if model_args.model == "whisper":
        rows = min(data_args.max_batch_size, data_args.max_frames_per_batch // max(1, min_length))
        # Every row is padded to Whisper's fixed length; its encoder has half the LaCT model's layers.
        frames = rows * model_args.whisper_max_source_positions // 2
    memory = training_memory_bytes(lact_config, num_params, frames, gradient_checkpointing, bytes_per_value)
    states = memory["states"]
    if strategy != "ddp":
        share = model_state_bytes(lact_config, "bf16" if bytes_per_value == 2 else "fp32", strategy, processes, device)
        # The plan counts the LaCT model's parameters; a baseline sized from the same config is scaled to its own.
        states = (share.persistent + share.working_copy) * num_params / parameter_count(lact_config)
    need = states + memory["activations"]
    if need > 0.8 * free_bytes:
        fitting = int(data_args.max_frames_per_batch * 0.8 * free_bytes / need)
        raise ValueError(
            f"a batch of max_frames_per_batch={data_args.max_frames_per_batch} needs about {need / 2**30:.1f} GiB, "
            f"more than the {free_bytes / 2**30:.1f} GiB free per process ({STRATEGY_NAMES[strategy]} over "
            f"{processes} process(es)): lower max_frames_per_batch "
            f"(to about {fitting}) or set --gradient_checkpointing"
        )
