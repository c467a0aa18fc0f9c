"""lact-audio models: the LaCT backbone, the CTC ASR model and the audio-token language model."""

import hashlib
import importlib
import json
import os
import pickle
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput, can_return_tuple, logging

from .cache_lact_audio import LaCTCache, LaCTLayerCache
from .configuration_lact_audio import LaCTAudioConfig
from .frontend_lact_audio import CausalConvLayer, LaCTAudioFrontend, conv_output_lengths
from .lact_ops import value_checks_enabled
from .layers_lact_audio import LaCTRMSNorm, LaCTSwiGLUMLP, rotary_cos_sin
from .mixer_lact_audio import LaCTAudioMixer
from .whisper_frontend_lact_audio import LaCTWhisperFrontend, whisper_output_lengths


class LaCTAudioBlock(GradientCheckpointingLayer):
    """Pre-norm block: ``x + mixer(norm(x))`` then ``x + mlp(norm(x))``; ``[B, T, hidden] -> [B, T, hidden]``."""

    def __init__(self, config: LaCTAudioConfig, layer_idx: int):
        super().__init__()
        self.mixer_norm = LaCTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mixer = LaCTAudioMixer(config, layer_idx)
        self.mlp_norm = LaCTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LaCTSwiGLUMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden, start: int, frame_mask=None, layer_cache=None, rotary=None, chunk_ends=None):
        mixed, new_cache = self.mixer(self.mixer_norm(hidden), start, frame_mask, layer_cache, rotary, chunk_ends)
        hidden = hidden + self.dropout(mixed)
        hidden = hidden + self.mlp(self.mlp_norm(hidden))
        return hidden, new_cache


# ``quantization_config.quant_method`` of a folder ``quantization.save_quantized`` wrote with FBGEMM int8 layers,
# which transformers does not know (it would skip the config and initialise the linear layers at random).
INT8_FBGEMM_QUANT_METHOD = "lact_int8_fbgemm"


def _quant_method(folder: str) -> str | None:
    """``quantization_config.quant_method`` in ``folder``'s ``config.json``, None when there is none."""
    try:
        with open(os.path.join(folder, "config.json")) as f:
            quant = json.load(f).get("quantization_config") or {}
    except (OSError, ValueError):
        return None  # a missing or broken config.json is reported by the normal loading path
    return quant.get("quant_method") if isinstance(quant, dict) else None


def _load_int8_fbgemm_folder(folder: str):
    """An FBGEMM int8 folder: loaded by the installed package's ``quantization.load_quantized`` (CPU, eval)."""
    if __package__ != "modeling_lact_audio":
        raise ValueError(
            f"{folder} holds an int8 model quantised with FBGEMM layers (quant_method {INT8_FBGEMM_QUANT_METHOD!r}), "
            "which the folder's own code cannot build: pip install lact-audio and load it with "
            "modeling_lact_audio.quantization.load_quantized"
        )
    # imported by name, not relatively: the exported folders copy this file's relative imports, and the
    # quantisation tools (torchao, scipy) are no part of a model folder's code
    return importlib.import_module(f"{__package__}.quantization").load_quantized(folder)


class LaCTAudioPreTrainedModel(PreTrainedModel):
    """Weight initialisation, gradient checkpointing and the output-length rule shared by every lact-audio model."""

    config_class = LaCTAudioConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # flash-attn's windowed kernel serves the causal and bidirectional patterns; block_causal uses SDPA.
    _supports_flash_attn = True
    _no_split_modules = ["LaCTAudioBlock"]
    # The fast weights' initial values (w0, w1, w2 of every LaCT mixer) stay fp32 when a folder loads in bf16/fp16
    # (``from_pretrained(..., dtype=torch.bfloat16)``): the op keeps its state and every update in their dtype.
    # Patterns are regular expressions searched in the parameter names.
    _keep_in_fp32_modules_strict = [r"mixer\.w[012]$"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LaCTAudioMixer) and module.use_lact:
            D, Dh = module.w0.shape[-1], module.w0.shape[-2]
            init.normal_(module.w0, mean=0.0, std=D**-0.5)
            init.normal_(module.w2, mean=0.0, std=D**-0.5)
            init.normal_(module.w1, mean=0.0, std=Dh**-0.5)
        elif isinstance(module, LaCTRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, CausalConvLayer):
            init.kaiming_normal_(module.conv.weight)
            init.zeros_(module.conv.bias)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """``PreTrainedModel.from_pretrained``, then two checks that turn corrupt weights into errors:
        a local folder's weight files must match the sha256 sums of its export record (when present), and
        every loaded parameter and buffer must be finite. A local folder whose code copies differ from the
        installed package's gets a warning (:func:`warn_if_folder_code_differs`). A folder of FBGEMM int8 layers
        (``quantization.save_quantized`` in ``"int8_dynamic_fbgemm"``) loads through ``quantization.load_quantized``
        (CPU, eval mode; other loading arguments do not apply to it)."""
        path = None if pretrained_model_name_or_path is None else str(pretrained_model_name_or_path)
        if path is not None and os.path.isdir(path):
            if _quant_method(path) == INT8_FBGEMM_QUANT_METHOD:
                return _load_int8_fbgemm_folder(path)
            verify_weights_checksums(path)  # first: its message names the file the export record lists
            check_checkpoint_folder(path)
            warn_if_folder_code_differs(path)
        elif path is not None and _looks_local(path):
            raise FileNotFoundError(f"no checkpoint folder at {path!r}: pass a folder that save_pretrained wrote")
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except (SafetensorError, pickle.UnpicklingError) as error:
            raise ValueError(
                f"the weights file in {path} is corrupt, truncated or not plain tensors ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}): re-download or re-export the checkpoint"
            ) from error
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(
                f"the weights in {path} do not fit this config (missing, unexpected or differently shaped tensors; "
                "the load report above names them): the folder's config.json and weights come from different "
                "models, or the config was edited"
            ) from error
        check_finite_weights(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    def _get_feat_extract_output_lengths(self, input_lengths):
        """Model frames for ``input_lengths`` input positions (int or LongTensor ``[B]``)."""
        if self.config.task == "lm":
            return input_lengths
        if self.config.frontend == "whisper_encoder":
            return whisper_output_lengths(input_lengths)
        return conv_output_lengths(input_lengths, self.config.conv_strides)


logger = logging.get_logger(__name__)

EXPORT_RECORD = "lact_export.json"


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _looks_local(path: str) -> bool:
    """Whether ``path`` names a local folder rather than a Hub repo id (``name`` or ``namespace/name``)."""
    return os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1


def check_checkpoint_folder(folder) -> None:
    """Raise a clear error when a local checkpoint ``folder`` lacks ``config.json`` or a weights file, or when its
    ``config.json`` is not JSON (transformers would raise its own, less specific errors)."""
    folder = str(folder)
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise FileNotFoundError(f"{folder} has no config.json: it is not a folder that save_pretrained wrote")
    try:
        with open(config, encoding="utf-8") as f:
            json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config} is not valid JSON ({error}): the folder is corrupt; re-export it") from error
    if not any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{folder} has a config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}): the save was interrupted "
            "or the weights were not copied"
        )


def warn_if_folder_code_differs(folder) -> list:
    """In the installed package: warn when a local folder ships modeling code copies that differ from this
    package's code, and return their names (empty otherwise, and always empty inside a Hub folder's own code).

    transformers prefers classes registered in the process (``import modeling_lact_audio`` registers them)
    over a folder's ``auto_map`` code, even with ``trust_remote_code=True``, so an edited or outdated folder
    would otherwise run the installed code without notice.
    """
    has = lambda name: os.path.isfile(os.path.join(str(folder), name))  # noqa: E731
    if __package__ != "modeling_lact_audio" or not has("lact_ops.py") or not has("config.json"):
        return []  # without config.json, from_pretrained itself says what is missing
    # importlib, not an import statement: transformers copies every relative import of a Hub folder's code.
    checkpoint = importlib.import_module("modeling_lact_audio.export.checkpoint")
    differing = [name for name in checkpoint.stale_generated_files(folder) if name.endswith(".py")]
    if differing:
        logger.warning(
            f"{folder} ships modeling code that differs from the installed lact-audio ({', '.join(differing)}); the "
            "installed code runs, because modeling_lact_audio is imported and transformers prefers registered "
            "classes over a folder's code even with trust_remote_code=True. To run the folder's own code, load it "
            "with trust_remote_code=True in a process that does not import modeling_lact_audio; to bring the "
            "folder up to date, run `python run_scripts/export_checkpoint.py --refresh-code FOLDER`."
        )
    return differing


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights_checksums(folder) -> None:
    """Compare a local folder's weight files with the sha256 sums its export record lists, if it has one.

    ``folder/lact_export.json`` (written by the lact-audio exporters) may hold ``weights_sha256``:
    ``{file name: hex sha256}``. A folder without the record or the field (a plain ``save_pretrained``
    folder, a Hub id) is not checked. Raises ``ValueError`` naming the file whose bytes changed.
    """
    record = os.path.join(str(folder), EXPORT_RECORD)
    if not os.path.isfile(record):
        return
    with open(record) as f:
        sums = json.load(f).get("weights_sha256") or {}
    for name, want in sums.items():
        path = os.path.join(str(folder), name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: {EXPORT_RECORD} lists it; re-download or re-export the folder")
        got = file_sha256(path)
        if got != want:
            raise ValueError(
                f"{path} is corrupt or was changed after export: its sha256 is {got}, {EXPORT_RECORD} records "
                f"{want}. Re-download or re-export the folder (a deliberately edited file: remove its entry from "
                f"weights_sha256 in {EXPORT_RECORD})."
            )


@torch.no_grad()
def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite; quantised tensor subclasses (torchao) are checked dequantised."""
    if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "dequantize"):
        tensor = tensor.dequantize()
    return bool(torch.isfinite(tensor).all())


def check_finite_weights(model: nn.Module) -> None:
    """Raise ``ValueError`` naming every parameter or buffer holding NaN or infinity (loaded weights that
    are corrupt would otherwise give NaN logits and empty transcripts). Tensors on the meta device are skipped."""
    bad = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point() and tensor.device.type != "meta" and not _all_finite(tensor)
    ]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(
            f"the loaded weights hold NaN or infinite values in {shown}: the weights file is corrupt. "
            "Re-download or re-export the checkpoint."
        )


def _as_bool_mask(mask):
    return None if mask is None else mask.bool()


class LaCTAudioModel(LaCTAudioPreTrainedModel):
    """The LaCT backbone: audio front end (or given embeddings), blocks, final RMSNorm.

    Inputs (exactly one): ``input_features [B, T, num_mel_bins]`` (``frontend="log_mel"``; Whisper's
    ``[B, num_mel_bins, 3000]`` for ``"whisper_encoder"``), ``input_values [B, L]`` (``"waveform"``),
    ``frontend_states [B, T', d_model]`` (``"whisper_encoder"``: encoder states computed earlier, only the
    projection runs) or ``inputs_embeds [B, T, hidden]`` (the only input of a ``task="lm"`` backbone, which
    has no audio front end).
    ``attention_mask [B, T or L]`` (1 = real, 0 = padding) at the input rate (Whisper's log-mel rate,
    ``[B, 3000]``, for ``input_features`` of a ``"whisper_encoder"`` model; frame rate for ``frontend_states``).
    ``prefix_embeds [B, P, hidden]``: optional conditioning frames put before the input on the first call.
    ``past_key_values``: a ``LaCTCache`` to continue a stream (created when ``use_cache=True``).
    ``lact_chunk_ends [B, T']``: optional bool, True at the model frames (the backbone's rate, after the front
    end's subsampling: ``T'`` frames of this call, prefix excluded) that end a fast-weight chunk; chunks also
    end after ``lact_chunk_size`` frames (the op's ``chunk_ends``; ``mixer="lact"`` only). A stream may pass it
    in some calls and not in others: the chunk in progress carries over in the cache.

    Returns ``BaseModelOutputWithPast``: ``last_hidden_state [B, P + T', hidden]``, ``past_key_values``,
    ``hidden_states`` (with ``output_hidden_states``).
    """

    def __init__(self, config: LaCTAudioConfig):
        super().__init__(config)
        if config.task != "ctc":
            self.frontend = None
        elif config.frontend == "whisper_encoder":
            self.frontend = LaCTWhisperFrontend(config)
        else:
            self.frontend = LaCTAudioFrontend(config)
        self.layers = nn.ModuleList([LaCTAudioBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LaCTRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        """None: the backbone reads audio features or embeddings computed outside it, never token ids (the
        generator's codebook embeddings live in ``LaCTAudioForCausalLM``). Accelerate's FSDP2 preparation and
        torchao's quantise-while-loading ask every model for this."""
        return None

    def _check_stream(self, cache: LaCTCache):
        if self.config.frontend == "whisper_encoder":
            return  # every call is a whole (offline) segment
        if self.frontend is not None and cache.seen_inputs % self.config.total_stride:
            raise ValueError(
                f"a stream fed through the cache must come in pieces whose length is a multiple of the front end's "
                f"total stride ({self.config.total_stride} input positions), except the last piece; the stream has "
                f"consumed {cache.seen_inputs}"
            )

    @can_return_tuple
    def forward(
        self,
        input_features=None,
        input_values=None,
        inputs_embeds=None,
        attention_mask=None,
        frontend_states=None,
        prefix_embeds=None,
        past_key_values: LaCTCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        lact_chunk_ends: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPast:
        given = [
            n
            for n, t in (
                ("input_features", input_features),
                ("input_values", input_values),
                ("inputs_embeds", inputs_embeds),
                ("frontend_states", frontend_states),
            )
            if t is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "LaCTAudioModel: pass exactly one of input_features, input_values, inputs_embeds, frontend_states; "
                f"got {given}"
            )
        if past_key_values is not None and not isinstance(past_key_values, LaCTCache):
            raise ValueError(f"past_key_values must be a LaCTCache, got {type(past_key_values).__name__}")
        cache = past_key_values
        if cache is None and use_cache:
            cache = LaCTCache(self.config.num_hidden_layers)
        inputs = {
            "input_features": input_features,
            "input_values": input_values,
            "inputs_embeds": inputs_embeds,
            "frontend_states": frontend_states,
        }[given[0]]
        self._check_input(given[0], inputs)
        in_mask = _as_bool_mask(attention_mask)
        whisper_features = given[0] == "input_features" and self.config.frontend == "whisper_encoder"
        time_axis = 2 if whisper_features else 1
        n_inputs = inputs.shape[time_axis]
        if inputs.shape[0] == 0 or n_inputs == 0:
            raise ValueError(
                f"{given[0]} is empty (batch {inputs.shape[0]}, {n_inputs} time steps): pass at least one time step "
                "of at least one example"
            )
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(
                f"past_key_values is a LaCTCache of {len(cache)} layers, but the model has {len(self.layers)}: make it "
                "with LaCTCache(model.config.num_hidden_layers), or let the model create it (use_cache=True)"
            )
        if cache is not None and cache.batch_size not in (-1, inputs.shape[0]):
            raise ValueError(
                f"past_key_values holds streams of a batch of {cache.batch_size}, but {given[0]} has a batch of "
                f"{inputs.shape[0]}: keep one LaCTCache per batch of streams (change a cache's batch with "
                "batch_select_indices or batch_repeat_interleave)"
            )
        if in_mask is not None and in_mask.shape != (inputs.shape[0], n_inputs):
            raise ValueError(
                f"attention_mask must be [B, T] = {(inputs.shape[0], n_inputs)}, got {tuple(in_mask.shape)}"
            )

        if given[0] == "inputs_embeds":
            hidden, frame_mask = inputs_embeds, in_mask
        elif self.config.frontend == "whisper_encoder":
            if given[0] == "frontend_states":
                hidden, frame_mask = self.frontend(frontend_states=frontend_states, frame_mask=in_mask)
            else:
                hidden, frame_mask = self.frontend(input_features, in_mask)
        else:
            if cache is not None:
                self._check_stream(cache)
            hidden, frame_mask, fe_states = self.frontend(
                inputs, in_mask, None if cache is None else cache.frontend_states
            )
            if cache is not None:
                cache.frontend_states = fe_states
        chunk_ends = None if lact_chunk_ends is None else self._check_chunk_ends(lact_chunk_ends, hidden)
        if prefix_embeds is not None:
            B, P = prefix_embeds.shape[:2]
            hidden = torch.cat([prefix_embeds.to(hidden.dtype), hidden], dim=1)
            if frame_mask is not None:
                frame_mask = torch.cat([frame_mask.new_ones(B, P), frame_mask], dim=1)
            if chunk_ends is not None:  # the prefix frames end no chunk of their own
                chunk_ends = torch.cat([chunk_ends.new_zeros(B, P), chunk_ends], dim=1)

        start = 0 if cache is None else cache.seen_frames
        positions = torch.arange(start, start + hidden.shape[1], device=hidden.device)
        rotary = rotary_cos_sin(positions, self.config.attention_head_dim, self.config.rope_theta, torch.float32)
        all_hidden = [hidden] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            layer_cache = None
            if cache is not None:
                layer_cache = cache.layer_caches[i]
                if self.config.attention_pattern == "bidirectional":
                    # Offline segments: attention does not cross calls, the fast weights do.
                    layer_cache = LaCTLayerCache(fast=layer_cache.fast)
            hidden, new_layer_cache = layer(
                hidden, start, frame_mask, layer_cache=layer_cache, rotary=rotary, chunk_ends=chunk_ends
            )
            if cache is not None:
                cache.layer_caches[i] = new_layer_cache
            if output_hidden_states:
                all_hidden.append(hidden)
        hidden = self.norm(hidden)
        if cache is not None:
            cache.seen_frames += hidden.shape[1]
            cache.seen_inputs += n_inputs
        return BaseModelOutputWithPast(
            last_hidden_state=hidden,
            past_key_values=cache,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
        )

    def _check_chunk_ends(self, chunk_ends, hidden) -> torch.Tensor:
        """``lact_chunk_ends`` checked against the front end's output ``hidden [B, T', hidden]``: bool ``[B, T']``."""
        if self.config.mixer != "lact":
            raise ValueError(
                f"lact_chunk_ends marks fast-weight chunks, and this model's mixer={self.config.mixer!r} has no fast "
                "weights: pass it only to mixer='lact' models"
            )
        want = tuple(hidden.shape[:2])
        if not isinstance(chunk_ends, torch.Tensor) or tuple(chunk_ends.shape) != want:
            got = tuple(chunk_ends.shape) if isinstance(chunk_ends, torch.Tensor) else type(chunk_ends).__name__
            raise ValueError(
                f"lact_chunk_ends must be a bool tensor [B, frames] = {want} at the backbone's frame rate (after the "
                f"front end: {self.config.total_stride} input positions per frame), got {got}"
            )
        if chunk_ends.dtype != torch.bool:
            raise ValueError(f"lact_chunk_ends must be bool (True = the frame ends a chunk), got {chunk_ends.dtype}")
        return chunk_ends.to(hidden.device)

    def _check_input(self, name: str, x):
        cfg = self.config
        if cfg.task == "lm" and name != "inputs_embeds":
            raise ValueError(f"a task='lm' backbone has no audio front end: pass inputs_embeds, not {name}")
        if name in ("input_features", "frontend_states") and cfg.frontend == "whisper_encoder":
            whisper = cfg.whisper_config
            want = (
                (whisper["num_mel_bins"], 2 * whisper["max_source_positions"])
                if name == "input_features"
                else (None, whisper["d_model"])
            )
            shape = tuple(x.shape[1:])
            if x.dim() != 3 or any(w is not None and w != got for w, got in zip(want, shape)):
                expected = (
                    f"[B, num_mel_bins={want[0]}, {want[1]}] (WhisperFeatureExtractor pads every input to the "
                    "encoder's 30 s window; pass return_attention_mask=True so the padding is cut off)"
                    if name == "input_features"
                    else f"[B, T, d_model={want[1]}]"
                )
                raise ValueError(f"{name} must be {expected}, got {tuple(x.shape)}")
        elif name == "frontend_states":
            raise ValueError(
                f"frontend_states needs frontend='whisper_encoder'; this model's frontend is {cfg.frontend!r}"
            )
        elif name == "input_features":
            if cfg.frontend != "log_mel":
                raise ValueError(
                    "input_features needs frontend='log_mel' or 'whisper_encoder'; "
                    f"this model's frontend is {cfg.frontend!r}"
                )
            if x.dim() != 3 or x.shape[-1] != cfg.num_mel_bins:
                raise ValueError(
                    f"input_features must be [B, T, num_mel_bins={cfg.num_mel_bins}], got {tuple(x.shape)}"
                )
        elif name == "input_values":
            if cfg.frontend != "waveform":
                raise ValueError(f"input_values needs frontend='waveform'; this model's frontend is {cfg.frontend!r}")
            if x.dim() != 2:
                raise ValueError(f"input_values must be [B, L] (mono waveform), got {tuple(x.shape)}")
        elif x.dim() != 3 or x.shape[-1] != cfg.hidden_size:
            raise ValueError(f"inputs_embeds must be [B, T, hidden_size={cfg.hidden_size}], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {x.dtype}")


@dataclass
class LaCTCTCOutput(ModelOutput):
    """``loss`` (scalar, with labels), ``logits [B, T', vocab]``, ``output_lengths [B]`` (valid frames),
    ``past_key_values`` (``LaCTCache`` when streaming), ``hidden_states``."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    output_lengths: torch.LongTensor | None = None
    past_key_values: LaCTCache | None = None
    hidden_states: tuple | None = None


class LaCTAudioForCTC(LaCTAudioPreTrainedModel):
    """LaCT ASR encoder with a CTC head (blank = ``config.pad_token_id``).

    forward(input_features or input_values or frontend_states, attention_mask=None, labels=None,
    past_key_values=None, use_cache=None, lact_chunk_ends=None) -> ``LaCTCTCOutput`` (inputs, and the
    frame-rate ``lact_chunk_ends [B, T']``, as ``LaCTAudioModel`` reads them).
    ``labels [B, S]`` are character ids padded with -100.
    Streaming: feed pieces (multiples of ``config.total_stride`` inputs, ideally whole LaCT chunks) with
    ``use_cache=True`` and pass ``past_key_values`` back; with ``attention_pattern="block_causal"`` and
    ``lact_order="update_apply"`` the stream equals one call. To adapt to a speaker, keep the cache
    across utterances (``cache.start_new_utterance()`` between them).
    """

    def __init__(self, config: LaCTAudioConfig):
        super().__init__(config)
        if config.task != "ctc":
            raise ValueError(f"LaCTAudioForCTC needs LaCTAudioConfig(task='ctc'), got task={config.task!r}")
        self.model = LaCTAudioModel(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    @property
    def main_input_name(self):
        return "input_values" if self.config.frontend == "waveform" else "input_features"

    @can_return_tuple
    def forward(
        self,
        input_features=None,
        input_values=None,
        attention_mask=None,
        labels=None,
        past_key_values=None,
        use_cache=None,
        output_hidden_states=None,
        frontend_states=None,
        lact_chunk_ends=None,
    ) -> LaCTCTCOutput:
        out = self.model(
            input_features=input_features,
            input_values=input_values,
            frontend_states=frontend_states,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            lact_chunk_ends=lact_chunk_ends,
            return_dict=True,
        )
        logits = self.lm_head(self.dropout(out.last_hidden_state))
        output_lengths = self._output_lengths(input_features, input_values, frontend_states, attention_mask)
        loss = None
        if labels is not None:
            loss = self.ctc_loss(logits, output_lengths, labels)
        return LaCTCTCOutput(
            loss=loss,
            logits=logits,
            output_lengths=output_lengths,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
        )

    def _output_lengths(self, input_features, input_values, frontend_states, attention_mask):
        """Valid output frames ``[B]`` of a forward call's inputs."""
        if frontend_states is not None:  # already at the frame rate
            if attention_mask is not None:
                return attention_mask.sum(-1).long()
            return torch.full(frontend_states.shape[:1], frontend_states.shape[1], device=frontend_states.device)
        inputs = input_features if input_features is not None else input_values
        time_axis = 2 if input_features is not None and self.config.frontend == "whisper_encoder" else 1
        in_lengths = (
            attention_mask.sum(-1).long()
            if attention_mask is not None
            else torch.full((inputs.shape[0],), inputs.shape[time_axis], dtype=torch.long, device=inputs.device)
        )
        return self._get_feat_extract_output_lengths(in_lengths)

    def ctc_loss(self, logits, output_lengths, labels):
        """CTC loss as transformers' Wav2Vec2ForCTC computes it.

        ``logits [B, T', V]``, ``output_lengths [B]``, ``labels [B, S]`` (-100 = pad); returns a scalar.
        """
        if value_checks_enabled() and labels.max() >= self.config.vocab_size:
            raise ValueError(f"labels must be < vocab_size ({self.config.vocab_size}), got {int(labels.max())}")
        if labels.dim() != 2 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"labels must be [B={logits.shape[0]}, S] (one row of ids per input, -100 = padding), "
                f"got {tuple(labels.shape)}"
            )
        labels_mask = labels >= 0
        target_lengths = labels_mask.sum(-1)
        targets = labels.masked_select(labels_mask)
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        with torch.backends.cudnn.flags(enabled=False):
            return F.ctc_loss(
                log_probs,
                targets,
                output_lengths,
                target_lengths,
                blank=self.config.pad_token_id,
                reduction=self.config.ctc_loss_reduction,
                zero_infinity=self.config.ctc_zero_infinity,
            )


class LaCTAudioForCausalLM(LaCTAudioPreTrainedModel, GenerationMixin):
    """Autoregressive audio-token LM over ``num_codebooks`` parallel codebooks, with ``generate()``.

    ``input_ids`` follow transformers' MusicGen convention, ``[B * num_codebooks, T]`` (rows
    ``b * K + k``), so ``generate()`` works unchanged; logits are ``[B * num_codebooks, T, codebook_size]``.
    Each frame's embedding is the sum of its K codebook embeddings; each codebook has its own head.
    Conditioning: ``conditioning_ids [B]`` (speaker/style id, needs ``num_conditions``) and/or
    ``conditioning_embeds [B, condition_dim]`` become one prefix frame before the first token (on the
    first call of a stream only); its output is dropped, so logits stay aligned with ``input_ids``.
    The ``LaCTCache`` (fast weights, pending chunk, attention window) has a constant size, so decoding
    memory does not grow with the length generated. Greedy, top-k, nucleus and temperature sampling
    through ``GenerationConfig``; beam search is not supported (fast weights cannot be rewound per beam).
    ``forward(..., lact_chunk_ends [B, T])``: frames that end a fast-weight chunk (see ``LaCTAudioModel``;
    forward calls only, ``generate()`` keeps the fixed chunks).
    """

    main_input_name = "input_ids"

    def __init__(self, config: LaCTAudioConfig):
        super().__init__(config)
        if config.task != "lm":
            raise ValueError(f"LaCTAudioForCausalLM needs LaCTAudioConfig(task='lm'), got task={config.task!r}")
        self.model = LaCTAudioModel(config)
        K, V, d = config.num_codebooks, config.codebook_size, config.hidden_size
        self.embed_tokens = nn.ModuleList([nn.Embedding(V, d) for _ in range(K)])
        self.lm_heads = nn.ModuleList([nn.Linear(d, V, bias=False) for _ in range(K)])
        self.condition_embed = nn.Embedding(config.num_conditions, d) if config.num_conditions else None
        self.condition_proj = nn.Linear(config.condition_dim, d) if config.condition_dim else None
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _prefix(self, conditioning_ids, conditioning_embeds, batch_size):
        if conditioning_ids is None and conditioning_embeds is None:
            return None
        prefix = 0
        if conditioning_ids is not None:
            if self.condition_embed is None:
                raise ValueError("conditioning_ids needs config.num_conditions > 0")
            ids = torch.as_tensor(conditioning_ids, device=self.device).view(-1)
            if ids.shape[0] != batch_size or (
                value_checks_enabled() and (ids.min() < 0 or ids.max() >= self.config.num_conditions)
            ):
                raise ValueError(f"conditioning_ids must be [B={batch_size}] ids in [0, {self.config.num_conditions})")
            try:
                prefix = prefix + self.condition_embed(ids)
            except IndexError as error:
                raise ValueError(
                    f"conditioning_ids must be ids in [0, {self.config.num_conditions}): one is out of range"
                ) from error
        if conditioning_embeds is not None:
            if self.condition_proj is None:
                raise ValueError("conditioning_embeds needs config.condition_dim > 0")
            if conditioning_embeds.shape != (batch_size, self.config.condition_dim):
                raise ValueError(
                    f"conditioning_embeds must be [B, condition_dim] = "
                    f"{(batch_size, self.config.condition_dim)}, got {tuple(conditioning_embeds.shape)}"
                )
            prefix = prefix + self.condition_proj(conditioning_embeds.to(self.dtype))
        return prefix[:, None, :]

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        past_key_values=None,
        use_cache=None,
        conditioning_ids=None,
        conditioning_embeds=None,
        output_hidden_states=None,
        lact_chunk_ends=None,
    ) -> CausalLMOutputWithPast:
        K, V = self.config.num_codebooks, self.config.codebook_size
        if input_ids is None or input_ids.dim() != 2 or input_ids.shape[0] % K:
            got = None if input_ids is None else tuple(input_ids.shape)
            raise ValueError(f"input_ids must be [B * num_codebooks, T] with num_codebooks={K}, got {got}")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer codes (torch.long), got {input_ids.dtype}")
        if value_checks_enabled() and input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= V):
            raise ValueError(
                f"input_ids must be codes in [0, codebook_size={V}), got [{int(input_ids.min())}, "
                f"{int(input_ids.max())}]"
            )
        BK, T = input_ids.shape
        B = BK // K
        codes = input_ids.view(B, K, T)
        try:
            embeds = sum(self.embed_tokens[k](codes[:, k]) for k in range(K))
        except IndexError as error:  # the CPU's embedding says so; a GPU's asserts on the device
            raise ValueError(
                f"input_ids must be codes in [0, codebook_size={V}): an id is out of range (find it with "
                "modeling_lact_audio.kernels.check_values(), which checks the values first)"
            ) from error
        mask = None
        if attention_mask is not None:
            mask = attention_mask.view(B, K, -1)[:, 0] if attention_mask.shape[0] == BK else attention_mask
            mask = mask[:, mask.shape[1] - T :]  # generate() passes the mask of the whole sequence
        first_call = past_key_values is None or past_key_values.seen_frames == 0
        prefix = self._prefix(conditioning_ids, conditioning_embeds, B) if first_call else None
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            prefix_embeds=prefix,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            lact_chunk_ends=lact_chunk_ends,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        if prefix is not None:
            hidden = hidden[:, prefix.shape[1] :]
        logits = torch.stack([head(hidden) for head in self.lm_heads], dim=1).reshape(BK, T, V)
        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels must have input_ids' shape {tuple(input_ids.shape)} (-100 = ignored), got "
                    f"{tuple(labels.shape)}"
                )
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=V)
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states
        )

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        """Feed only the ids the cache has not consumed yet (all of them on the first step)."""
        if past_key_values is not None and past_key_values.seen_inputs:
            input_ids = input_ids[:, past_key_values.seen_inputs :]
        inputs = {
            "input_ids": input_ids,
            "past_key_values": past_key_values,
            "attention_mask": attention_mask,
            "use_cache": kwargs.get("use_cache", True),
        }
        for name in ("conditioning_ids", "conditioning_embeds"):
            if kwargs.get(name) is not None:
                inputs[name] = kwargs[name]
        return inputs

    def generate(self, *args, **kwargs):
        """``GenerationMixin.generate`` for greedy/sampling decoding; see the class docstring.

        Audio codes have no padding id: without an ``attention_mask`` every frame of ``input_ids`` counts (transformers
        would otherwise take each code equal to ``pad_token_id`` for padding and mask it). Pass an ``attention_mask``
        for a left-padded batch.
        """
        ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if isinstance(ids, torch.Tensor) and ids.dim() == 2 and kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones_like(ids)
        gen_config = kwargs.get("generation_config") or self.generation_config
        for name in ("num_beams", "num_return_sequences"):
            value = kwargs.get(name, getattr(gen_config, name, 1)) or 1
            if value != 1:
                raise ValueError(
                    f"LaCTAudioForCausalLM.generate supports {name}=1 only (got {value}): fast weights "
                    "cannot be split per beam; run several calls for several samples"
                )
        return super().generate(*args, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters of ``model``; Whisper's fixed sinusoidal positions do not count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
