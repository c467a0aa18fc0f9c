"""Build the offline multi-speaker speech corpus as a datasets.DatasetDict on disk.

    python run_scripts/make_corpus.py --output data/corpus [--hours 20] [--seed 0] [--tiny] [--workers 2]
        [--train-real [--real-speech-cache DIR]]
    python -m modeling_lact_audio.corpus.build --output data/corpus ...

Resumable: the plan and every finished job live in ``OUTPUT/.build`` until the dataset is saved, so
rerunning the same command after an interruption builds only what is missing. ``--train-real`` adds
the ``train_real`` split (recorded human speech, ``corpus.real_training_speech``); given a finished
corpus built without it, it adds only that split and leaves every other split's files alone.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

from . import jobs as job_runner
from .data_card import render_card
from .dataset import assemble, shard_path, source_statistics, split_statistics
from .plan import SPLITS, TRAIN_REAL, make_plan, sizes_for, train_real_jobs
from .real_training_speech import default_cache_dir, training_utterances
from .requirements import require_packages
from .text_sources import load_domains

FORMAT_VERSION = 1
_PLAN: dict = {}


def _write_json(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(partial, path)


def _init_worker(plan: dict) -> None:
    _PLAN.update(plan)


def _work(args: tuple[dict, str]) -> str:
    job, shard_dir = args
    return job_runner.run_job(job, _PLAN, shard_dir)


def _settings(hours: float, seed: int, tiny: bool, train_real: bool = False) -> dict:
    settings = {"hours": None if tiny else hours, "seed": seed, "tiny": tiny, "format": FORMAT_VERSION}
    # Only present when on, so the settings of a build without train_real are what they always were.
    return {**settings, "train_real": True} if train_real else settings


def _sizes(settings: dict):
    return sizes_for(settings["hours"] or 0.0, settings["tiny"])


def _load_plan(work: Path, settings: dict, real_speech_cache: Path) -> dict:
    path = work / "plan.json"
    if path.exists():
        plan = json.loads(path.read_text())
        if plan["settings"] != settings:
            raise ValueError(
                f"{work} holds an unfinished build with {plan['settings']}, not {settings}: "
                "rerun with those settings or use another --output"
            )
        return plan
    domains = load_domains(settings["seed"])
    sizes = _sizes(settings)
    train_real = training_utterances(real_speech_cache, sizes.real_limit) if settings.get("train_real") else None
    plan = make_plan(domains, settings["seed"], sizes, train_real)
    plan["settings"] = settings
    plan["text_stats"] = {
        "sentences": {d: len(s) for d, s in domains.items()},
        "vocabulary": len({w for s in domains.values() for t in s for w in t.split()}),
    }
    _write_json(path, plan)
    return plan


def _run_jobs(plan: dict, shard_dir: Path, workers: int, progress: bool) -> int:
    from tqdm import tqdm

    for stale in shard_dir.glob("*.partial-*"):
        stale.unlink()
    pending = [j for j in plan["jobs"] if not shard_path(shard_dir, j["job_id"]).exists()]
    # Long sessions first, so no worker is left with one at the end.
    pending.sort(key=lambda j: j["kind"] != "session")
    context = {k: v for k, v in plan.items() if k != "jobs"}
    bar = tqdm(
        total=len(plan["jobs"]),
        initial=len(plan["jobs"]) - len(pending),
        unit="job",
        desc="synthesis",
        disable=not progress,
    )
    tasks = [(job, str(shard_dir)) for job in pending]
    if workers <= 1:
        _init_worker(context)
        for task in tasks:
            _work(task)
            bar.update()
    else:
        with multiprocessing.get_context("fork").Pool(workers, _init_worker, (context,)) as pool:
            for _ in pool.imap_unordered(_work, tasks):
                bar.update()
    bar.close()
    return len(pending)


def _command(output: str, settings: dict) -> str:
    size = "--tiny" if settings["tiny"] else f"--hours {settings['hours']:g}"
    extra = " --train-real" if settings.get("train_real") else ""
    return f"python run_scripts/make_corpus.py --output {output} --seed {settings['seed']} {size}{extra}"


def _write_card_and_info(out: Path, output: str, info: dict, dataset) -> None:
    # build_info.json, written last, marks the corpus as complete.
    if TRAIN_REAL in dataset:
        info["stats"][TRAIN_REAL]["sources"] = source_statistics(dataset[TRAIN_REAL])
    command = _command(output, info["settings"])
    # build_info.json keeps its keys sorted: the card lists the splits in the build's order
    stats = {s: info["stats"][s] for s in (*SPLITS, TRAIN_REAL) if s in info["stats"]}
    (out / "README.md").write_text(render_card(stats, info["settings"], info["text_stats"], info["seconds"], command))
    _write_json(out / "build_info.json", info)


def _add_train_real(out: Path, output: str, info: dict, settings: dict, cache: Path, workers: int, progress: bool):
    start = time.time()
    work = out / ".build-train_real"
    shard_dir = work / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    sizes = _sizes(settings)
    plan = {"jobs": train_real_jobs(training_utterances(cache, sizes.real_limit), sizes)}
    jobs_run = _run_jobs(plan, shard_dir, workers, progress)
    dataset = assemble(plan, shard_dir, work / "hf_cache", (TRAIN_REAL,))
    staged = work / "dataset"
    shutil.rmtree(staged, ignore_errors=True)
    dataset[TRAIN_REAL].save_to_disk(str(staged / TRAIN_REAL), max_shard_size="256MB")
    shutil.rmtree(out / TRAIN_REAL, ignore_errors=True)
    os.replace(staged / TRAIN_REAL, out / TRAIN_REAL)
    index = out / "dataset_dict.json"
    splits = [s for s in json.loads(index.read_text())["splits"] if s != TRAIN_REAL] + [TRAIN_REAL]
    partial = index.with_name(index.name + ".partial")
    partial.write_text(json.dumps({"splits": splits}))
    os.replace(partial, index)
    info = {**info, "settings": settings, "stats": {**info["stats"], **split_statistics(dataset)}}
    info["train_real_seconds"] = time.time() - start
    _write_card_and_info(out, output, info, dataset)
    shutil.rmtree(work)
    return {**info, "jobs_run": jobs_run}


def build(
    output: str,
    hours: float = 20.0,
    seed: int = 0,
    tiny: bool = False,
    workers: int = 2,
    progress: bool = True,
    train_real: bool = False,
    real_speech_cache: str | None = None,
) -> dict:
    """Build (or finish building) the corpus.

    Takes: the ``output`` folder, target ``hours`` of synthetic speech (ignored with ``tiny``), the
    ``seed``, the ``tiny`` flag (a few examples per split, for tests), the number of worker processes,
    whether to show a progress bar, whether to build ``train_real`` (recorded human speech, planned
    last: every other split is the same with it or without it) and the folder its sources are
    downloaded to (default ``real_training_speech.default_cache_dir()``). Returns: the build info
    written to ``OUTPUT/build_info.json`` (settings, statistics per split, jobs run by this call,
    seconds). An existing finished build with the same settings (or with ``train_real`` when it is not
    asked for) is left as it is; one that lacks only ``train_real`` gets that split added, its other
    splits untouched.

    Raises: RuntimeError naming every missing Debian/PyPI package; ValueError when ``output`` holds a
    finished or unfinished build with other settings.
    """
    require_packages(train_real)
    out = Path(output)
    cache = Path(real_speech_cache) if real_speech_cache else default_cache_dir()
    settings = _settings(hours, seed, tiny, train_real)
    info_path = out / "build_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info["settings"] in (settings, _settings(hours, seed, tiny, True)):
            return {**info, "jobs_run": 0}
        if train_real and info["settings"] == _settings(hours, seed, tiny):
            return _add_train_real(out, output, info, settings, cache, workers, progress)
        raise ValueError(f"{out} already holds a corpus built with {info['settings']}")
    start = time.time()
    work = out / ".build"
    shard_dir = work / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    plan = _load_plan(work, settings, cache)
    jobs_run = _run_jobs(plan, shard_dir, workers, progress)

    dataset = assemble(plan, shard_dir, work / "hf_cache", SPLITS + ((TRAIN_REAL,) if train_real else ()))
    staged = work / "dataset"
    shutil.rmtree(staged, ignore_errors=True)
    dataset.save_to_disk(str(staged), max_shard_size="256MB")
    # Splits move in by rename; build_info.json, written last, marks the corpus as complete.
    for entry in sorted(staged.iterdir()):
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    info = {
        "settings": settings,
        "stats": split_statistics(dataset),
        "text_stats": plan["text_stats"],
        "seconds": time.time() - start,
    }
    _write_card_and_info(out, output, info, dataset)
    shutil.rmtree(work)
    return {**info, "jobs_run": jobs_run}


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: builds the corpus and prints a summary per split."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="folder for the DatasetDict and its README.md")
    parser.add_argument("--hours", type=float, default=20.0, help="target hours of synthetic speech")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a few examples per split (seconds), for tests")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--train-real",
        action="store_true",
        help="also build train_real, recorded human speech (added alone to a finished corpus without it)",
    )
    parser.add_argument(
        "--real-speech-cache",
        help=f"where train_real's sources are downloaded and extracted (default {default_cache_dir()})",
    )
    args = parser.parse_args(argv)
    start = time.time()
    info = build(
        args.output,
        args.hours,
        args.seed,
        args.tiny,
        args.workers,
        train_real=args.train_real,
        real_speech_cache=args.real_speech_cache,
    )
    for split, s in info["stats"].items():
        print(
            f"{split:22s} {s['hours']:7.3f} h {s['rows']:6d} rows {s['utterances']:6d} utts "
            f"{s['speakers']:4d} speakers  max SNR error {s['max_snr_error_db']:.3f} dB"
        )
    print(f"done in {time.time() - start:.0f} s; jobs run by this call: {info['jobs_run']}")


if __name__ == "__main__":
    main()
