"""LaCTCache: the streaming state of a lact-audio model, as a transformers ``Cache``.

Per layer it holds the fast weights (with momentum and the tokens of a chunk still filling up) and
the attention window's keys and values; for the model it holds the front end's conv context and
how many frames and input positions the stream has consumed. Its size does not grow with the
length of the stream (except for the full-attention baseline's KV cache, which is the point of
that baseline).

The adapted fast weights of a cache can be kept as a *preset* (``LaCTCache.save_pretrained`` /
``LaCTCache.from_pretrained``): a folder with ``fast_weights.safetensors`` and ``lact_cache.json``, tied
to the model's configuration by :func:`config_fingerprint`.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from transformers.cache_utils import Cache

from .lact_ops import FastWeightState

__all__ = ["LaCTCache", "LaCTLayerCache", "config_fingerprint", "PRESET_WEIGHTS_NAME", "PRESET_CONFIG_NAME"]

PRESET_WEIGHTS_NAME = "fast_weights.safetensors"
PRESET_CONFIG_NAME = "lact_cache.json"
PRESET_FORMAT = 1
# Keys of ``config.to_dict()`` that do not change what the model builds: where it was loaded from, the
# library version, the dtype, the class names, and run-time output switches (plus every ``_`` key).
VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "torch_dtype",
        "dtype",
        "architectures",
        "auto_map",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "use_cache",
    }
)
# Config fields added after presets existed: left out of the fingerprint while they hold these defaults (which
# build the models of before), so that those presets keep loading.
FINGERPRINT_DEFAULTS = {"lact_update_rule": "sgd", "lact_lr_mode": "learned", "allow_unnormalised_fast_weights": False}
WEIGHT_NAMES = ("w0", "w1", "w2")
NORM_NAMES = ("w0_norm", "w1_norm", "w2_norm")
MOMENTUM_NAMES = ("m0", "m1", "m2")
SECOND_MOMENT_NAMES = ("v0", "v1", "v2", "v_count")  # lact_update_rule="adam"


def _architecture_fields(value):
    """``value`` (a ``to_dict()`` tree) without the volatile keys, at every depth (nested sub-configs too), and
    without the ``FINGERPRINT_DEFAULTS`` fields that hold their defaults."""
    if isinstance(value, dict):
        return {
            k: _architecture_fields(v)
            for k, v in value.items()
            if not str(k).startswith("_")
            and k not in VOLATILE_CONFIG_KEYS
            and not (k in FINGERPRINT_DEFAULTS and v == FINGERPRINT_DEFAULTS[k])
        }
    if isinstance(value, (list, tuple)):
        return [_architecture_fields(v) for v in value]
    return value


def config_fingerprint(config) -> str:
    """SHA-256 (64 hex digits) of the canonical JSON of ``config.to_dict()`` without its volatile keys.

    Dropped, at every depth: keys starting with ``_`` (``_name_or_path``, ``_commit_hash``,
    ``_attn_implementation*``, ...), ``transformers_version``, ``torch_dtype``/``dtype``, ``architectures``,
    ``auto_map`` and the run-time switches ``output_attentions``, ``output_hidden_states``, ``return_dict``,
    ``use_cache``; and ``lact_update_rule``, ``lact_lr_mode``, ``allow_unnormalised_fast_weights`` while they hold
    their defaults (fields newer than the first presets). So a config and the same config saved and loaded again
    hash equal, while any field that
    shapes the model (``hidden_size``, ``num_lact_heads``, ``lact_chunk_size``, ``num_hidden_layers``, ...)
    changes the hash. Two trained models of one configuration share a fingerprint: it ties a fast-weight
    preset to an architecture, not to a checkpoint.

    Args:
        config: a ``PreTrainedConfig`` (anything with ``to_dict()``), e.g. a ``LaCTAudioConfig``.

    Returns:
        the lower-case hex digest.
    """
    if not callable(getattr(config, "to_dict", None)):
        raise TypeError(
            f"config_fingerprint needs a transformers config (with to_dict()), got {type(config).__name__}; "
            "pass model.config"
        )
    fields = _architecture_fields(config.to_dict())
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class LaCTLayerCache:
    """One layer's state: ``fast`` weights, window ``keys``/``values`` ``[B, H, W, Dh]`` (after RoPE)
    and ``key_mask`` ``[B, W]`` (False where the cached frame was padding)."""

    fast: Optional[FastWeightState] = None
    keys: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None
    key_mask: Optional[torch.Tensor] = None

    def map(self, fn, fast_fn) -> "LaCTLayerCache":
        opt = lambda t: None if t is None else fn(t)
        return LaCTLayerCache(
            fast=None if self.fast is None else fast_fn(self.fast),
            keys=opt(self.keys),
            values=opt(self.values),
            key_mask=opt(self.key_mask),
        )


class LaCTCache(Cache):
    """Streaming state for ``LaCTAudioModel`` and its heads (pass it back as ``past_key_values``).

    Attributes:
        layer_caches: one ``LaCTLayerCache`` per block.
        frontend_states: conv context of the audio front end (the last ``kernel - stride`` inputs of
            each conv layer), or None before the first call.
        seen_frames: backbone positions consumed (RoPE positions and LaCT chunk boundaries).
        seen_inputs: input positions consumed (feature frames, samples or token ids); what
            ``get_seq_length`` returns and what ``generate`` trims from ``input_ids``.

    Fast weights cannot be rewound, so the cache is not croppable and beam search is not supported;
    ``start_new_utterance`` keeps the adapted fast weights for the next utterance of a speaker;
    ``save_pretrained`` / ``from_pretrained`` keep them on disk as a preset (e.g. one per speaker).
    """

    is_compileable = False

    def __init__(self, num_layers: int):
        super().__init__(layers=[])
        self.layer_caches = [LaCTLayerCache() for _ in range(num_layers)]
        self.frontend_states: Optional[list] = None
        self.seen_frames = 0
        self.seen_inputs = 0

    def __len__(self) -> int:
        return len(self.layer_caches)

    def __repr__(self) -> str:
        return f"LaCTCache(layers={len(self)}, seen_frames={self.seen_frames}, seen_inputs={self.seen_inputs})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_inputs

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def is_initialized(self) -> bool:
        return self.seen_inputs > 0

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        for lc in self.layer_caches:
            if lc.fast is not None:
                return lc.fast.batch_size
            if lc.keys is not None:
                return lc.keys.shape[0]
        return -1

    def _map(self, fn) -> None:
        self.layer_caches = [lc.map(fn, lambda s: s._map(fn)) for lc in self.layer_caches]
        if self.frontend_states is not None:
            self.frontend_states = [fn(s) for s in self.frontend_states]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch (``beam_idx [B]``)."""
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def detach(self) -> "LaCTCache":
        """Cut every tensor from the autograd graph in place (carry the state across utterances); returns self."""
        self._map(lambda t: t.detach())
        return self

    def start_new_utterance(self) -> "LaCTCache":
        """Keep the adapted fast weights (and momentum) but start a new stream: positions restart at 0,
        the window keys/values, pending chunk tokens and front-end context of the old utterance are
        dropped. This is test-time adaptation across utterances; returns self."""
        self.layer_caches = [
            LaCTLayerCache(fast=None if lc.fast is None else lc.fast.reset_stream()) for lc in self.layer_caches
        ]
        self.frontend_states = None
        self.seen_frames = 0
        self.seen_inputs = 0
        return self

    def reset(self) -> None:
        """Forget everything, including the adapted fast weights."""
        self.layer_caches = [LaCTLayerCache() for _ in self.layer_caches]
        self.frontend_states = None
        self.seen_frames = 0
        self.seen_inputs = 0

    def save_pretrained(self, save_directory, config) -> None:
        """Save the adapted fast weights as a preset that :meth:`from_pretrained` loads for a new utterance.

        What is saved is exactly what :meth:`start_new_utterance` keeps: per layer the fast weights
        ``w0, w2 [B, H, Dh, D]``, ``w1 [B, H, D, Dh]``, their reference row norms ``w0_norm, w2_norm
        [B, H, Dh, 1]``, ``w1_norm [B, H, D, 1]``, when the stream used momentum ``m0, m1, m2`` (shapes
        of the weights), and with ``lact_update_rule="adam"`` Adam's second moments ``v0, v1, v2`` (shapes of the
        weights) and ``v_count [B, H]`` (int64). The stream's position, attention window, front-end context,
        the tokens of a chunk still filling up (``pending``) and the fill of a variable chunk (``chunk_fill``)
        are not saved: a new utterance drops them too. The cache itself is not changed.

        Files written in ``save_directory`` (created if missing):
            ``fast_weights.safetensors``: tensors
                ``layers.{i}.{w0,w1,w2,w0_norm,w1_norm,w2_norm[,m0,m1,m2][,v0,v1,v2,v_count]}`` in the dtype the
                state holds (float32, or float64; ``v_count`` int64), contiguous, on the CPU.
            ``lact_cache.json``: ``format``, ``config_fingerprint`` (:func:`config_fingerprint` of
                ``config``), ``num_layers``, ``batch_size``, ``layers_with_state``, ``has_momentum``,
                ``has_second_moment`` (written only when True; absent in older presets),
                ``chunk_size`` (the LaCT chunk size of the stream) and the SHA-256 of the tensor file.

        Args:
            save_directory: folder to write (str or path).
            config: the configuration of the model that filled this cache (``model.config``).

        Raises:
            ValueError: no layer holds fast weights (nothing to save), the layers disagree on momentum, second
                moments or batch size, a tensor is not finite, or ``config`` has another number of layers.
        """
        if config.num_hidden_layers != len(self):
            raise ValueError(
                f"LaCTCache.save_pretrained: the cache has {len(self)} layers but config.num_hidden_layers is "
                f"{config.num_hidden_layers}; pass the config of the model that filled this cache"
            )
        with_state = [i for i, lc in enumerate(self.layer_caches) if lc.fast is not None]
        if not with_state:
            raise ValueError(
                "LaCTCache.save_pretrained: nothing to save: no layer holds fast weights; run the model with this "
                "cache first (use_cache=True, past_key_values=cache; a model whose mixer is not 'lact' has none)"
            )
        states = [self.layer_caches[i].fast for i in with_state]
        momentum = {s.m0 is not None for s in states}
        if len(momentum) > 1:
            raise ValueError("LaCTCache.save_pretrained: some layers carry momentum and others do not")
        second = {s.v0 is not None for s in states}
        if len(second) > 1:
            raise ValueError("LaCTCache.save_pretrained: some layers carry Adam second moments and others do not")
        sizes = {s.batch_size for s in states}
        if len(sizes) > 1:
            raise ValueError(f"LaCTCache.save_pretrained: the layers hold different batch sizes {sorted(sizes)}")
        has_momentum, has_second_moment = momentum.pop(), second.pop()
        names = WEIGHT_NAMES + NORM_NAMES + (MOMENTUM_NAMES if has_momentum else ())
        names += SECOND_MOMENT_NAMES if has_second_moment else ()
        tensors = {}
        for i, state in zip(with_state, states):
            for name in names:
                # A fresh contiguous copy: the weights are views of one stacked buffer, and safetensors
                # refuses tensors that share memory.
                t = getattr(state, name).detach().to("cpu").clone(memory_format=torch.contiguous_format)
                if not torch.isfinite(t).all():
                    raise ValueError(
                        f"LaCTCache.save_pretrained: layers.{i}.{name} holds non-finite values; the stream "
                        "diverged, so this state is no preset (start again from a fresh cache)"
                    )
                tensors[f"layers.{i}.{name}"] = t
        data = save_safetensors(tensors, metadata={"format": str(PRESET_FORMAT)})
        chunk_sizes = {s.chunk_size for s in states if s.chunk_size is not None}
        info = {
            "format": PRESET_FORMAT,
            "config_fingerprint": config_fingerprint(config),
            "num_layers": len(self),
            "batch_size": sizes.pop(),
            "layers_with_state": with_state,
            "has_momentum": has_momentum,
            **({"has_second_moment": True} if has_second_moment else {}),
            "chunk_size": chunk_sizes.pop() if len(chunk_sizes) == 1 else config.lact_chunk_size,
            "fast_weights_sha256": _file_sha256(data),
        }
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PRESET_WEIGHTS_NAME).write_bytes(data)
        (folder / PRESET_CONFIG_NAME).write_text(json.dumps(info, indent=1) + "\n")

    @classmethod
    def from_pretrained(
        cls, directory, config, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "LaCTCache":
        """Load a preset written by :meth:`save_pretrained` as a cache ready for a new utterance.

        The returned cache is what ``start_new_utterance()`` leaves: fast weights (and momentum) per layer,
        stream position 0, no attention window, no pending tokens, no front-end context. Pass it as
        ``past_key_values`` with ``use_cache=True``; its batch size is the saved one.

        Args:
            directory: the folder with ``fast_weights.safetensors`` and ``lact_cache.json``.
            config: the configuration of the model that will read the cache (``model.config``); the preset
                must have been made by a model of the same architecture (:func:`config_fingerprint`).
            device: where to put the tensors (default: the CPU).
            dtype: float32 or float64 for the weights (default: as saved); the LaCT op keeps fast weights
                in one of them.

        Returns:
            a ``LaCTCache`` with ``config.num_hidden_layers`` layers.

        Raises:
            FileNotFoundError: the folder or one of its two files is missing (the message names it).
            ValueError: the preset was made for another model (fingerprints differ), its layer count,
                layers or tensor shapes do not fit ``config``, a tensor is not finite, a file is corrupt
                (unreadable JSON or safetensors, or a tensor file whose checksum differs from the recorded
                one), or ``dtype`` is not float32/float64.
        """
        folder = Path(directory)
        info_file, weights_file = folder / PRESET_CONFIG_NAME, folder / PRESET_WEIGHTS_NAME
        if not folder.is_dir():
            raise FileNotFoundError(
                f"LaCTCache.from_pretrained: no preset folder at {str(folder)!r} (write one with "
                "cache.save_pretrained(folder, model.config))"
            )
        for file in (info_file, weights_file):
            if not file.is_file():
                raise FileNotFoundError(
                    f"LaCTCache.from_pretrained: {str(file)!r} is missing; a preset folder holds "
                    f"{PRESET_CONFIG_NAME} and {PRESET_WEIGHTS_NAME} written by LaCTCache.save_pretrained"
                )
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"LaCTCache.from_pretrained: dtype must be torch.float32 or torch.float64 (the LaCT op keeps fast "
                f"weights in one of them), got {dtype}"
            )
        try:
            info = json.loads(info_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"LaCTCache.from_pretrained: {str(info_file)!r} is corrupt (not JSON: {error})") from error
        need = ("format", "config_fingerprint", "num_layers", "batch_size", "layers_with_state", "has_momentum")
        missing = [k for k in need + ("fast_weights_sha256",) if not isinstance(info, dict) or k not in info]
        if missing:
            raise ValueError(f"LaCTCache.from_pretrained: {str(info_file)!r} is corrupt: it lacks {missing}")
        if info["format"] != PRESET_FORMAT:
            raise ValueError(
                f"LaCTCache.from_pretrained: {str(info_file)!r} has format {info['format']!r}; this version reads "
                f"format {PRESET_FORMAT}"
            )
        want = config_fingerprint(config)
        if info["config_fingerprint"] != want:
            raise ValueError(
                f"LaCTCache.from_pretrained: the preset in {str(folder)!r} was made for another model: its config "
                f"fingerprint is {info['config_fingerprint']}, this config's is {want}; load it with the config of "
                "the model that made it, or make a new preset with this model"
            )
        num_layers, batch = info["num_layers"], info["batch_size"]
        if num_layers != config.num_hidden_layers:
            raise ValueError(
                f"LaCTCache.from_pretrained: the preset has {num_layers} layers, config.num_hidden_layers is "
                f"{config.num_hidden_layers}"
            )
        layers = info["layers_with_state"]
        lact = getattr(config, "mixer", "lact") == "lact"
        if (
            not isinstance(layers, list)
            or not layers
            or len(set(layers)) != len(layers)
            or not all(isinstance(i, int) and 0 <= i < num_layers for i in layers)
            or not lact
        ):
            raise ValueError(
                f"LaCTCache.from_pretrained: layers_with_state {layers!r} does not fit a model of {num_layers} "
                f"layers with mixer={getattr(config, 'mixer', None)!r} (expected distinct layer indices in "
                f"[0, {num_layers}) of a 'lact' mixer)"
            )
        if not (isinstance(batch, int) and batch >= 1):
            raise ValueError(f"LaCTCache.from_pretrained: batch_size must be an int >= 1, got {batch!r}")
        data = weights_file.read_bytes()
        if _file_sha256(data) != info["fast_weights_sha256"]:
            raise ValueError(
                f"LaCTCache.from_pretrained: {str(weights_file)!r} is corrupt: its SHA-256 differs from the one "
                f"recorded in {PRESET_CONFIG_NAME} (truncated or modified after saving); save the preset again"
            )
        try:
            tensors = load_safetensors(data)
        except SafetensorError as error:
            raise ValueError(f"LaCTCache.from_pretrained: {str(weights_file)!r} is corrupt ({error})") from error
        H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
        shapes = {
            "w0": (batch, H, Dh, D),
            "w1": (batch, H, D, Dh),
            "w2": (batch, H, Dh, D),
            "w0_norm": (batch, H, Dh, 1),
            "w1_norm": (batch, H, D, 1),
            "w2_norm": (batch, H, Dh, 1),
        }
        if info["has_momentum"]:
            shapes.update(m0=shapes["w0"], m1=shapes["w1"], m2=shapes["w2"])
        if info.get("has_second_moment", False):
            shapes.update(v0=shapes["w0"], v1=shapes["w1"], v2=shapes["w2"], v_count=(batch, H))
        expected = {f"layers.{i}.{name}" for i in layers for name in shapes}
        if set(tensors) != expected:
            raise ValueError(
                f"LaCTCache.from_pretrained: {str(weights_file)!r} does not match {PRESET_CONFIG_NAME}: missing "
                f"{sorted(expected - set(tensors))}, unexpected {sorted(set(tensors) - expected)}"
            )
        cache = cls(num_layers)
        for i in layers:
            fields = {}
            for name, shape in shapes.items():
                t = tensors[f"layers.{i}.{name}"]
                if tuple(t.shape) != shape:
                    raise ValueError(
                        f"LaCTCache.from_pretrained: layers.{i}.{name} is {tuple(t.shape)} but this config's LaCT "
                        f"layers need {shape} (batch {batch}, num_lact_heads {H}, lact_hidden_dim {Dh}, "
                        f"lact_head_dim {D})"
                    )
                if name == "v_count":  # Adam's update count: int64, never negative
                    if t.dtype != torch.long or bool((t < 0).any()):
                        raise ValueError(
                            f"LaCTCache.from_pretrained: layers.{i}.v_count ({t.dtype}) must hold int64 counts >= 0; "
                            "the preset is unusable"
                        )
                    fields[name] = t.to(device=device)
                    continue
                if not t.is_floating_point() or not torch.isfinite(t).all():
                    raise ValueError(
                        f"LaCTCache.from_pretrained: layers.{i}.{name} ({t.dtype}) is not a finite floating-point "
                        "tensor; the preset is unusable"
                    )
                fields[name] = t.to(device=device, dtype=dtype or t.dtype)
            cache.layer_caches[i] = LaCTLayerCache(fast=FastWeightState(**fields))
        return cache

    def crop(self, max_length: int) -> None:
        raise ValueError(
            "LaCTCache cannot be cropped: fast-weight updates cannot be rewound. Keep a copy "
            "(copy.deepcopy) of the cache at the point you want to return to."
        )
