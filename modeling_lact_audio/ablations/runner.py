"""Run the (variant, seed) runs of a grid, each once: train a head, measure it, write its result file.

Layout of a study folder::

    <output>/runs/<variant>/seed<k>/train/        the trainer's folder (checkpoints, best/, summary.json)
    <output>/runs/<variant>/seed<k>/result.json   written last, atomically: the run is done
    <output>/data/pauses/<split>/                 the pause column, computed once
    <output>/data/tokens/<key>/                   a generation study's audio tokens, computed once (.lm_data)

A run with a ``result.json`` is skipped; an interrupted training resumes from its own checkpoints
(``train_recogniser``). Processes started side by side on the same folder are safe: a run is claimed by
creating ``<run>/claim`` exclusively (a claim whose process is gone is taken over), results are one file
per run, and every file is written to a temporary name and renamed. Once a run's result is written its
checkpoints are deleted (``best/`` stays).
"""

import fnmatch
import functools
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from ..modeling_lact_audio import count_parameters
from ..recogniser.evaluation import wer_cer
from ..recogniser.heads import CachedStatesCTC, build_recogniser, recogniser_config
from ..recogniser.training import train_recogniser
from .boundaries import ChunkEndsChannelCTC
from .data import StudyData, load_study_data, training_arguments
from .grid import Grid, Variant, run_id
from .measure import PeakRSS, adaptation_gain, score_head


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def run_folder(output: str, variant: str, seed: int) -> Path:
    return Path(output) / "runs" / variant / f"seed{seed}"


def build_head(grid: Grid, variant: Variant, vocab_size: int, d_model: int, seed: int):
    """The head of ``variant`` (random init from ``seed``) and its resolved config overrides.

    The overrides are the grid's base and the variant's own, plus, for a baseline kind, the fields its
    parameter-matched config changed (``mixer``, ``intermediate_size``, ``window_size``).
    """
    torch.manual_seed(seed)
    overrides = grid.config_overrides(variant)
    config = recogniser_config(vocab_size, **overrides)
    if variant.boundaries is not None:
        head = ChunkEndsChannelCTC(config, d_model)
    else:
        head = build_recogniser(variant.model, config, d_model)
    resolved = dict(overrides)
    if isinstance(head, CachedStatesCTC):
        built = head.config
        for name in ("mixer", "intermediate_size", "window_size"):
            if getattr(built, name) != getattr(config, name) or name in overrides:
                resolved[name] = getattr(built, name)
        resolved["lact_order"], resolved["attention_pattern"] = built.lact_order, built.attention_pattern
        resolved["lact_chunk_size"] = built.lact_chunk_size
    return head, resolved


def run_spec(grid: Grid, variant: Variant, seed: int) -> dict:
    """What a run's result depends on; a result written under another spec is refused, not mixed in."""
    return {
        "study": grid.name,
        "variant": variant.name,
        "seed": seed,
        "model": variant.model,
        "config": grid.config_overrides(variant),
        "boundaries": variant.boundaries,
        "budget": grid.budget,
        "data": grid.data,
        "pauses": grid.pauses if variant.boundaries else None,
    }


def machine() -> dict:
    """Where the costs were measured (timings from different machines are not comparable)."""
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }


def execute_run(grid: Grid, variant: Variant, seed: int, data: StudyData, output: str, detector=None) -> dict:
    """Train and measure one run and write its ``result.json``; returns the result."""
    folder = run_folder(output, variant.name, seed)
    splits = data.for_variant(grid, variant, str(Path(output) / "data" / "pauses"), detector)
    d_model = data.d_model
    head, resolved = build_head(grid, variant, len(data.tokenizer), d_model, seed)
    args = training_arguments(grid, str(folder / "train"), seed)
    torch.set_num_threads(args.threads)
    with PeakRSS() as memory:
        log = train_recogniser(head, data.tokenizer, splits["train"], splits["validation"], args, wer_cer)
    best = folder / "train" / "best" / "head.safetensors"
    if best.exists():
        head.load_state_dict(load_file(best))
    head.eval()
    result = {
        "spec": run_spec(grid, variant, seed),
        "run": run_id(variant.name, seed),
        "component": variant.component,
        "resolved_config": resolved,
        "parameters": count_parameters(head),
        "train_seconds": log["train_seconds"],
        "steps": len(log["history"]),
        "final_loss": log["history"][-1]["loss"] if log["history"] else None,
        "best": log["best"],
        "peak_rss_mib": memory.peak_mib,
        "peak_rss_increase_mib": memory.peak_mib - memory.start_mib,
        "threads": args.threads,
        "machine": machine(),
        "dropped_train_rows": data.dropped_train_rows,
        "splits": {},
    }
    with torch.no_grad():
        result["splits"]["validation"] = score_head(head, splits["validation"], data.tokenizer)
        for name in data.tests:
            result["splits"][name] = score_head(head, splits[name], data.tokenizer)
        result["adaptation"] = None
        if data.adaptation is not None:
            k = grid.data["adaptation"]["k"]
            result["adaptation"] = adaptation_gain(head, splits["adaptation"], data.tokenizer, k)
    tests = [result["splits"][s] for s in data.tests]
    result["inference_seconds_per_audio_second"] = sum(t["head_seconds"] for t in tests) / max(
        sum(t["audio_seconds"] for t in tests), 1e-9
    )
    write_json_atomic(folder / "result.json", result)
    shutil.rmtree(folder / "train" / "checkpoints", ignore_errors=True)
    return result


def _claim(folder: Path) -> bool:
    """Claim a run for this process (exclusive create of ``claim``); a claim of a dead process is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    claim = folder / "claim"
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(claim.read_text())
            except (OSError, ValueError):
                return False  # being written right now by its owner
            if owner.get("host") == me["host"] and not psutil.pid_exists(owner.get("pid", -1)):
                claim.unlink(missing_ok=True)
                continue
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def select_runs(grid: Grid, only: list[str] | None = None, shard: tuple[int, int] | None = None) -> list[tuple]:
    """The ``(variant, seed)`` runs to consider: those matching any ``only`` pattern (``fnmatch`` on
    ``<variant>/seed<k>``, or a bare variant name), then every ``n``-th from ``i`` for ``shard=(i, n)``."""
    runs = grid.runs()
    if only:
        runs = [r for r in runs if any(fnmatch.fnmatch(run_id(*r), p) or fnmatch.fnmatch(r[0], p) for p in only)]
        if not runs:
            raise ValueError(f"--only {only} matches no run of {grid.name} (runs look like {run_id(*grid.runs()[0])})")
    if shard is not None:
        i, n = shard
        runs = runs[i::n]
    return runs


def load_results(output: str) -> dict:
    """Every finished run's result in a study folder: run id -> result."""
    out = {}
    for path in sorted(Path(output).glob("runs/*/seed*/result.json")):
        result = json.loads(path.read_text())
        out[result["run"]] = result
    return out


def run_grid(
    grid: Grid,
    output: str,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    max_runs: int | None = None,
    detector=None,
    log=print,
) -> dict:
    """Run the grid's pending runs into ``output``; returns ``{"done": [...], "skipped": [...], "busy": [...]}``.

    ``only`` / ``shard`` choose runs (:func:`select_runs`); ``max_runs`` stops after that many trainings.
    A finished run (its ``result.json``) is skipped; its spec must equal the grid's, else ValueError.
    ``detector``: the pause detector (``pauses.load_pauses``); None: Silero VAD.
    A generation grid (``task: lm``) trains and measures its runs with :mod:`.lm_runner`.
    """
    load_data, execute = load_study_data, execute_run
    if grid.task == "lm":
        from .lm_runner import execute_lm_run, load_lm_data  # lm_runner imports this module

        load_data, execute = functools.partial(load_lm_data, output=output), execute_lm_run
    status = {"done": [], "skipped": [], "busy": []}
    data = None
    for name, seed in select_runs(grid, only, shard):
        variant, rid = grid.variant(name), run_id(name, seed)
        folder = run_folder(output, name, seed)
        result_file = folder / "result.json"
        if result_file.exists():
            saved = json.loads(result_file.read_text())["spec"]
            if saved != json.loads(json.dumps(run_spec(grid, variant, seed))):
                raise ValueError(
                    f"{result_file} was produced by another setting of run {rid} than the grid's now; write this "
                    "grid to a new --output folder, or delete that run folder to run it again"
                )
            status["skipped"].append(rid)
            continue
        if max_runs is not None and len(status["done"]) >= max_runs:
            break
        if not _claim(folder):
            status["busy"].append(rid)
            continue
        try:
            if data is None:
                data = load_data(grid)
            log(f"[{grid.name}] training {rid}")
            start = time.time()
            execute(grid, variant, seed, data, output, detector)
            log(f"[{grid.name}] {rid} done in {time.time() - start:.0f} s")
            status["done"].append(rid)
        finally:
            (folder / "claim").unlink(missing_ok=True)
    return status
