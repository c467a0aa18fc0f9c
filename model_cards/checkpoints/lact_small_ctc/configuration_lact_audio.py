"""LaCTAudioConfig: every option of the lact-audio models, validated in one place."""

from transformers import PretrainedConfig

MIXERS = ("lact", "attention", "sliding_window")
ORDERS = ("apply_update", "update_apply", "bidirectional")
ATTENTION_PATTERNS = ("causal", "block_causal", "bidirectional")
FRONTENDS = ("log_mel", "waveform", "tokens")


class LaCTAudioConfig(PretrainedConfig):
    """Configuration of the LaCT audio models (ASR encoder with CTC, audio-token LM, baselines).

    Token mixing (per block):
        mixer: ``"lact"`` (LaCT fast weights + sliding-window attention sharing one qkv projection),
            ``"attention"`` (full attention baseline) or ``"sliding_window"`` (window-only baseline).
        lact_order: ``"apply_update"`` (generation), ``"update_apply"`` (streaming ASR) or
            ``"bidirectional"`` (offline ASR); see ``modeling_lact_audio.kernels.lact_swiglu``.
        attention_pattern: ``"causal"`` (generation), ``"block_causal"`` (streaming ASR: a frame sees
            its own LaCT chunk and ``window_size`` frames before it) or ``"bidirectional"``.
        window_size: frames of left context (and right context when bidirectional) of the attention
            branch; ``None`` means unlimited (only valid for ``mixer="attention"``).
        num_attention_heads: heads of the attention branch; num_lact_heads: heads of the fast weights.
        lact_hidden_multiplier: fast-weight hidden size ``Dh = multiplier * hidden_size / num_lact_heads``.
        lact_chunk_size: frames per fast-weight update; muon_steps (0 = off), use_momentum,
            weight_norm, base_lr (initial per-token rate, ``softplus`` offset).
    Front end:
        frontend: ``"log_mel"`` (``input_features [B, T, num_mel_bins]``, causal conv subsampling),
            ``"waveform"`` (``input_values [B, L]``, wav2vec2-style conv encoder) or ``"tokens"``
            (audio-token LM: ``input_ids``).
        conv_channels, conv_kernel_sizes, conv_strides: the conv stack of either audio front end.
        feature_hop_length: samples between log-mel frames (the feature extractor's ``hop_length``);
            with the strides it gives ``inputs_to_logits_ratio`` (samples per output frame).
    Heads:
        vocab_size: CTC vocabulary (index ``pad_token_id`` is the CTC blank).
        num_codebooks, codebook_size: audio-token LM (one embedding table and one head per codebook).
        num_conditions: size of the speaker/style id table for the generation prefix (0 = none);
            condition_dim: size of an optional conditioning vector projected to the prefix (0 = none).
    Other: hidden_size, num_hidden_layers, intermediate_size (SwiGLU MLP), rms_norm_eps, rope_theta,
        hidden_dropout, attention_dropout, final_dropout, initializer_range, ctc_loss_reduction,
        ctc_zero_infinity, gradient checkpointing via ``model.gradient_checkpointing_enable()``.
    """

    model_type = "lact_audio"

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 4,
        num_lact_heads: int = 2,
        lact_hidden_multiplier: float = 1.0,
        intermediate_size: int = 768,
        mixer: str = "lact",
        lact_chunk_size: int = 512,
        lact_order: str = "update_apply",
        attention_pattern: str = "block_causal",
        window_size: int | None = 64,
        muon_steps: int = 5,
        use_momentum: bool = True,
        weight_norm: bool = True,
        base_lr: float = 0.01,
        frontend: str = "log_mel",
        num_mel_bins: int = 80,
        feature_hop_length: int = 160,
        conv_channels: list | None = None,
        conv_kernel_sizes: list | None = None,
        conv_strides: list | None = None,
        vocab_size: int = 32,
        num_codebooks: int = 4,
        codebook_size: int = 256,
        num_conditions: int = 0,
        condition_dim: int = 0,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        final_dropout: float = 0.0,
        initializer_range: float = 0.02,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        pad_token_id: int = 0,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_lact_heads = num_lact_heads
        self.lact_hidden_multiplier = lact_hidden_multiplier
        self.intermediate_size = intermediate_size
        self.mixer = mixer
        self.lact_chunk_size = lact_chunk_size
        self.lact_order = lact_order
        self.attention_pattern = attention_pattern
        self.window_size = window_size
        self.muon_steps = muon_steps
        self.use_momentum = use_momentum
        self.weight_norm = weight_norm
        self.base_lr = base_lr
        self.frontend = frontend
        self.num_mel_bins = num_mel_bins
        self.feature_hop_length = feature_hop_length
        if frontend == "waveform":
            default_channels, default_kernels, default_strides = [256] * 5, [10, 3, 3, 3, 2], [5, 2, 2, 2, 2]
        else:
            default_channels, default_kernels, default_strides = [hidden_size] * 2, [3, 3], [2, 2]
        self.conv_channels = list(conv_channels) if conv_channels is not None else default_channels
        self.conv_kernel_sizes = list(conv_kernel_sizes) if conv_kernel_sizes is not None else default_kernels
        self.conv_strides = list(conv_strides) if conv_strides is not None else default_strides
        self.vocab_size = vocab_size
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.num_conditions = num_conditions
        self.condition_dim = condition_dim
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.final_dropout = final_dropout
        self.initializer_range = initializer_range
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.validate_lact()

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
        """Input samples (waveform) or mel frames (log_mel) per model frame."""
        total = 1
        for s in self.conv_strides:
            total *= s
        return total if self.frontend != "tokens" else 1

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Audio samples per output frame (the ASR pipeline aligns chunked inference with it)."""
        return self.total_stride * (1 if self.frontend == "waveform" else self.feature_hop_length)

    def validate_lact(self) -> None:
        """Raise ``ValueError`` naming the field when an option or a combination of options is invalid."""

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"LaCTAudioConfig: {msg}")

        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_lact_heads",
            "intermediate_size",
            "lact_chunk_size",
            "num_mel_bins",
            "vocab_size",
            "num_codebooks",
            "codebook_size",
        ):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name} must be a positive int, got {value!r}")
        need(self.mixer in MIXERS, f"mixer must be one of {MIXERS}, got {self.mixer!r}")
        need(self.lact_order in ORDERS, f"lact_order must be one of {ORDERS}, got {self.lact_order!r}")
        need(
            self.attention_pattern in ATTENTION_PATTERNS,
            f"attention_pattern must be one of {ATTENTION_PATTERNS}, got {self.attention_pattern!r}",
        )
        need(self.frontend in FRONTENDS, f"frontend must be one of {FRONTENDS}, got {self.frontend!r}")
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
            self.lact_hidden_multiplier > 0 and self.lact_hidden_dim >= 1,
            f"lact_hidden_multiplier must be > 0, got {self.lact_hidden_multiplier!r}",
        )
        need(
            isinstance(self.muon_steps, int) and self.muon_steps >= 0,
            f"muon_steps must be an int >= 0, got {self.muon_steps!r}",
        )
        need(self.base_lr > 0, f"base_lr must be > 0 (it is the softplus offset of the rates), got {self.base_lr!r}")
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
        need(
            self.ctc_loss_reduction in ("mean", "sum"),
            f"ctc_loss_reduction must be 'mean' or 'sum', got {self.ctc_loss_reduction!r}",
        )
        need(
            0 <= self.pad_token_id < self.vocab_size,
            f"pad_token_id ({self.pad_token_id}) is the CTC blank and must be < vocab_size ({self.vocab_size})",
        )
        need(
            self.num_conditions >= 0 and self.condition_dim >= 0,
            "num_conditions and condition_dim must be >= 0 (0 disables the conditioning prefix)",
        )
        for name in ("hidden_dropout", "attention_dropout", "final_dropout"):
            value = getattr(self, name)
            need(0.0 <= value < 1.0, f"{name} must lie in [0, 1), got {value!r}")
