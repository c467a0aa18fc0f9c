"""A tiny synthetic corpus of session recordings for the generation tests (the LM ablation grid, the
generation study): tone "sessions" in the corpus' ``datasets`` layout."""

import io

import datasets
import numpy as np
import soundfile as sf


def tone_session_wav(seconds: float, seed: int) -> dict:
    """A "session": tones that change every 0.3 s, over a little noise, as a 16 kHz wav audio cell."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    freq = rng.choice([150.0, 300.0, 600.0, 1200.0], size=int(seconds / 0.3) + 1)[(t / 0.3).astype(int)]
    audio = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


def session_split(name: str, seconds: list[float], seed: int, speakers: list[str] | None = None) -> datasets.Dataset:
    """A split of ``len(seconds)`` tone sessions (uids ``<name>-0000``...), with a ``speaker`` column if given."""
    rows = {
        "uid": [f"{name}-{i:04d}" for i in range(len(seconds))],
        "audio": [tone_session_wav(s, seed + i) for i, s in enumerate(seconds)],
        "text": ["a session"] * len(seconds),
        "duration": seconds,
    }
    if speakers is not None:
        rows["speaker"] = speakers
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=16000))
