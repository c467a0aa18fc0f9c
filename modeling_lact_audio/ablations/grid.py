"""An ablation study as a YAML grid: the data, the shared budget, the seeds, the base head and its variants.

A grid file (``eval/ablations/grids/*.yaml``)::

    name: components
    task: asr
    metric: test_cer            # the headline metric of the report and of the recommendation table
    data:
      cache: cache/whisper_tiny_en_states        # folders of cached encoder states (encoder_cache)
      train_split: train
      train_rows: 600           # a fixed random subset (seed 0); null: all rows that fit the batch budget
      validation_rows: 100
      test_splits: [test_unseen_speakers, test_noise, test_real]
      test_rows: 100
      adaptation: {split: sessions_test_unseen, k: 5, max_streams: 8, max_utterances: 10}   # or null
    budget: {max_steps: 160, batch_frames: 1200, max_utterances: 4, learning_rate: 3.0e-3, lr_scheduler_type: constant}
    seeds: [0, 1, 2]
    base: {hidden_size: 128, num_hidden_layers: 2}           # LaCTAudioConfig fields over recogniser_config
    reference: full
    variants:
      - {name: full, component: reference}
      - {name: no_fast_weights, component: fast weights, model: baseline_sliding_window}
      - {name: muon_0, component: Muon steps, config: {muon_steps: 0}}
      - {name: pauses, component: chunk boundaries, boundaries: {mode: pauses, tolerance: 32}}

``budget`` takes any field of ``RecogniserTrainingArguments`` but ``output_dir``, ``seed`` and ``extra``;
``model`` is a recogniser kind (``build_recogniser``: the baselines are fitted to the LaCT head's trainable
parameter count); ``boundaries`` feeds ``lact_chunk_ends`` to the op (:mod:`.boundaries`). Everything is
checked by :func:`load_grid` before any run starts, with the variant and field named in the message.

A generation grid (``task: lm``) trains small audio-token LMs instead (:mod:`.lm_runner`)::

    name: generation
    task: lm
    metric: test_nll_long       # one of LM_METRICS (nats per code; lower is better)
    data:
      corpus: data/corpus
      train_split: sessions_train
      test_split: sessions_test_unseen
      num_codebooks: 2          # the mel-RVQ audio tokenizer fitted on the training sessions (.lm_data)
      codebook_size: 256
      fit_frames: 100000
      train_frames: 2048        # training sequences: windows at random offsets
      eval_frames: 4096         # held-out windows, from each test session's start, non-overlapping
      eval_windows_per_session: null
      bin_frames: 512           # NLL by target position in bins of this many frames
      long_from: 2048           # test_nll_long: the targets at positions >= long_from
    budget: {max_steps: 60, batch_size: 2, learning_rate: 3.0e-3, threads: 1}   # LMTrainingArguments fields
    base: {hidden_size: 128, num_hidden_layers: 2, lact_chunk_size: 256}      # over LaCTAudioConfig(task="lm")
    variants:
      - {name: full, component: reference}
      - {name: no_fast_weights, component: fast weights, model: baseline_sliding_window}

There ``model`` is one of ``training.models.LM_MODELS`` and ``boundaries`` / ``pauses`` are refused.
"""

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..configuration_lact_audio import LaCTAudioConfig
from ..recogniser.heads import RECOGNISER_KINDS, recogniser_config
from ..recogniser.training import RecogniserTrainingArguments
from ..training.models import LM_MODELS
from .lm_model import LMTrainingArguments, lm_config

TASKS = ("asr", "lm")
BOUNDARY_MODES = ("fixed", "pauses")
METRIC_KINDS = ("wer", "cer")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TOP = {"name", "task", "description", "metric", "data", "budget", "seeds", "base", "reference", "variants", "pauses"}
_DATA = {
    "cache",
    "train_split",
    "train_rows",
    "validation_split",
    "validation_rows",
    "test_splits",
    "test_rows",
    "adaptation",
}
_ADAPTATION = {"split", "k", "max_streams", "max_utterances"}
_LM_DATA = {
    "corpus": "data/corpus",
    "train_split": "sessions_train",
    "test_split": "sessions_test_unseen",
    "num_codebooks": 2,
    "codebook_size": 256,
    "fit_frames": 100_000,
    "train_frames": 2048,
    "eval_frames": 4096,
    "eval_windows_per_session": None,
    "bin_frames": 512,
    "long_from": 2048,
}
LM_METRICS = ("test_nll", "test_nll_long", "test_nll_last_minus_first")
_VARIANT = {"name", "component", "model", "config", "boundaries", "description"}
_BOUNDARIES = {"mode", "tolerance"}
_PAUSES = {"min_pause_ms", "threshold"}
_BUDGET_EXCLUDED = {"output_dir", "seed", "extra"}


class GridError(ValueError):
    """A grid file that cannot run; the message names the file, the variant and the field."""


@dataclass
class Variant:
    """One configuration of the study: ``config`` overrides the grid's ``base``; ``model`` is a recogniser kind;
    ``boundaries``: None (the op's fixed chunks) or ``{"mode": "fixed" | "pauses", "tolerance": frames}``."""

    name: str
    component: str
    model: str = "lact"
    config: dict = field(default_factory=dict)
    boundaries: dict | None = None
    description: str = ""


@dataclass
class Grid:
    """A validated grid (see the module docstring for the file format); ``path`` is the file it came from."""

    name: str
    task: str
    metric: str
    data: dict
    budget: dict
    seeds: list[int]
    base: dict
    reference: str
    variants: list[Variant]
    pauses: dict
    description: str = ""
    path: str = ""

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def config_overrides(self, variant: Variant) -> dict:
        """The ``LaCTAudioConfig`` overrides of ``variant`` over ``recogniser_config``: base, then its own."""
        return {**self.base, **variant.config}

    def runs(self) -> list[tuple[str, int]]:
        """Every ``(variant name, seed)`` of the study, seed by seed (variants in file order within a seed), so that
        a study stopped early has every variant at the same number of seeds."""
        return [(v.name, s) for s in self.seeds for v in self.variants]


def run_id(variant: str, seed: int) -> str:
    """The name of one run, as ``--only`` matches it and as its folder is named: ``<variant>/seed<seed>``."""
    return f"{variant}/seed{seed}"


def config_fields() -> set[str]:
    """The option names ``LaCTAudioConfig`` accepts: its ``__init__`` parameters (``**kwargs`` would take any
    name silently, so a misspelt or not yet existing option must be refused here)."""
    params = inspect.signature(LaCTAudioConfig.__init__).parameters
    return {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def supports_chunk_ends() -> bool:
    """Whether the recogniser head takes ``lact_chunk_ends`` (chunk boundaries given per frame)."""
    from ..recogniser.heads import CachedStatesCTC

    return "lact_chunk_ends" in inspect.signature(CachedStatesCTC.forward).parameters


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise GridError(f"{where}: {msg}")


def _check_keys(given: dict, allowed: set, where: str) -> None:
    _need(isinstance(given, dict), where, f"must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - allowed)
    _need(not unknown, where, f"unknown keys {unknown}; allowed: {sorted(allowed)}")


def _asr_config(**overrides) -> LaCTAudioConfig:
    return recogniser_config(32, **overrides)


def _check_config(overrides: dict, where: str, build=_asr_config) -> None:
    _check_keys(overrides, config_fields(), where)
    try:
        build(**overrides)
    except (ValueError, TypeError) as error:
        raise GridError(f"{where}: {error}") from error


def _lm_data(raw: dict, path: str) -> dict:
    """The ``data`` of a generation grid with its defaults, checked."""
    _check_keys(raw or {}, set(_LM_DATA), f"{path}: data")
    data = {**_LM_DATA, **(raw or {})}
    for key in ("num_codebooks", "codebook_size", "fit_frames", "train_frames", "eval_frames", "bin_frames"):
        value = data[key]
        _need(isinstance(value, int) and value > 0, f"{path}: data.{key}", f"must be an int > 0, got {value!r}")
    limit = data["eval_windows_per_session"]
    where = f"{path}: data.eval_windows_per_session"
    _need(limit is None or (isinstance(limit, int) and limit > 0), where, f"null or an int > 0, got {limit!r}")
    long_from = data["long_from"]
    _need(
        isinstance(long_from, int) and 0 < long_from < data["eval_frames"] and long_from % data["bin_frames"] == 0,
        f"{path}: data.long_from",
        f"must be a multiple of bin_frames={data['bin_frames']} inside (0, eval_frames={data['eval_frames']}), "
        f"got {long_from!r}",
    )
    return data


def _parse_lm(raw: dict, path: str) -> tuple[dict, str, dict, object, tuple]:
    """``(data, metric, budget, config builder, model kinds)`` of a generation grid, checked."""
    data = _lm_data(raw["data"], path)
    metric = raw.get("metric", "test_nll_long")
    _need(metric in LM_METRICS, f"{path}: metric", f"must be one of {LM_METRICS} for task lm, got {metric!r}")
    budget = dict(raw["budget"] or {})
    allowed = set(LMTrainingArguments.__dataclass_fields__) - {"output_dir", "seed"}
    _check_keys(budget, allowed, f"{path}: budget")
    _need("max_steps" in budget, f"{path}: budget", "needs 'max_steps' (the same step budget for every run)")
    _need("pauses" not in raw, f"{path}: pauses", "chunk boundaries at pauses are an asr study's; task lm has none")
    return data, metric, budget, lambda **o: lm_config(data["num_codebooks"], data["codebook_size"], **o), LM_MODELS


def parse_grid(raw: dict, path: str = "<grid>") -> Grid:
    """Check a grid loaded from YAML and return it; raises :class:`GridError` naming what is wrong."""
    _check_keys(raw, _TOP, path)
    for key in ("name", "task", "data", "budget", "seeds", "reference", "variants"):
        _need(key in raw, path, f"missing required key {key!r}")
    name = raw["name"]
    _need(isinstance(name, str) and bool(_NAME.match(name)), f"{path}: name", f"must match {_NAME.pattern}")
    task = raw["task"]
    _need(task in TASKS, f"{path}: task", f"must be one of {TASKS}, got {task!r}")
    if task == "lm":
        data, metric, budget, build, kinds = _parse_lm(raw, path)
    else:
        data, metric, budget, build, kinds = _parse_asr(raw, path)
    return _parse_variants(raw, path, task, data, metric, budget, build, kinds)


def _parse_asr(raw: dict, path: str) -> tuple[dict, str, dict, object, tuple]:
    """``(data, metric, budget, config builder, model kinds)`` of a recognition grid, checked."""
    data = dict(raw["data"] or {})
    _check_keys(data, _DATA, f"{path}: data")
    _need("cache" in data, f"{path}: data", "needs 'cache' (the folder of cached encoder states)")
    data.setdefault("train_split", "train")
    data.setdefault("validation_split", "validation")
    data.setdefault("train_rows", None)
    data.setdefault("validation_rows", 100)
    data.setdefault("test_splits", [])
    data.setdefault("test_rows", 100)
    data.setdefault("adaptation", None)
    _need(
        isinstance(data["test_splits"], list) and len(data["test_splits"]) >= 1,
        f"{path}: data.test_splits",
        "must list at least one cached test split",
    )
    for key in ("train_rows", "validation_rows", "test_rows"):
        value = data[key]
        _need(value is None or (isinstance(value, int) and value > 0), f"{path}: data.{key}", f"got {value!r}")
    if data["adaptation"] is not None:
        adaptation = {"k": 5, "max_streams": 8, "max_utterances": 10, **data["adaptation"]}
        _check_keys(adaptation, _ADAPTATION, f"{path}: data.adaptation")
        _need("split" in adaptation, f"{path}: data.adaptation", "needs 'split' (a cached split with session_id)")
        _need(
            isinstance(adaptation["k"], int) and adaptation["k"] >= 1,
            f"{path}: data.adaptation.k",
            f"must be an int >= 1, got {adaptation['k']!r}",
        )
        data["adaptation"] = adaptation

    metric = raw.get("metric", "test_cer")
    _need(
        isinstance(metric, str) and metric.rsplit("_", 1)[-1] in METRIC_KINDS,
        f"{path}: metric",
        f"must end in one of {METRIC_KINDS} (e.g. 'test_cer', 'validation_wer'), got {metric!r}",
    )

    budget = dict(raw["budget"] or {})
    allowed = {f for f in RecogniserTrainingArguments.__dataclass_fields__} - _BUDGET_EXCLUDED
    _check_keys(budget, allowed, f"{path}: budget")
    _need("max_steps" in budget, f"{path}: budget", "needs 'max_steps' (the same step budget for every run)")
    return data, metric, budget, _asr_config, RECOGNISER_KINDS


def _parse_variants(raw, path, task, data, metric, budget, build, kinds) -> Grid:
    """The task-independent part of :func:`parse_grid`: name, seeds, base, pauses, variants, reference."""
    name = raw["name"]
    seeds = raw["seeds"]
    _need(
        isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
        f"{path}: seeds",
        f"must be a list of ints, got {seeds!r}",
    )
    _need(len(set(seeds)) == len(seeds), f"{path}: seeds", f"must be distinct, got {seeds}")
    _need(
        len(seeds) >= 2, f"{path}: seeds", f"an interval over seeds needs at least 2 (3 or more advised), got {seeds}"
    )

    base = dict(raw.get("base") or {})
    _check_config(base, f"{path}: base", build)
    pauses = {"min_pause_ms": 150, "threshold": 0.5, **(raw.get("pauses") or {})}
    _check_keys(pauses, _PAUSES, f"{path}: pauses")

    variants_raw = raw["variants"]
    _need(isinstance(variants_raw, list) and variants_raw, f"{path}: variants", "must be a non-empty list")
    variants, seen = [], set()
    for i, v in enumerate(variants_raw):
        where = f"{path}: variants[{i}]"
        _check_keys(v, _VARIANT, where)
        _need("name" in v, where, "needs a 'name'")
        vname = v["name"]
        where = f"{path}: variant {vname!r}"
        _need(isinstance(vname, str) and bool(_NAME.match(vname)), where, f"name must match {_NAME.pattern}")
        _need(vname not in seen, where, "appears twice")
        seen.add(vname)
        model = v.get("model", "lact")
        _need(model in kinds, f"{where}: model", f"must be one of {kinds}, got {model!r}")
        config = dict(v.get("config") or {})
        _check_config({**base, **config}, f"{where}: config", build)
        boundaries = v.get("boundaries")
        _need(boundaries is None or task == "asr", f"{where}: boundaries", "task lm takes no chunk boundaries")
        if boundaries is not None:
            boundaries = {"tolerance": 0, **boundaries}
            _check_keys(boundaries, _BOUNDARIES, f"{where}: boundaries")
            _need(
                boundaries.get("mode") in BOUNDARY_MODES,
                f"{where}: boundaries.mode",
                f"must be one of {BOUNDARY_MODES}, got {boundaries.get('mode')!r}",
            )
            tol = boundaries["tolerance"]
            _need(isinstance(tol, int) and tol >= 0, f"{where}: boundaries.tolerance", f"frames >= 0, got {tol!r}")
            _need(model != "bilstm", f"{where}: boundaries", "a BiLSTM head has no chunks")
            _need(
                supports_chunk_ends(),
                f"{where}: boundaries",
                "CachedStatesCTC.forward does not take lact_chunk_ends yet (chunk boundaries per frame); this "
                "variant runs once the op and the head accept them",
            )
        variants.append(
            Variant(vname, str(v.get("component", vname)), model, config, boundaries, v.get("description", ""))
        )
    _need(
        raw["reference"] in seen, f"{path}: reference", f"{raw['reference']!r} is none of the variants {sorted(seen)}"
    )
    return Grid(
        name=name,
        task=task,
        metric=metric,
        data=data,
        budget=budget,
        seeds=list(seeds),
        base=base,
        reference=raw["reference"],
        variants=variants,
        pauses=pauses,
        description=raw.get("description", ""),
        path=path,
    )


def load_grid(path: str) -> Grid:
    """Read and check a YAML grid file (:func:`parse_grid`)."""
    path = str(path)
    if not Path(path).is_file():
        raise GridError(f"no grid file at {path!r} (the shipped grids are in eval/ablations/grids/)")
    with open(path) as f:
        raw = yaml.safe_load(f)
    return parse_grid(raw or {}, path)
