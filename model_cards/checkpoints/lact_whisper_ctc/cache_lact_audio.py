"""LaCTCache: the streaming state of a lact-audio model, as a transformers ``Cache``.

Per layer it holds the fast weights (with momentum and the tokens of a chunk still filling up) and
the attention window's keys and values; for the model it holds the front end's conv context and
how many frames and input positions the stream has consumed. Its size does not grow with the
length of the stream (except for the full-attention baseline's KV cache, which is the point of
that baseline).
"""

from dataclasses import dataclass
from typing import Optional

import torch
from transformers.cache_utils import Cache

from .lact_ops import FastWeightState


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
    ``start_new_utterance`` keeps the adapted fast weights for the next utterance of a speaker.
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

    def crop(self, max_length: int) -> None:
        raise ValueError(
            "LaCTCache cannot be cropped: fast-weight updates cannot be rewound. Keep a copy "
            "(copy.deepcopy) of the cache at the point you want to return to."
        )
