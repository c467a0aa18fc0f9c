"""Shards to a datasets.DatasetDict, and the statistics the data card reports."""

from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..data import SAMPLING_RATE

FEATURES = datasets.Features(
    {
        "audio": datasets.Audio(sampling_rate=SAMPLING_RATE),
        "uid": datasets.Value("string"),
        "text": datasets.Value("string"),
        "speaker": datasets.Value("string"),
        "engine": datasets.Value("string"),
        "accent": datasets.Value("string"),
        "condition": datasets.Value("string"),
        "snr_db": datasets.Value("float32"),
        "snr_measured_db": datasets.Value("float32"),
        "domain": datasets.Value("string"),
        "session_id": datasets.Value("string"),
        "utterance_index": datasets.Value("int32"),
        "duration": datasets.Value("float64"),
        "segment_starts": datasets.List(datasets.Value("float64")),
        "segment_ends": datasets.List(datasets.Value("float64")),
        "segment_texts": datasets.List(datasets.Value("string")),
    }
)


SHARD_SUFFIX = ".parquet"  # data only: a shard can never run code when read (a pickle could)


def shard_path(shard_dir: Path, job_id: str) -> Path:
    """Where job ``job_id`` keeps its rows."""
    return Path(shard_dir) / f"{job_id}{SHARD_SUFFIX}"


def write_shard(rows: list[dict], path) -> None:
    """Write corpus rows (``FEATURES``' fields; ``audio`` as ``{"bytes", "path"}``) as one Parquet file."""
    pq.write_table(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema), path)


def read_shard(path) -> list[dict]:
    """The rows :func:`write_shard` wrote, in order.

    Raises:
        FileNotFoundError: no shard at ``path`` (rebuild the corpus); ValueError: the file is not a Parquet shard
            (corrupt, or replaced by something else; it is never executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus shard {path} is missing: rebuild the corpus (make corpus)")
    try:
        return pq.read_table(path).to_pylist()
    except pa.ArrowInvalid as error:
        raise ValueError(
            f"corpus shard {path} is not a Parquet file written by the corpus builder ({error}); delete the "
            "build folder and rebuild the corpus"
        ) from error


def _shard_rows(paths: list[str]):
    for path in paths:
        yield from read_shard(path)


def assemble(plan: dict, shard_dir: Path, cache_dir: Path, splits: tuple[str, ...]) -> datasets.DatasetDict:
    """Collect every shard into splits.

    Takes: the ``plan``, the shard folder, a scratch ``cache_dir`` and the split order. Returns: a
    DatasetDict whose rows follow the plan's job order, so equal plans give equal datasets.
    """
    paths = defaultdict(list)
    for job in plan["jobs"]:
        paths[job["split"]].append(str(shard_path(shard_dir, job["job_id"])))
    out = {}
    for split in splits:
        out[split] = datasets.Dataset.from_generator(
            _shard_rows,
            features=FEATURES,
            gen_kwargs={"paths": paths[split]},
            cache_dir=str(cache_dir),
            split=datasets.NamedSplit(split),
        )
    return datasets.DatasetDict(out)


def split_statistics(dataset: datasets.DatasetDict) -> dict[str, dict]:
    """Per-split numbers for the data card.

    Takes: the built DatasetDict. Returns: split -> hours, rows, utterances (session segments counted),
    speakers, engines, domains, conditions and, for noisy rows, the largest |measured - labelled| SNR.
    """
    stats = {}
    for split, ds in dataset.items():
        meta = ds.select_columns(
            [
                "speaker",
                "engine",
                "domain",
                "condition",
                "snr_db",
                "snr_measured_db",
                "duration",
                "segment_texts",
            ]
        ).to_dict()
        noisy = [(m, s) for m, s in zip(meta["snr_measured_db"], meta["snr_db"]) if s is not None]
        stats[split] = dict(
            hours=sum(meta["duration"]) / 3600,
            rows=len(ds),
            utterances=sum(len(t) for t in meta["segment_texts"]),
            speakers=len(set(meta["speaker"])),
            engines=sorted(set(meta["engine"])),
            domains=sorted(set(meta["domain"])),
            conditions=sorted(set(meta["condition"])),
            noisy_rows=len(noisy),
            max_snr_error_db=float(max((abs(m - s) for m, s in noisy), default=0.0)),
            mean_seconds=float(np.mean(meta["duration"])) if len(ds) else 0.0,
        )
    return stats


def source_statistics(ds: datasets.Dataset) -> dict[str, dict]:
    """Per recorded source of a split (the part of ``speaker`` before ``:``), for the data card.

    Takes: one split. Returns: source -> hours, rows and speakers, in order of first appearance.
    """
    meta = ds.select_columns(["speaker", "duration"]).to_dict()
    stats: dict[str, dict] = {}
    for speaker, duration in zip(meta["speaker"], meta["duration"]):
        entry = stats.setdefault(speaker.split(":")[0], {"hours": 0.0, "rows": 0, "speakers": set()})
        entry["hours"] += duration / 3600
        entry["rows"] += 1
        entry["speakers"].add(speaker)
    return {source: {**entry, "speakers": len(entry["speakers"])} for source, entry in stats.items()}
