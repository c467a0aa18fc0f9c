"""LaCTAudioConfig: every option of the lact-audio models, validated in one place."""

import json
import math

from transformers import PreTrainedConfig

from .lact_ops import ORDERS, UPDATE_RULES

TASKS = ("ctc", "lm")
MIXERS = ("lact", "attention", "sliding_window")
ATTENTION_PATTERNS = ("causal", "block_causal", "bidirectional")
LR_MODES = ("learned", "fixed")

# Fields that exist only for one task or one front end, with their defaults (None: derived in __init__).
# A config carries (and serialises) the fields of its own task and front end, and rejects the others.
TASK_FIELDS = {
    "ctc": {
        "frontend": "log_mel",
        "vocab_size": 32,
        "final_dropout": 0.0,
        "ctc_loss_reduction": "mean",
        "ctc_zero_infinity": True,
    },
    "lm": {"num_codebooks": 4, "codebook_size": 256, "num_conditions": 0, "condition_dim": 0},
}
FRONTEND_FIELDS = {
    "log_mel": {
        "num_mel_bins": 80,
        "feature_hop_length": 160,
        "conv_channels": None,  # [hidden_size] * 2
        "conv_kernel_sizes": [3, 3],
        "conv_strides": [2, 2],
    },
    "waveform": {
        "conv_channels": [256] * 5,
        "conv_kernel_sizes": [10, 3, 3, 3, 2],
        "conv_strides": [5, 2, 2, 2, 2],
    },
    # A pretrained Whisper encoder (its WhisperConfig as a dict) on Whisper's 30 s log-mel window.
    "whisper_encoder": {
        "num_mel_bins": 80,
        "feature_hop_length": 160,
        "whisper_config": None,
        "whisper_trainable_layers": 0,
    },
}
FRONTENDS = tuple(FRONTEND_FIELDS)
# The orders each task is built for: streaming ASR reads a chunk after updating on it; generation reads
# a chunk with the weights of the chunks before it.
TASK_ORDERS = {"ctc": ("update_apply", "block_causal"), "lm": ("apply_update", "causal")}


def _as_json_dict(config):
    """A sub-config (a ``PreTrainedConfig`` or a dict) as ``config.json`` stores it (string keys), or None."""
    if config is None:
        return None
    if hasattr(config, "to_json_string"):
        return json.loads(config.to_json_string(use_diff=False))
    return json.loads(json.dumps(config)) if isinstance(config, dict) else config


def _raise_invalid(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f"LaCTAudioConfig: {msg}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_names(table: dict) -> set:
    return {name for fields in table.values() for name in fields}


def _owner(name: str) -> str:
    """Which task or front ends a task- or front-end-specific field belongs to, for error messages."""
    for task, fields in TASK_FIELDS.items():
        if name in fields:
            return f"it belongs to task={task!r}"
    return f"it belongs to task='ctc' with frontend in {[f for f, fields in FRONTEND_FIELDS.items() if name in fields]}"


class LaCTAudioConfig(PreTrainedConfig):
    """Configuration of the LaCT audio models: the CTC recogniser (``task="ctc"``) and the audio-token LM
    (``task="lm"``), and their attention baselines.

    The defaults are the ``small`` preset of each task, so ``LaCTAudioForCTC(LaCTAudioConfig())`` and
    ``LaCTAudioForCausalLM(LaCTAudioConfig(task="lm"))`` build working models.

    Token mixing (per block, both tasks):
        mixer: ``"lact"`` (LaCT fast weights + sliding-window attention sharing one qkv projection),
            ``"attention"`` (full attention baseline) or ``"sliding_window"`` (window-only baseline).
        lact_order: ``"apply_update"`` (generation), ``"update_apply"`` (streaming ASR) or
            ``"bidirectional"`` (offline ASR); see ``modeling_lact_audio.kernels.lact_swiglu``. Default: the task's.
        attention_pattern: ``"causal"`` (generation), ``"block_causal"`` (streaming ASR: a frame sees
            its own LaCT chunk and ``window_size`` frames before it) or ``"bidirectional"``. Default: the task's.
        window_size: frames of left context (and right context when bidirectional) of the attention
            branch; ``None`` means unlimited (only valid for ``mixer="attention"``).
        num_attention_heads: heads of the attention branch; num_lact_heads: heads of the fast weights.
        lact_hidden_multiplier: fast-weight hidden size ``Dh = multiplier * hidden_size / num_lact_heads``.
        lact_chunk_size: frames per fast-weight update (with ``lact_chunk_ends`` in the forward call: the
            longest chunk); muon_steps (0 = off), use_momentum,
            weight_norm (must stay True with ``mixer="lact"``: unnormalised fast weights grow without bound,
            unless ``allow_unnormalised_fast_weights=True``, for ablations on short sequences),
            base_lr (initial per-token rate, ``softplus`` offset). Without momentum a chunk's
            update has rank <= chunk < Dh and Muon runs in its factor space (3x cheaper for the small
            preset's 160 ms streaming chunks); 600-step runs with and without momentum reach the same CER.
        lact_update_rule: ``"sgd"`` (default: the rate-weighted gradient, momentum, Muon) or ``"adam"`` (a
            per-element normalised step with a second moment in the fast-weight state; needs ``muon_steps=0``);
            see ``modeling_lact_audio.kernels.lact_swiglu``.
        lact_lr_mode: ``"learned"`` (default: per-token rates ``softplus(lr_proj(x) + inverse_softplus(base_lr))``)
            or ``"fixed"`` (every token's rate is ``base_lr``; the mixer has no ``lr_proj``).
        allow_unnormalised_fast_weights: accept ``weight_norm=False`` with ``mixer="lact"`` (default False).
    ``task="ctc"``:
        frontend: ``"log_mel"`` (``input_features [B, T, num_mel_bins]``, causal conv subsampling),
            ``"waveform"`` (``input_values [B, L]``, wav2vec2-style conv encoder) or ``"whisper_encoder"``
            (a pretrained Whisper encoder on Whisper's ``input_features [B, num_mel_bins, 3000]``; not causal,
            so such a model is offline).
        whisper_config, whisper_trainable_layers (``whisper_encoder`` only): the encoder's ``WhisperConfig``
            (as a dict or a ``WhisperConfig``; required) and how many of its top layers train (0 = frozen).
        conv_channels, conv_kernel_sizes, conv_strides: the front end's conv stack (defaults per front end).
        num_mel_bins, feature_hop_length (``log_mel`` only): mel bins, and samples between log-mel frames
            (the feature extractor's ``hop_length``); with the strides it gives ``inputs_to_logits_ratio``.
        vocab_size: CTC vocabulary (index ``pad_token_id`` is the CTC blank); final_dropout,
            ctc_loss_reduction, ctc_zero_infinity.
    ``task="lm"``:
        num_codebooks, codebook_size: audio tokens (one embedding table and one head per codebook).
        num_conditions: size of the speaker/style id table for the generation prefix (0 = none);
            condition_dim: size of an optional conditioning vector projected to the prefix (0 = none).
    Other: hidden_size, num_hidden_layers, intermediate_size (SwiGLU MLP), rms_norm_eps, rope_theta,
        hidden_dropout, attention_dropout, initializer_range; gradient checkpointing via
        ``model.gradient_checkpointing_enable()``.
    """

    model_type = "lact_audio"

    def __init__(
        self,
        task: str = "ctc",
        hidden_size: int = 256,
        num_hidden_layers: int = 10,
        num_attention_heads: int = 4,
        num_lact_heads: int = 2,
        lact_hidden_multiplier: float = 1.0,
        intermediate_size: int = 768,
        mixer: str = "lact",
        lact_chunk_size: int = 64,
        lact_order: str | None = None,
        attention_pattern: str | None = None,
        window_size: int | None = 32,
        muon_steps: int = 5,
        use_momentum: bool = False,
        weight_norm: bool = True,
        base_lr: float = 0.01,
        lact_update_rule: str = "sgd",
        lact_lr_mode: str = "learned",
        allow_unnormalised_fast_weights: bool = False,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        frontend: str | None = None,
        num_mel_bins: int | None = None,
        feature_hop_length: int | None = None,
        conv_channels: list | None = None,
        conv_kernel_sizes: list | None = None,
        conv_strides: list | None = None,
        whisper_config: dict | None = None,
        whisper_trainable_layers: int | None = None,
        vocab_size: int | None = None,
        final_dropout: float | None = None,
        ctc_loss_reduction: str | None = None,
        ctc_zero_infinity: bool | None = None,
        num_codebooks: int | None = None,
        codebook_size: int | None = None,
        num_conditions: int | None = None,
        condition_dim: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        if task not in TASKS:
            raise ValueError(f"LaCTAudioConfig: task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_lact_heads = num_lact_heads
        self.lact_hidden_multiplier = lact_hidden_multiplier
        self.intermediate_size = intermediate_size
        self.mixer = mixer
        self.lact_chunk_size = lact_chunk_size
        default_order, default_pattern = TASK_ORDERS[task]
        self.lact_order = default_order if lact_order is None else lact_order
        self.attention_pattern = default_pattern if attention_pattern is None else attention_pattern
        self.window_size = window_size
        self.muon_steps = muon_steps
        self.use_momentum = use_momentum
        self.weight_norm = weight_norm
        self.base_lr = base_lr
        self.lact_update_rule = lact_update_rule
        self.lact_lr_mode = lact_lr_mode
        self.allow_unnormalised_fast_weights = allow_unnormalised_fast_weights
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        given = dict(
            frontend=frontend,
            num_mel_bins=num_mel_bins,
            feature_hop_length=feature_hop_length,
            conv_channels=conv_channels,
            conv_kernel_sizes=conv_kernel_sizes,
            conv_strides=conv_strides,
            whisper_config=_as_json_dict(whisper_config),
            whisper_trainable_layers=whisper_trainable_layers,
            vocab_size=vocab_size,
            final_dropout=final_dropout,
            ctc_loss_reduction=ctc_loss_reduction,
            ctc_zero_infinity=ctc_zero_infinity,
            num_codebooks=num_codebooks,
            codebook_size=codebook_size,
            num_conditions=num_conditions,
            condition_dim=condition_dim,
        )
        own, scope = dict(TASK_FIELDS[task]), f"task={task!r}"
        if task == "ctc":
            chosen = own["frontend"] if frontend is None else frontend
            if chosen not in FRONTEND_FIELDS:
                hint = " (the audio-token LM is task='lm')" if chosen == "tokens" else ""
                raise ValueError(f"LaCTAudioConfig: frontend must be one of {FRONTENDS}, got {chosen!r}{hint}")
            own.update(FRONTEND_FIELDS[chosen])
            if own.get("conv_channels", 0) is None:
                own["conv_channels"] = [hidden_size] * 2
            scope += f" with frontend={chosen!r}"
        for name, value in given.items():
            if name in own:
                value = own[name] if value is None else value
                setattr(self, name, list(value) if isinstance(value, tuple) else value)
            elif value is not None:
                raise ValueError(f"LaCTAudioConfig: {name} is not a field of {scope} configs ({_owner(name)})")
        if pad_token_id is None and task == "ctc":
            pad_token_id = 0  # the CTC blank
        self._validate_sizes(_raise_invalid)  # before transformers compares token ids with a malformed size
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.validate_lact()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """``PreTrainedConfig.from_dict``, reading also the ``config.json`` files written before the ``task``
        field: those carry every field of both tasks and front ends, and the ones that do not apply are dropped."""
        if "task" not in config_dict:
            task = "lm" if config_dict.get("frontend") == "tokens" else "ctc"
            frontend = config_dict.get("frontend", TASK_FIELDS["ctc"]["frontend"]) if task == "ctc" else None
            keep = set(TASK_FIELDS[task]) | set(FRONTEND_FIELDS.get(frontend, {}))
            other = (_field_names(TASK_FIELDS) | _field_names(FRONTEND_FIELDS)) - keep
            config_dict = {k: v for k, v in config_dict.items() if k not in other} | {"task": task}
        return super().from_dict(config_dict, **kwargs)

    # Derived sizes, computed in one place.
    @property
    def attention_head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def lact_head_dim(self) -> int:
        return self.hidden_size // self.num_lact_heads

    @property
    def lact_hidden_dim(self) -> int:
        return int(round(self.lact_hidden_multiplier * self.lact_head_dim))

    @property
    def total_stride(self) -> int:
        """Input positions (samples, mel frames, or tokens for the LM) per model frame."""
        if self.task == "ctc" and self.frontend == "whisper_encoder":
            return 2  # Whisper's second conv
        total = 1
        for s in self.conv_strides if self.task == "ctc" else ():
            total *= s
        return total

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Audio samples per output frame (the ASR pipeline aligns chunked inference with it)."""
        return self.total_stride * (1 if self.frontend == "waveform" else self.feature_hop_length)

    def _validate_sizes(self, need) -> None:
        """The integer sizes and the positive reals, checked before anything computes with them."""
        positive = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_lact_heads", "intermediate_size"]
        positive += ["lact_chunk_size"]
        positive += ["vocab_size"] if self.task == "ctc" else ["num_codebooks", "codebook_size"]
        if self.task == "ctc" and self.frontend in ("log_mel", "whisper_encoder"):
            positive += ["num_mel_bins", "feature_hop_length"]
        for name in positive:
            value = getattr(self, name)
            need(_is_int(value) and value >= 1, f"{name} must be a positive int, got {value!r}")
        for name, why in (
            ("rope_theta", "the RoPE base; frequencies are rope_theta ** (-2i / head_dim)"),
            ("rms_norm_eps", "added to the mean square before its inverse square root"),
        ):
            value = getattr(self, name)
            need(_is_real(value) and value > 0, f"{name} must be a real number > 0 ({why}), got {value!r}")
        need(
            _is_real(self.initializer_range) and self.initializer_range >= 0,
            f"initializer_range must be a real number >= 0, got {self.initializer_range!r}",
        )

    def validate_lact(self) -> None:
        """Raise ``ValueError`` naming the field when an option or a combination of options is invalid."""
        need = _raise_invalid
        self._validate_sizes(need)
        if self.task == "ctc" and self.frontend == "whisper_encoder":
            whisper = self.whisper_config
            need(
                isinstance(whisper, dict) and {"d_model", "encoder_layers", "max_source_positions"} <= set(whisper),
                "frontend='whisper_encoder' needs whisper_config: the encoder's WhisperConfig (or its to_dict()), "
                f"got {type(whisper).__name__}",
            )
            need(
                whisper.get("num_mel_bins", 80) == self.num_mel_bins,
                f"num_mel_bins ({self.num_mel_bins}) must equal whisper_config's ({whisper.get('num_mel_bins')})",
            )
            layers = self.whisper_trainable_layers
            need(
                isinstance(layers, int) and 0 <= layers <= whisper["encoder_layers"],
                f"whisper_trainable_layers must be an int in [0, {whisper['encoder_layers']}], got {layers!r}",
            )
        need(self.mixer in MIXERS, f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        need(self.lact_order in ORDERS, f"lact_order must be one of {ORDERS}, got {self.lact_order!r}")
        need(
            self.attention_pattern in ATTENTION_PATTERNS,
            f"attention_pattern must be one of {ATTENTION_PATTERNS}, got {self.attention_pattern!r}",
        )
        need(
            self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})",
        )
        need(
            self.hidden_size % self.num_lact_heads == 0,
            f"hidden_size ({self.hidden_size}) must be divisible by num_lact_heads ({self.num_lact_heads})",
        )
        need(self.attention_head_dim % 2 == 0, f"attention head dim ({self.attention_head_dim}) must be even for RoPE")
        need(
            _is_real(self.lact_hidden_multiplier) and self.lact_hidden_multiplier > 0 and self.lact_hidden_dim >= 1,
            f"lact_hidden_multiplier must be > 0, got {self.lact_hidden_multiplier!r}",
        )
        need(
            _is_int(self.muon_steps) and self.muon_steps >= 0,
            f"muon_steps must be an int >= 0, got {self.muon_steps!r}",
        )
        need(
            isinstance(self.allow_unnormalised_fast_weights, bool),
            f"allow_unnormalised_fast_weights must be a bool, got {self.allow_unnormalised_fast_weights!r}",
        )
        need(
            self.weight_norm is True
            or self.mixer != "lact"
            or (self.weight_norm is False and self.allow_unnormalised_fast_weights),
            "weight_norm=False is not supported for mixer='lact': the fast weights' loss -<f_W(k), v> has no "
            "minimum, so without renormalising their rows every update grows them (NaN within a few thousand "
            "tokens without Muon, |output| ~1e10 after 200k tokens with it); keep weight_norm=True, or set "
            "allow_unnormalised_fast_weights=True for ablations on short sequences (or call the op "
            f"lact_swiglu(weight_norm=False) directly) (got weight_norm={self.weight_norm!r})",
        )
        need(
            self.lact_update_rule in UPDATE_RULES,
            f"lact_update_rule must be one of {UPDATE_RULES}, got {self.lact_update_rule!r}",
        )
        need(
            self.lact_update_rule != "adam" or self.muon_steps == 0,
            f"lact_update_rule='adam' needs muon_steps=0 (got muon_steps={self.muon_steps!r}): Adam scales every "
            "element of the fast-weight update by its own running RMS, and Newton-Schulz would replace that "
            "matrix by its nearest orthogonal one, discarding the per-element scaling; use lact_update_rule='sgd' "
            "for Muon",
        )
        need(self.lact_lr_mode in LR_MODES, f"lact_lr_mode must be one of {LR_MODES}, got {self.lact_lr_mode!r}")
        need(
            _is_real(self.base_lr) and self.base_lr > 0,
            f"base_lr must be > 0 (it is the softplus offset of the rates), got {self.base_lr!r}",
        )
        if self.window_size is None:
            need(
                self.mixer == "attention",
                f"window_size=None (unlimited) is only valid for mixer='attention', got mixer={self.mixer!r}",
            )
        else:
            need(
                isinstance(self.window_size, int) and self.window_size >= 0,
                f"window_size must be an int >= 0 or None, got {self.window_size!r}",
            )
        if self.task == "lm":
            need(
                self.attention_pattern == "causal",
                f"task='lm' generates: attention_pattern must be 'causal', got {self.attention_pattern!r}",
            )
        if self.attention_pattern == "causal" and self.mixer == "lact":
            need(
                self.lact_order == "apply_update",
                "attention_pattern='causal' (generation) needs lact_order='apply_update': any other order lets a "
                f"frame read fast weights updated with future frames of its chunk (got {self.lact_order!r})",
            )
        if self.attention_pattern == "block_causal" and self.mixer == "lact":
            need(
                self.lact_order != "bidirectional",
                "attention_pattern='block_causal' (streaming) needs lact_order 'update_apply' or 'apply_update', "
                "not 'bidirectional' (it reads weights updated with every later chunk)",
            )
        for name in ("hidden_dropout", "attention_dropout") + (("final_dropout",) if self.task == "ctc" else ()):
            value = getattr(self, name)
            need(_is_real(value) and 0.0 <= value < 1.0, f"{name} must lie in [0, 1), got {value!r}")
        if self.task == "ctc":
            self._validate_ctc(need)
        else:
            need(
                self.num_conditions >= 0 and self.condition_dim >= 0,
                "num_conditions and condition_dim must be >= 0 (0 disables the conditioning prefix)",
            )

    def _validate_ctc(self, need) -> None:
        if self.frontend != "whisper_encoder":
            self._validate_conv(need)
        need(
            self.ctc_loss_reduction in ("mean", "sum"),
            f"ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}",
        )
        need(
            isinstance(self.pad_token_id, int) and 0 <= self.pad_token_id < self.vocab_size,
            f"pad_token_id ({self.pad_token_id}) is the CTC blank and must be < vocab_size ({self.vocab_size})",
        )

    def _validate_conv(self, need) -> None:
        need(
            len(self.conv_channels) == len(self.conv_kernel_sizes) == len(self.conv_strides),
            "conv_channels, conv_kernel_sizes and conv_strides must have the same length, got "
            f"{len(self.conv_channels)}, {len(self.conv_kernel_sizes)}, {len(self.conv_strides)}",
        )
        for k, s in zip(self.conv_kernel_sizes, self.conv_strides):
            need(
                isinstance(k, int) and isinstance(s, int) and k >= s >= 1,
                f"each conv layer needs kernel >= stride >= 1 (streaming keeps kernel - stride inputs), "
                f"got k={k}, s={s}",
            )
