"""Test-time adaptation protocols of a recogniser head over a cached split: per-utterance log-probs and timings.

Every protocol transcribes the same utterances under several *conditions* (how the fast-weight state an
utterance starts from was obtained) and returns a :class:`ProtocolResult`; scoring is
:mod:`modeling_lact_audio.adaptation.statistics`. Nothing here reads labels except the supervised
fine-tuning baseline (:mod:`modeling_lact_audio.adaptation.gradient_protocols`): carrying a state uses the
unlabelled encoder states only.

- :func:`k_context`: reset, run the k previous utterances of a stream, transcribe (k = 0 is the reset
  baseline), and the state carried from the stream's start (``"carry all"``);
- :func:`conversation`: interleaved speakers with one state per speaker, one shared state, or a reset;
- :func:`speaker_change`: a state carried over speaker A, then kept onward on speaker B, against B reset
  and B's own state reset at the change;
- :func:`presets`: a state adapted on a group's first utterances, saved as a ``LaCTCache`` preset and
  loaded for each new utterance of the group;
- :func:`evolution`: how far the fast weights move over a stream, and a 2-D map of them.
"""

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from ..cache_lact_audio import LaCTCache
from .streams import (
    Conversation,
    Stream,
    UtteranceReader,
    carries_state,
    group_name,
    new_cache,
    run_utterance,
    utterance_inputs,
)

ROW_COLUMNS = ("text", "speaker", "condition", "snr_db", "domain")
RESET, CARRY_ALL = "k=0", "carry all"


@dataclass
class Transcribed:
    """One utterance under one condition: ``log_probs`` float32 ``[T', V]``, ``seconds`` of its forward(s) (with
    any gradient steps of its own), ``context_seconds`` spent only to adapt the state it starts from."""

    log_probs: torch.Tensor
    seconds: float
    context_seconds: float = 0.0


@dataclass
class ProtocolResult:
    """What a protocol measured.

    Attributes:
        rows: uid -> ``{"text", "speaker", "condition", "snr_db", "domain", "stream", "position"}`` of every
            transcribed utterance (``position``: its place in the stream the protocol reads).
        conditions: condition name -> uid -> :class:`Transcribed` (a condition may cover a subset of rows).
        baseline: the condition every other is compared with, on the utterances both cover.
        comparisons: ``(reference, condition)`` pairs to test besides each condition against ``baseline``.
        info: protocol settings and timings that are not per utterance.
    """

    rows: dict = field(default_factory=dict)
    conditions: dict = field(default_factory=dict)
    baseline: str = RESET
    comparisons: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def row_table(dataset: datasets.Dataset) -> list[dict]:
    """The metadata of every row (no states): ``uid`` plus :data:`ROW_COLUMNS` present in the split."""
    columns = ["uid", *[c for c in ROW_COLUMNS if c in dataset.column_names]]
    table = dataset.select_columns(columns).to_dict()
    return [{c: table[c][i] for c in columns} for i in range(len(dataset))]


def _require_carry(head, protocol: str) -> None:
    if not carries_state(head):
        raise ValueError(
            f"{protocol} needs a head with LaCT fast weights to carry (a CachedStatesCTC with mixer='lact'), "
            f"got {type(head).__name__}"
        )


def k_context(
    head, dataset: datasets.Dataset, streams: list[Stream], ks=(0, 1, 2, 5, 10), desc: str = "k-context"
) -> ProtocolResult:
    """Transcribe each utterance n of each stream after a reset state ran its k previous utterances.

    Conditions ``"k=<k>"`` (utterances with at least k predecessors; ``"k=0"`` is the reset baseline) and
    ``"carry all"`` (the state carried from the stream's start, what a deployed stream does). A head without
    fast weights gets ``"k=0"`` only.

    The state after the j previous utterances of n is the state after the j - 1 previous utterances of n - 1,
    run on utterance n - 1: each forward transcribes one utterance at one context length and yields the
    state of the next one, so a stream of N costs about ``N * (max(ks) + 1)`` forwards, exactly the
    separate runs' results; for n <= max(ks) the j = n forward is also ``"carry all"``, which runs on by
    itself after that. ``context_seconds`` of ``"k=<k>"`` is the time of its k context forwards.

    Args:
        head: a recogniser head in eval mode.
        dataset: the cached split; streams: from :func:`~modeling_lact_audio.adaptation.streams.build_streams`.
        ks: context lengths; must include 0.
        desc: the progress bar's label.

    Returns:
        a :class:`ProtocolResult` with baseline ``"k=0"``; ``rows[uid]["position"]`` is n.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] != 0:
        raise ValueError(f"ks must include 0 (the reset baseline) and be >= 0, got {ks}")
    carry = carries_state(head)
    if not carry:
        ks = [0]
    K, reader, table = ks[-1], UtteranceReader(dataset), row_table(dataset)
    result = ProtocolResult(conditions={f"k={k}": {} for k in ks}, info={"ks": ks})
    if carry:
        result.conditions[CARRY_ALL] = {}
    for stream in tqdm(streams, desc=desc):
        seconds, carried, from_start = {}, {}, None  # (n, j) -> seconds; j -> state after j previous utterances
        for n, row in enumerate(stream.rows):
            uid, last = table[row]["uid"], n == len(stream.rows) - 1
            result.rows[uid] = {**table[row], "stream": stream.name, "position": n}
            states, following = reader[row], {}
            for j in range(min(n, K) + 1):
                if last and j not in ks and j != n:
                    continue  # its state would only serve a next utterance
                cache = (carried.pop(j) if j else new_cache(head)) if carry else None
                log_probs, cache, seconds[n, j] = run_utterance(head, states, cache)
                if carry and j < K:
                    following[j + 1] = cache
                if j in ks:
                    context = sum(seconds[n - i, j - i] for i in range(1, j + 1))
                    result.conditions[f"k={j}"][uid] = Transcribed(log_probs, seconds[n, j], context)
                if carry and j == n:  # every previous utterance ran: the state carried from the stream's start
                    result.conditions[CARRY_ALL][uid] = Transcribed(log_probs, seconds[n, j])
                    from_start = cache
            if carry and n > K:
                log_probs, from_start, t = run_utterance(head, states, from_start)
                result.conditions[CARRY_ALL][uid] = Transcribed(log_probs, t)
            carried = following
    return result


def conversation(head, dataset: datasets.Dataset, conversations: list[Conversation]) -> ProtocolResult:
    """Transcribe interleaved turns of 2-4 speakers (speaker labels given).

    Conditions: ``"reset"`` (baseline), ``"shared state"`` (one state carried over every turn) and
    ``"per-speaker states"`` (one state per speaker label, carried over that speaker's turns only).
    ``rows[uid]["position"]`` is the turn's index in its conversation, ``"speaker_turn"`` its index among
    its speaker's turns.
    """
    _require_carry(head, "conversation")
    reader, table = UtteranceReader(dataset), row_table(dataset)
    result = ProtocolResult(
        conditions={"reset": {}, "shared state": {}, "per-speaker states": {}},
        baseline="reset",
        comparisons=[("shared state", "per-speaker states")],
    )
    for conv in tqdm(conversations, desc="conversations"):
        shared, own, count = new_cache(head), {}, {}
        for t, (label, row) in enumerate(conv.turns):
            uid, states = table[row]["uid"], reader[row]
            result.rows[uid] = {
                **table[row],
                "stream": conv.name,
                "position": t,
                "speaker_label": label,
                "speaker_turn": count.get(label, 0),
            }
            count[label] = count.get(label, 0) + 1
            log_probs, _, s = run_utterance(head, states, new_cache(head))
            result.conditions["reset"][uid] = Transcribed(log_probs, s)
            log_probs, shared, s = run_utterance(head, states, shared)
            result.conditions["shared state"][uid] = Transcribed(log_probs, s)
            log_probs, own[label], s = run_utterance(head, states, own[label] if label in own else new_cache(head))
            result.conditions["per-speaker states"][uid] = Transcribed(log_probs, s)
    return result


def speaker_change(
    head, dataset: datasets.Dataset, pairs: list[tuple[Stream, Stream]], before: int = 5, after: int = 5
) -> ProtocolResult:
    """Does a state carried over speaker A hurt speaker B, and how fast does it recover?

    For each ``(A, B)`` pair (:func:`~modeling_lact_audio.adaptation.streams.speaker_change_pairs`) a state
    runs A's first ``before`` utterances, then B's first ``after`` utterances are transcribed with it carried
    onward (``"carried from A"``), each from a reset state (``"reset"``, the baseline) and with a state reset
    at the change and carried within B (``"reset on speaker change"``: the policy when a speaker label is
    given). ``rows[uid]["position"]`` is 1..after, the utterance's place after the change.
    """
    _require_carry(head, "speaker_change")
    reader, table = UtteranceReader(dataset), row_table(dataset)
    names = ("reset", "carried from A", "reset on speaker change")
    result = ProtocolResult(
        conditions={n: {} for n in names},
        baseline="reset",
        comparisons=[("reset on speaker change", "carried from A")],
        info={"before": before, "after": after, "pairs": [[a.name, b.name] for a, b in pairs]},
    )
    for a, b in tqdm(pairs, desc="speaker changes"):
        carried = new_cache(head)
        for row in a.rows[:before]:
            _, carried, _ = run_utterance(head, reader[row], carried)
        own = new_cache(head)
        for p, row in enumerate(b.rows[:after], start=1):
            uid, states = table[row]["uid"], reader[row]
            result.rows[uid] = {**table[row], "stream": f"{a.name} -> {b.name}", "position": p}
            log_probs, _, s = run_utterance(head, states, new_cache(head))
            result.conditions["reset"][uid] = Transcribed(log_probs, s)
            log_probs, carried, s = run_utterance(head, states, carried)
            result.conditions["carried from A"][uid] = Transcribed(log_probs, s)
            log_probs, own, s = run_utterance(head, states, own)
            result.conditions["reset on speaker change"][uid] = Transcribed(log_probs, s)
    return result


def preset_folder_name(group: str) -> str:
    """A folder name for a group's preset (``white/5.0`` -> ``white_5.0``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", group).strip("_") or "group"


def presets(head, dataset: datasets.Dataset, streams: list[Stream], folder: str, adapt: int = 10) -> ProtocolResult:
    """Adapt on a group's first ``adapt`` unlabelled utterances, keep the state as a preset, reuse it.

    For each stream (a whole domain or noise condition, in order) the state after its first ``adapt``
    utterances is saved with ``LaCTCache.save_pretrained`` in ``folder/<group>``; each later utterance is
    transcribed from ``LaCTCache.from_pretrained`` of it (``"preset"``: reset to the preset every utterance;
    ``context_seconds`` is the load), from a reset state (``"reset"``, the baseline) and with the state
    carried on from the adaptation utterances (``"carried"``). Streams of ``adapt`` utterances or fewer are
    skipped (listed in ``info["skipped"]``). ``rows[uid]["position"]`` counts from the first later utterance.
    """
    _require_carry(head, "presets")
    if adapt < 1:
        raise ValueError(f"adapt must be >= 1, got {adapt}")
    reader, table = UtteranceReader(dataset), row_table(dataset)
    device = next(head.parameters()).device
    result = ProtocolResult(
        conditions={"reset": {}, "preset": {}, "carried": {}},
        baseline="reset",
        comparisons=[("preset", "carried")],
        info={"adapt": adapt, "adapt_seconds": {}, "preset_folders": {}, "skipped": []},
    )
    for stream in tqdm(streams, desc="presets"):
        if len(stream.rows) <= adapt:
            result.info["skipped"].append(stream.name)
            continue
        cache, spent = new_cache(head), 0.0
        for row in stream.rows[:adapt]:
            _, cache, s = run_utterance(head, reader[row], cache)
            spent += s
        target = Path(folder) / preset_folder_name(stream.name)
        cache.save_pretrained(target, head.config)
        result.info["adapt_seconds"][stream.name] = spent
        result.info["preset_folders"][stream.name] = str(target)
        for n, row in enumerate(stream.rows[adapt:]):
            uid, states = table[row]["uid"], reader[row]
            result.rows[uid] = {**table[row], "stream": stream.name, "position": n}
            log_probs, _, s = run_utterance(head, states, new_cache(head))
            result.conditions["reset"][uid] = Transcribed(log_probs, s)
            start = time.perf_counter()
            loaded = LaCTCache.from_pretrained(target, head.config, device=device)
            load = time.perf_counter() - start
            log_probs, _, s = run_utterance(head, states, loaded)
            result.conditions["preset"][uid] = Transcribed(log_probs, s, load)
            log_probs, cache, s = run_utterance(head, states, cache)
            result.conditions["carried"][uid] = Transcribed(log_probs, s)
    return result


def evolution(
    head, dataset: datasets.Dataset, streams: list[Stream], label: str | tuple[str, ...] = "speaker"
) -> tuple[dict, ProtocolResult]:
    """How the fast weights move over each stream, and the WER of carried against reset by position.

    Returns:
        ``(trace, result)``. ``trace["streams"]``: per stream its ``name``, ``label`` (the ``label`` column,
        or columns joined by ``/``, of its first row) and per utterance ``update_norm``,
        ``relative_update_norm``, ``distance_from_initial`` and ``relative_distance`` (``evolution_trace`` of
        :mod:`~modeling_lact_audio.adaptation.fast_weight_stats`); ``trace["projection"]``: ``points``
        ``[M, 2]`` (``project_2d`` of every stream's states, the shared initial weights first), with
        ``stream``, ``position`` (0: the initial weights, i: after utterance i) and ``label`` per point.
        ``result``: conditions ``"reset"`` (baseline) and ``"carried"`` on the same utterances.
    """
    from .fast_weight_stats import evolution_trace, initial_fast_weight_vector, project_2d

    _require_carry(head, "evolution")
    reader, table = UtteranceReader(dataset), row_table(dataset)
    device = next(head.parameters()).device
    trace = {"label_column": group_name(label), "streams": []}
    vectors = [initial_fast_weight_vector(head)[None]]
    points = {"stream": [None], "position": [0], "label": [None]}
    result = ProtocolResult(conditions={"reset": {}, "carried": {}}, baseline="reset")
    for stream in tqdm(streams, desc="evolution"):
        utterances = []
        for row in stream.rows:
            x, mask = utterance_inputs(reader[row], device)
            utterances.append({"frontend_states": x, "attention_mask": mask})
        steps = evolution_trace(head, utterances)
        columns = (label,) if isinstance(label, str) else tuple(label)
        group = group_name(tuple(table[stream.rows[0]].get(c) for c in columns))
        keys = ("update_norm", "relative_update_norm", "distance_from_initial", "relative_distance")
        trace["streams"].append({"name": stream.name, "label": group, **{k: steps[k] for k in keys}})
        vectors.append(steps["vectors"][1:])
        n = len(stream.rows)
        points["stream"] += [stream.name] * n
        points["position"] += list(range(1, n + 1))
        points["label"] += [group] * n
        cache = new_cache(head)
        for p, row in enumerate(stream.rows):
            uid = table[row]["uid"]
            result.rows[uid] = {**table[row], "stream": stream.name, "position": p}
            log_probs, _, s = run_utterance(head, reader[row], new_cache(head))
            result.conditions["reset"][uid] = Transcribed(log_probs, s)
            log_probs, cache, s = run_utterance(head, reader[row], cache)
            result.conditions["carried"][uid] = Transcribed(log_probs, s)
    trace["projection"] = {"points": project_2d(torch.cat(vectors)).tolist(), **points}
    return trace, result
