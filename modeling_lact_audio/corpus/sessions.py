"""Long-form recordings: one speaker's utterances joined with pauses, with each utterance's times."""

import numpy as np

from ..data import SAMPLING_RATE
from .engines import synthesize
from .voices import Speaker

MIN_UTTERANCES, MAX_UTTERANCES = 10, 60
PAUSE_S = (0.3, 1.5)
EDGE_S = 0.5


def _spoken(speaker: Speaker, texts: list[str]):
    # Ten at a time: one festival process per batch, and little synthesised past the target length.
    for first in range(0, len(texts), 10):
        batch = texts[first : first + 10]
        yield from zip(batch, synthesize([(speaker, t) for t in batch]))


def build_session(speaker: Speaker, candidates: list[str], target_s: float, rng: np.random.Generator):
    """Read sentences one after another until the session is long enough.

    Takes: the ``speaker``, up to 60 spelled-out ``candidates`` read in order, ``target_s`` seconds and a
    generator for the pauses. Returns: (float32 audio [T] at 16 kHz, texts, starts_s, ends_s): at least
    10 and at most 60 utterances, stopping at the first one that reaches ``target_s``; 0.5 s of silence
    opens and closes the recording and 0.3-1.5 s separates utterances.
    """
    pieces = [np.zeros(int(EDGE_S * SAMPLING_RATE), np.float32)]
    texts, starts, ends = [], [], []
    cursor = len(pieces[0])
    for text, audio in _spoken(speaker, candidates[:MAX_UTTERANCES]):
        if texts:
            pause = np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLING_RATE), np.float32)
            pieces.append(pause)
            cursor += len(pause)
        texts.append(text)
        starts.append(cursor / SAMPLING_RATE)
        pieces.append(audio)
        cursor += len(audio)
        ends.append(cursor / SAMPLING_RATE)
        if len(texts) >= MIN_UTTERANCES and cursor / SAMPLING_RATE + EDGE_S >= target_s:
            break
    pieces.append(np.zeros(int(EDGE_S * SAMPLING_RATE), np.float32))
    return np.concatenate(pieces), texts, starts, ends
