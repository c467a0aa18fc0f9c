"""The corpus on disk: splits, audio cells and durations, shared by training, evaluation and the demo.

A corpus is a ``datasets.DatasetDict`` saved with ``save_to_disk`` (``run_scripts/make_corpus.py``
writes one): every split has an ``audio`` column (16 kHz mono wav/flac bytes) and a ``text`` column.
Rows are returned with *undecoded* audio, so reading a split costs nothing until a cell is read
with :func:`read_audio`.
"""

import io
import os

import datasets
import numpy as np
import soundfile as sf

SAMPLING_RATE = 16000


def load_split(
    corpus: str, split: str, max_rows: int | None = None, shuffle_seed: int | None = None
) -> datasets.Dataset:
    """One split of a saved corpus, with undecoded ``audio`` cells.

    Args:
        corpus: folder written by ``DatasetDict.save_to_disk``.
        split: split name, e.g. ``"train"`` or ``"test_real"``.
        max_rows: keep at most this many rows: the first ones, or a fixed random subset when
            ``shuffle_seed`` is given (so a subset is not just the first speakers).
        shuffle_seed: seed of that subset.

    Returns:
        the split, ``audio`` cast to ``datasets.Audio(decode=False)`` (cells are ``{"bytes", "path"}``).

    Raises:
        ValueError: no corpus at ``corpus``, a single Dataset instead of named splits, an unknown
            split (the message lists the splits there are) or a missing ``audio``/``text`` column.
    """
    try:
        dataset = datasets.load_from_disk(corpus)
    except FileNotFoundError as error:
        raise ValueError(
            f"no corpus at {corpus!r}: build one with `python run_scripts/make_corpus.py --output {corpus}` "
            "(or `make corpus`) or pass the folder of an existing one"
        ) from error
    if not isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"{corpus!r} holds one Dataset; expected a DatasetDict with named splits")
    if split not in dataset:
        raise ValueError(f"split {split!r} is not in {corpus!r}; it has {sorted(dataset)}")
    rows = dataset[split]
    for column in ("audio", "text"):
        if column not in rows.column_names:
            raise ValueError(f"split {split!r} of {corpus!r} has no {column!r} column (columns: {rows.column_names})")
    if max_rows is not None and len(rows) > max_rows:
        if shuffle_seed is not None:
            rows = rows.shuffle(seed=shuffle_seed)
        rows = rows.select(range(max_rows))
    return rows.cast_column("audio", datasets.Audio(decode=False))


def read_audio(source, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 samples ``[L]`` of one recording, mixed down over channels.

    Args:
        source: an undecoded ``Audio`` cell (``{"bytes": ..., "path": ...}``), raw file bytes, or a
            path to a wav/flac/ogg file that soundfile reads.
        sampling_rate: the rate the caller expects; a file at another rate raises instead of being
            read at the wrong speed (resample with the feature extractor, which takes any rate).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file at another sampling rate, or one with no samples.
    """
    if isinstance(source, dict):
        source = source["bytes"] if source.get("bytes") else source["path"]
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif not isinstance(source, io.IOBase):
        source = str(source)
        if not os.path.exists(source):
            raise FileNotFoundError(f"no audio file at {source!r}")
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    if rate != sampling_rate:
        raise ValueError(f"audio at {rate} Hz; expected {sampling_rate} Hz (resample it first)")
    if audio.shape[0] == 0:
        raise ValueError("audio has no samples")
    return audio.mean(axis=1)


def durations(rows: datasets.Dataset) -> np.ndarray:
    """Seconds of every row ``[N]`` (float64), from the ``duration`` column when there is one."""
    if "duration" in rows.column_names:
        return np.asarray(rows["duration"], dtype=np.float64)
    return np.asarray([len(read_audio(cell)) / SAMPLING_RATE for cell in rows["audio"]])
