"""The data of a study: cached encoder states of each split, the same rows for every run, a shared tokenizer.

Splits are read from the grid's cache folder (``encoder_cache``); a split with more rows than the grid asks
for is cut to a fixed random subset (seed 0), so every run of every process sees the same rows. Training
rows longer than one session's share of the batch (``batch_frames // max_utterances``) are dropped, as the
session sampler could not place them.
"""

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ..processors import LaCTCTCTokenizer
from ..recogniser.training import RecogniserTrainingArguments, add_labels
from .boundaries import flagged_split
from .grid import Grid, Variant
from .pauses import load_pauses


def load_cached(cache: str, split: str, rows: int | None) -> datasets.Dataset:
    """A cached split, cut to a fixed random subset of ``rows`` (seed 0) when it holds more."""
    path = Path(cache) / split
    if not path.exists():
        raise FileNotFoundError(
            f"no cached split {split!r} in {cache}: encode it first with "
            f"python run_scripts/cache_encoder_states.py --splits {split} --cache {cache}"
        )
    dataset = datasets.load_from_disk(str(path))
    if rows is not None and len(dataset) > rows:
        dataset = dataset.shuffle(seed=0).select(range(rows)).flatten_indices()
    return dataset


@dataclass
class StudyData:
    """The splits every run of a study reads (with ``labels`` and ``num_frames``) and their tokenizer.

    ``tests``: split name -> dataset; ``adaptation``: the adaptation split or None; ``dropped_train_rows``:
    rows too long for the batch budget.
    """

    tokenizer: LaCTCTCTokenizer
    train: datasets.Dataset
    validation: datasets.Dataset
    tests: dict
    adaptation: datasets.Dataset | None
    dropped_train_rows: int
    d_model: int
    _flagged: dict = field(default_factory=dict)

    def splits(self) -> dict:
        """Every split by name (train, validation, the tests and, if any, the adaptation split)."""
        out = {"train": self.train, "validation": self.validation, **self.tests}
        if self.adaptation is not None:
            out["adaptation"] = self.adaptation
        return out

    def for_variant(self, grid: Grid, variant: Variant, pause_folder: str, detector=None) -> dict:
        """The splits a variant reads: as they are, or with its chunk-end channel (built once per setting)."""
        if variant.boundaries is None:
            return self.splits()
        config = {**grid.base, **variant.config}
        from ..recogniser.heads import recogniser_config

        chunk = recogniser_config(32, **config).lact_chunk_size
        mode, tolerance = variant.boundaries["mode"], variant.boundaries["tolerance"]
        key = (chunk, mode, tolerance if mode == "pauses" else 0)
        if key not in self._flagged:
            names = {"train": grid.data["train_split"], "validation": grid.data["validation_split"]}
            names.update({s: s for s in self.tests})
            if self.adaptation is not None:
                names["adaptation"] = grid.data["adaptation"]["split"]
            out = {}
            for name, data in self.splits().items():
                pauses = None
                if mode == "pauses":
                    pauses = load_pauses(
                        grid.data["cache"],
                        names[name],
                        pause_folder,
                        list(data["uid"]),
                        list(data["num_frames"]),
                        grid.pauses,
                        detector,
                    )
                out[name] = flagged_split(data, chunk, pauses, key[2])
            self._flagged[key] = out
        return self._flagged[key]


def training_arguments(grid: Grid, output_dir: str, seed: int) -> RecogniserTrainingArguments:
    """The shared budget of the grid as the trainer's arguments; checkpoints once at the end (and halfway)."""
    budget = dict(grid.budget)
    steps = budget["max_steps"]
    budget.setdefault("eval_every", steps)
    budget.setdefault("save_every", max(1, steps // 2))
    budget.setdefault("threads", 1)
    return RecogniserTrainingArguments(output_dir=output_dir, seed=seed, extra={"study": grid.name}, **budget)


def load_study_data(grid: Grid) -> StudyData:
    """Read the grid's splits, build the tokenizer from the training texts and add labels to every split."""
    d = grid.data
    train = load_cached(d["cache"], d["train_split"], d["train_rows"])
    tokenizer = LaCTCTCTokenizer.from_texts(train["text"])
    train = add_labels(train, tokenizer)
    args = training_arguments(grid, "unused", 0)
    limit = args.batch_frames // args.max_utterances
    keep = np.flatnonzero(np.asarray(train["num_frames"]) <= limit)
    if len(keep) == 0:
        raise ValueError(f"no training row fits batch_frames // max_utterances = {limit} frames; raise batch_frames")
    dropped = len(train) - len(keep)
    if dropped:
        train = train.select(keep.tolist()).flatten_indices()
    validation = add_labels(load_cached(d["cache"], d["validation_split"], d["validation_rows"]), tokenizer)
    tests = {s: add_labels(load_cached(d["cache"], s, d["test_rows"]), tokenizer) for s in d["test_splits"]}
    adaptation = None
    if d["adaptation"] is not None:
        adaptation = adaptation_rows(load_cached(d["cache"], d["adaptation"]["split"], None), d["adaptation"])
        adaptation = add_labels(adaptation, tokenizer)
    d_model = len(train[0]["states"][0])
    return StudyData(tokenizer, train, validation, tests, adaptation, dropped, d_model)


def adaptation_rows(dataset: datasets.Dataset, settings: dict) -> datasets.Dataset:
    """The rows of the adaptation streams only: ``max_streams`` speakers' sessions (seeded), the first
    ``max_utterances`` utterances of each (``adaptation.streams.build_streams``), in stream order."""
    from ..adaptation.streams import build_streams

    streams = build_streams(dataset, "session_id", None, settings["max_streams"], settings["max_utterances"], 0)
    rows = [i for s in streams for i in s.rows]
    return dataset.select(rows).flatten_indices()
