"""What one trained head is measured on: error rates per split, adaptation gain, speed and memory.

Memory is the process's resident set size (psutil RSS) sampled every 50 ms by a thread while the head
trains: ``peak_rss_mib`` is its peak, ``peak_rss_increase_mib`` the peak minus the RSS when training
started (the data are loaded by then, so it is mostly the training's own activations, gradients and
optimiser state; freed memory the allocator keeps from an earlier run of the same process lowers it).
"""

import threading
import time

import numpy as np
import psutil

from ..adaptation.protocols import k_context
from ..adaptation.statistics import score_protocol
from ..adaptation.streams import build_streams, carries_state
from ..asr import normalize_for_scoring
from ..recogniser.evaluation import score_split
from ..recogniser.training import cached_logits, greedy_texts

ENCODER_FRAME_RATE = 50


class PeakRSS:
    """``with PeakRSS() as m: ...`` then ``m.peak_mib``, ``m.start_mib`` (RSS sampled every ``interval`` s)."""

    def __init__(self, interval: float = 0.05):
        self.interval, self._process = interval, psutil.Process()
        self._stop = threading.Event()
        self.start_mib = self.peak_mib = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start_mib = self.peak_mib = self._process.memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._process.memory_info().rss / 2**20)


def audio_seconds(dataset) -> np.ndarray:
    """Seconds of every row ``[N]``: the ``duration`` column, else encoder frames / 50."""
    if "duration" in dataset.column_names:
        return np.asarray(dataset["duration"], dtype=np.float64)
    return np.asarray(dataset["num_frames"], dtype=np.float64) / ENCODER_FRAME_RATE


def score_head(head, dataset, tokenizer) -> dict:
    """Greedy WER/CER of ``head`` on a cached split, with per-utterance counts, durations and the time taken.

    Returns :func:`~modeling_lact_audio.recogniser.evaluation.score_split`'s entry plus ``uids``,
    ``seconds`` (per utterance ``[N]``), ``head_seconds`` (the forwards) and ``audio_seconds``.
    """
    start = time.perf_counter()
    log_probs = cached_logits(head, dataset)
    head_seconds = time.perf_counter() - start
    references = [normalize_for_scoring(t) for t in dataset["text"]]
    predictions = [normalize_for_scoring(t) for t in greedy_texts(log_probs, tokenizer)]
    entry = score_split(references, predictions)
    seconds = audio_seconds(dataset)
    entry.update(
        uids=list(dataset["uid"]),
        seconds=seconds.tolist(),
        head_seconds=head_seconds,
        audio_seconds=float(seconds.sum()),
    )
    return entry


def adaptation_gain(head, dataset, tokenizer, k: int) -> dict | None:
    """Relative WER change at ``k`` earlier utterances carried vs a reset state (the speaker protocol).

    ``dataset``: the adaptation rows (``data.adaptation_rows``: whole streams in order). Returns None for a
    head without fast weights; else ``{"k", "relative_change", "relative_change_ci", "p_value", "utterances",
    "reference_wer", "wer", "uids", "reset_word_errors", "carried_word_errors", "words"}`` (negative: carrying
    helps), the counts on the utterances both conditions transcribed, aligned by ``uids``.
    """
    if not carries_state(head):
        return None
    streams = build_streams(dataset, "session_id")
    result = k_context(head, dataset, streams, ks=(0, k), desc=f"adaptation k={k}")
    scored = score_protocol(result, lambda lps: greedy_texts(lps, tokenizer))
    carried = scored["conditions"].get(f"k={k}")
    if carried is None:
        raise ValueError(f"no adaptation stream has more than k={k} utterances: raise max_utterances")
    reset = scored["conditions"]["k=0"]
    index = {u: i for i, u in enumerate(reset["uids"])}
    rows = [index[u] for u in carried["uids"]]
    return {
        "k": k,
        **{key: carried["vs_baseline"][key] for key in ("relative_change", "relative_change_ci", "p_value")},
        **{key: carried["vs_baseline"][key] for key in ("utterances", "reference_wer", "wer")},
        "uids": carried["uids"],
        "reset_word_errors": [reset["counts"]["word_errors"][i] for i in rows],
        "carried_word_errors": carried["counts"]["word_errors"],
        "words": carried["counts"]["words"],
    }
