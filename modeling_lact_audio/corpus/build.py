"""Build the offline multi-speaker speech corpus as a datasets.DatasetDict on disk.

    python run_scripts/make_corpus.py --output data/corpus [--hours 20] [--seed 0] [--tiny] [--workers 2]
    python -m modeling_lact_audio.corpus.build --output data/corpus ...

Resumable: the plan and every finished job live in ``OUTPUT/.build`` until the dataset is saved, so
rerunning the same command after an interruption builds only what is missing.
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
from .dataset import assemble, shard_path, split_statistics
from .plan import SPLITS, make_plan, sizes_for
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


def _settings(hours: float, seed: int, tiny: bool) -> dict:
    return {"hours": None if tiny else hours, "seed": seed, "tiny": tiny, "format": FORMAT_VERSION}


def _load_plan(work: Path, settings: dict) -> dict:
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
    plan = make_plan(domains, settings["seed"], sizes_for(settings["hours"] or 0.0, settings["tiny"]))
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


def build(
    output: str,
    hours: float = 20.0,
    seed: int = 0,
    tiny: bool = False,
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Build (or finish building) the corpus.

    Takes: the ``output`` folder, target ``hours`` of synthetic speech (ignored with ``tiny``), the
    ``seed``, the ``tiny`` flag (a few examples per split, for tests), the number of worker processes
    and whether to show a progress bar. Returns: the build info written to ``OUTPUT/build_info.json``
    (settings, statistics per split, jobs run by this call, seconds). An existing finished build with
    the same settings is left as it is.

    Raises: RuntimeError naming every missing Debian/PyPI package; ValueError when ``output`` holds a
    finished or unfinished build with other settings.
    """
    require_packages()
    out = Path(output)
    settings = _settings(hours, seed, tiny)
    info_path = out / "build_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info["settings"] != settings:
            raise ValueError(f"{out} already holds a corpus built with {info['settings']}")
        return {**info, "jobs_run": 0}
    start = time.time()
    work = out / ".build"
    shard_dir = work / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    plan = _load_plan(work, settings)
    jobs_run = _run_jobs(plan, shard_dir, workers, progress)

    dataset = assemble(plan, shard_dir, work / "hf_cache", SPLITS)
    staged = work / "dataset"
    shutil.rmtree(staged, ignore_errors=True)
    dataset.save_to_disk(str(staged), max_shard_size="256MB")
    # Splits move in by rename; build_info.json, written last, marks the corpus as complete.
    for entry in sorted(staged.iterdir()):
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    stats = split_statistics(dataset)
    seconds = time.time() - start
    command = f"python run_scripts/make_corpus.py --output {output} --seed {seed} " + (
        "--tiny" if tiny else f"--hours {hours:g}"
    )
    (out / "README.md").write_text(render_card(stats, settings, plan["text_stats"], seconds, command))
    info = {"settings": settings, "stats": stats, "text_stats": plan["text_stats"], "seconds": seconds}
    _write_json(info_path, info)
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
    args = parser.parse_args(argv)
    info = build(args.output, args.hours, args.seed, args.tiny, args.workers)
    for split, s in info["stats"].items():
        print(
            f"{split:22s} {s['hours']:7.3f} h {s['rows']:6d} rows {s['utterances']:6d} utts "
            f"{s['speakers']:4d} speakers  max SNR error {s['max_snr_error_db']:.3f} dB"
        )
    print(f"done in {info['seconds']:.0f} s; jobs run by this call: {info['jobs_run']}")


if __name__ == "__main__":
    main()
