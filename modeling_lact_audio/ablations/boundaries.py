"""Chunk boundaries given per frame: fixed multiples, or moved to the audio's pauses.

The recogniser trainer reads only ``states`` and ``labels`` of a row, so the boundaries travel with the
states as one extra feature channel (1 at a frame that ends a chunk, else 0) and
:class:`ChunkEndsChannelCTC` splits it off into ``lact_chunk_ends``. SpecAugment zeroes that channel where
it masks a frame or a feature band (a lost boundary); the fixed and pause variants of a study both go
through this head, so both lose boundaries alike.
"""

import numpy as np

from ..recogniser.heads import CachedStatesCTC


def chunk_end_flags(num_frames: int, chunk_size: int, pauses=(), tolerance: int = 0) -> np.ndarray:
    """``[T]`` bool: True at the last frame of each chunk.

    Chunks are ``chunk_size`` frames (fixed multiples: ends at ``chunk_size - 1``, ``2 * chunk_size - 1``, ...)
    except that each end moves to the pause frame nearest to it within ``tolerance`` frames (a pause frame
    ``p`` ends its chunk at ``p``; ties go to the earlier one), never closer than ``chunk_size // 2`` frames to
    the previous end. With ``tolerance=0`` or no pause the chunks are the fixed ones; the last, partial chunk
    has no flag (the op ends it at the sequence's end).
    """
    flags = np.zeros(num_frames, dtype=bool)
    pauses = np.asarray(sorted(pauses), dtype=np.int64)
    last = -1
    while True:
        target = last + chunk_size
        if target >= num_frames:
            break
        end = target
        if tolerance > 0 and len(pauses):
            near = pauses[(np.abs(pauses - target) <= tolerance) & (pauses >= last + max(1, chunk_size // 2))]
            near = near[near < num_frames]
            if len(near):
                end = int(near[np.argmin(np.abs(near - target))])
        flags[end] = True
        last = end
    return flags


def with_flag_channel(states: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """States ``[T, d]`` with the flags ``[T]`` appended as channel ``d`` (same dtype): ``[T, d + 1]``."""
    return np.concatenate([states, flags[:, None].astype(states.dtype)], axis=1)


class ChunkEndsChannelCTC(CachedStatesCTC):
    """A ``CachedStatesCTC`` reading states ``[B, T, d_model + 1]`` whose last channel marks chunk ends.

    ``forward(frontend_states [B, T, d_model + 1], attention_mask [B, T], ...)`` passes
    ``frontend_states[..., :-1]`` on and ``lact_chunk_ends = frontend_states[..., -1] > 0.5`` ([B, T] bool).
    """

    def forward(self, frontend_states, attention_mask, labels=None, past_key_values=None, use_cache=None):
        ends = frontend_states[..., -1] > 0.5
        return super().forward(
            frontend_states[..., :-1],
            attention_mask,
            labels=labels,
            past_key_values=past_key_values,
            use_cache=use_cache,
            lact_chunk_ends=ends & attention_mask.bool(),
        )


def flagged_split(dataset, chunk_size: int, pauses: dict | None, tolerance: int):
    """A cached split whose ``states`` carry the chunk-end channel (in memory; ``pauses``: uid -> frames)."""
    import datasets

    d_model = len(dataset[0]["states"][0])
    features = dataset.features.copy()
    features["states"] = datasets.Array2D(shape=(None, d_model + 1), dtype="float16")

    def add(batch):
        out = []
        for uid, states in zip(batch["uid"], batch["states"]):
            states = np.asarray(states)
            flags = chunk_end_flags(len(states), chunk_size, (pauses or {}).get(uid, ()), tolerance)
            out.append(with_flag_channel(states, flags))
        return {"states": out}

    return (
        dataset.with_format("numpy", columns=["states"], output_all_columns=True)
        .map(add, batched=True, batch_size=64, features=features, keep_in_memory=True, desc="chunk ends")
        .with_format(None)
    )
