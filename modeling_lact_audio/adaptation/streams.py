"""Streams of utterances a recogniser adapts over, and one utterance run with a reset or carried state.

A *stream* is an ordered list of rows of a cached split (``encoder_cache.cache_split``): one speaker's
utterances in reading order (``session_id``, ordered by ``utterance_index``), or the utterances of one noise
condition or domain (many speakers, in corpus order, cut into sessions). Conversations and speaker changes
are built from the streams with a fixed seed.
"""

import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch

from ..cache_lact_audio import LaCTCache
from ..recogniser.heads import CachedStatesCTC
from ..recogniser.training import _states_as_arrays


@dataclass
class Stream:
    """``rows``: indices into the cached split, in order; ``name``: the group (and session) it came from."""

    name: str
    rows: list[int]


@dataclass
class Conversation:
    """Turns of 2-4 speakers: ``turns[i] = (speaker label, row index)``, in the order they are spoken."""

    name: str
    turns: list[tuple[str, int]] = field(default_factory=list)


def group_name(value) -> str:
    """The printable name of a group key (a value, or a tuple of values joined by ``/``)."""
    return "/".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def build_streams(
    dataset: datasets.Dataset,
    key: str | tuple[str, ...] = "session_id",
    session_length: int | None = None,
    max_streams: int | None = None,
    max_utterances: int | None = None,
    seed: int = 0,
) -> list[Stream]:
    """Group the rows of a cached split into ordered streams.

    Args:
        dataset: a cached split with ``uid`` and the ``key`` columns (and ``utterance_index`` for ``session_id``).
        key: a column or a tuple of columns; rows with equal values form a group. Groups keyed by
            ``session_id`` are ordered by ``utterance_index`` then ``uid`` (reading order); other groups, whose
            rows come from many speakers, by ``uid`` (corpus order: ``utterance_index`` counts within a speaker).
        session_length: cut every group into consecutive sessions of this many rows (the last may be
            shorter); None keeps each group whole.
        max_streams: keep this many streams, chosen at random with ``seed`` (then in name order); None: all.
        max_utterances: keep the first rows of each stream only; None: all.
        seed: seed of the stream choice.

    Returns:
        streams sorted by name; each ``Stream.rows`` is a list of row indices ``[n_i]``.
    """
    keys = (key,) if isinstance(key, str) else tuple(key)
    missing = [c for c in (*keys, "uid") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"build_streams: the split has no column {missing} (columns: {dataset.column_names}); a cache made "
            "before encoder_cache kept session_id and utterance_index must be encoded again"
        )
    by_session = keys == ("session_id",)
    if by_session and "utterance_index" not in dataset.column_names:
        raise ValueError("build_streams: streams by session_id need the utterance_index column (re-encode the split)")
    if session_length is not None and session_length < 1:
        raise ValueError(f"session_length must be >= 1 or None, got {session_length}")
    columns = [dataset[c] for c in keys]
    uids = dataset["uid"]
    order_index = dataset["utterance_index"] if by_session else [0] * len(uids)
    groups: dict = {}
    for i, values in enumerate(zip(*columns)):
        groups.setdefault(values if len(keys) > 1 else values[0], []).append(i)
    streams = []
    for value, rows in groups.items():
        rows = sorted(rows, key=lambda i: (order_index[i], uids[i]))
        name = group_name(value)
        if session_length is None:
            streams.append(Stream(name, rows))
        else:
            for s, start in enumerate(range(0, len(rows), session_length)):
                streams.append(Stream(f"{name}#{s}", rows[start : start + session_length]))
    streams.sort(key=lambda s: s.name)
    if max_streams is not None and max_streams < len(streams):
        keep = sorted(np.random.default_rng(seed).permutation(len(streams))[:max_streams])
        streams = [streams[int(i)] for i in keep]
    if max_utterances is not None:
        streams = [Stream(s.name, s.rows[:max_utterances]) for s in streams]
    return streams


def build_conversations(
    streams: list[Stream], turns_per_speaker: int = 5, speakers: tuple[int, int] = (2, 4), seed: int = 0
) -> list[Conversation]:
    """Conversations of distinct speakers' streams: each stream joins at most one conversation.

    The streams are shuffled with ``seed`` and taken in groups of ``speakers[0]..speakers[1]`` (drawn
    uniformly); each speaker speaks its stream's first ``turns_per_speaker`` utterances, in order, and the
    turns of the speakers are interleaved in a random order. Streams left over once fewer than
    ``speakers[0]`` remain join no conversation. The speaker label of a turn is its stream's name.

    Returns:
        the conversations; ``turns`` of each is ``[(speaker label, row index), ...]``.
    """
    low, high = speakers
    if not 2 <= low <= high:
        raise ValueError(f"speakers must be (low, high) with 2 <= low <= high, got {speakers}")
    rng = np.random.default_rng(seed)
    order = [streams[int(i)] for i in rng.permutation(len(streams))]
    conversations = []
    while len(order) >= low:
        size = int(rng.integers(low, high + 1))
        group, order = order[:size], order[size:]
        queues = {s.name: list(s.rows[:turns_per_speaker]) for s in group}
        labels = [name for name, rows in queues.items() for _ in rows]
        turns = [(label, queues[label].pop(0)) for label in (labels[int(i)] for i in rng.permutation(len(labels)))]
        conversations.append(Conversation(f"conversation {len(conversations)}", turns))
    return conversations


def speaker_change_pairs(streams: list[Stream], before: int = 5, seed: int = 0) -> list[tuple[Stream, Stream]]:
    """``(A, B)`` pairs of distinct streams for the speaker-change protocol: each stream with at least ``before``
    utterances is ``B`` once and ``A`` (the previous speaker) once, in a seeded shuffled cycle."""
    eligible = [s for s in streams if len(s.rows) >= before]
    if len(eligible) < 2:
        raise ValueError(f"a speaker change needs two streams with >= {before} utterances, got {len(eligible)}")
    order = [eligible[int(i)] for i in np.random.default_rng(seed).permutation(len(eligible))]
    return [(order[i], order[(i + 1) % len(order)]) for i in range(len(order))]


def carries_state(head) -> bool:
    """Whether ``head`` has fast weights to carry (a ``CachedStatesCTC`` whose mixer is ``"lact"``)."""
    return isinstance(head, CachedStatesCTC) and head.config.mixer == "lact"


def new_cache(head) -> LaCTCache:
    """A reset state for ``head`` (no fast-weight update yet)."""
    return LaCTCache(head.config.num_hidden_layers)


class UtteranceReader:
    """Row access to a cached split: ``reader[i]`` -> ``states`` float16 ``[T, d]`` (numpy), read once each."""

    def __init__(self, dataset: datasets.Dataset):
        self.dataset = _states_as_arrays(dataset)
        self._states: dict[int, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._states:
            self._states[i] = np.asarray(self.dataset[int(i)]["states"])
        return self._states[i]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def utterance_inputs(states: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance as a head reads it: ``frontend_states`` float32 ``[1, T, d]`` and ``attention_mask`` long
    ``[1, T]`` (all ones) from cached states ``[T, d]``."""
    x = torch.as_tensor(np.asarray(states), dtype=torch.float32, device=device)[None]
    return x, torch.ones(x.shape[:2], dtype=torch.long, device=device)


@torch.no_grad()
def run_utterance(head, states: np.ndarray, cache: LaCTCache | None = None):
    """Transcribe one utterance from ``cache`` (None: no state, as a reset head reads one utterance).

    Args:
        head: a recogniser head in eval mode (``CachedStatesCTC`` or ``BiLSTMCTCHead``).
        states: cached encoder states ``[T, d_model]`` (float16 or float32).
        cache: the fast-weight state to start from; ``start_new_utterance()`` is called on it first and the
            forward updates it in place (its fast weights then carry this utterance).

    Returns:
        ``(log_probs, cache, seconds)``: float32 ``[T', V]`` log-probabilities on the CPU, the updated cache
        (None without one) and the wall seconds of the forward.
    """
    device = next(head.parameters()).device
    x, mask = utterance_inputs(states, device)
    if cache is not None:
        cache.start_new_utterance()
    _synchronize(device)
    start = time.perf_counter()
    out = head(x, mask, past_key_values=cache, use_cache=cache is not None)
    log_probs = torch.log_softmax(out.logits[0, : int(out.output_lengths[0])].float(), -1)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return log_probs.cpu(), (out.past_key_values if cache is not None else None), seconds
