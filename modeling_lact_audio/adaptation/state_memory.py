"""Does a carried fast-weight state remember an earlier utterance, and does the head read what it remembers?

For a stream ``u_0, u_1, ..., u_N`` of one speaker, :func:`state_memory` runs ``u_0`` from the reset state
(fast weights ``W_A``; the initial weights are ``W_0``), then ``u_1 .. u_n`` twice: carried on from ``W_A`` and
from a reset state. After ``n`` utterances it measures

- ``retention``: ``||W_carried - W_reset|| / ||W_A - W_0||``, how much of the displacement ``u_0`` caused is
  still in the state (1: all of it, 0: forgotten; the updates are not additive, so this is a distance ratio);
- ``logit_change``: ``||l_carried - l_reset|| / ||l_reset||`` of ``u_n``'s log-probabilities, how much the
  head's output depends on what is left;
- ``frame_disagreement``: the share of ``u_n``'s frames whose greedy (argmax) token differs.

For scale, ``own_update_change`` / ``own_update_frames`` measure the same two things for ``u_0``'s own updates:
its log-probabilities from the reset state against the same with the fast weights frozen at ``W_0`` (rates x 0).

A state that is retained but barely changes the output is a head that does not read its fast weights for
adaptation; a state that is forgotten within an utterance cannot adapt at all.
"""

import numpy as np

from .fast_weight_stats import fast_weight_vector, initial_fast_weight_vector
from .reliance import scaled_lact_rates
from .streams import carries_state, new_cache, run_utterance

MEASURES = (
    "retention",
    "logit_change",
    "frame_disagreement",
    "displacement",
    "own_update_change",
    "own_update_frames",
)


def state_memory(head, utterances: list[np.ndarray], horizon: int) -> list[dict]:
    """The memory of ``utterances[0]`` in the state after each of the next ``horizon`` utterances.

    Args:
        head: a recogniser head with LaCT fast weights (``CachedStatesCTC``, mixer ``"lact"``), eval mode.
        utterances: cached encoder states ``[T_i, d_model]`` of one stream, in order (at least 2).
        horizon: utterances after the first to follow (at most ``len(utterances) - 1`` are used).

    Returns:
        one dict per ``n = 1 .. min(horizon, len(utterances) - 1)``: ``{"n", "retention", "logit_change",
        "frame_disagreement", "displacement", "own_update_change", "own_update_frames"}`` (``displacement``:
        ``||W_A - W_0|| / ||W_0||``; the last two are ``u_0``'s, the same in every record of the stream).

    Raises:
        ValueError: the head has no fast weights, fewer than 2 utterances, or ``horizon < 1``.
    """
    if not carries_state(head):
        raise ValueError(f"state_memory needs a head with LaCT fast weights, got {type(head).__name__}")
    if len(utterances) < 2 or horizon < 1:
        raise ValueError(f"need >= 2 utterances and horizon >= 1, got {len(utterances)} and {horizon}")
    w0 = initial_fast_weight_vector(head)
    log_0, carried, _ = run_utterance(head, utterances[0], new_cache(head))
    with scaled_lact_rates(head, 0.0):
        frozen = run_utterance(head, utterances[0], None)[0]
    own = {
        "own_update_change": float((log_0 - frozen).norm() / frozen.norm()),
        "own_update_frames": float((log_0.argmax(-1) != frozen.argmax(-1)).float().mean()),
    }
    w_a = fast_weight_vector(carried)
    displacement = float((w_a - w0).norm())
    reset = new_cache(head)
    out = []
    for n in range(1, min(horizon, len(utterances) - 1) + 1):
        log_c, carried, _ = run_utterance(head, utterances[n], carried)
        log_r, reset, _ = run_utterance(head, utterances[n], reset)
        gap = float((fast_weight_vector(carried) - fast_weight_vector(reset)).norm())
        out.append(
            {
                "n": n,
                "retention": gap / displacement if displacement > 0 else 0.0,
                "logit_change": float((log_c - log_r).norm() / log_r.norm()),
                "frame_disagreement": float((log_c.argmax(-1) != log_r.argmax(-1)).float().mean()),
                "displacement": displacement / float(w0.norm()),
                **own,
            }
        )
    return out


def summarize_memory(records: list[dict], samples: int = 2000, seed: int = 0) -> list[dict]:
    """Per ``n``: the mean of each measure over streams with a 95% bootstrap interval (``scipy.stats.bootstrap``).

    Args:
        records: ``state_memory`` outputs of many streams, concatenated.

    Returns:
        ``[{"n", "streams", "<measure>": [mean, low, high], ...}]`` in order of ``n``.
    """
    from scipy.stats import bootstrap

    out = []
    for n in sorted({r["n"] for r in records}):
        at = [r for r in records if r["n"] == n]
        entry = {"n": n, "streams": len(at)}
        for key in MEASURES:
            values = np.asarray([r[key] for r in at], dtype=np.float64)
            if len(values) > 1 and np.ptp(values) > 0:
                ci = bootstrap((values,), np.mean, n_resamples=samples, random_state=seed).confidence_interval
                low, high = float(ci.low), float(ci.high)
            else:
                low = high = float(values.mean())
            entry[key] = [float(values.mean()), low, high]
        out.append(entry)
    return out


def memory_of_streams(head, reader, streams, horizon: int) -> list[dict]:
    """``state_memory`` of every stream with at least 2 utterances (``reader[row]`` gives a row's states);
    each record also names its ``stream``."""
    records = []
    for stream in streams:
        if len(stream.rows) < 2:
            continue
        states = [reader[row] for row in stream.rows[: horizon + 1]]
        records += [{**r, "stream": stream.name} for r in state_memory(head, states, horizon)]
    return records
