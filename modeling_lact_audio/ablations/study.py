"""One study from its grid file to its report, and the shipped recommendation table from several studies."""

import shutil
from pathlib import Path

from .grid import load_grid
from .recommendations import build_table, write_table
from .report import write_report
from .runner import run_grid
from .statistics import summarise

GRID_COPY = "grid.yaml"
SHIPPED_TABLE = Path(__file__).parent / "recommendations.json"


def run_study(
    grid_path: str,
    output: str,
    command: str,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    max_runs: int | None = None,
    report_only: bool = False,
    detector=None,
) -> dict:
    """Run the pending runs of a grid (unless ``report_only``), then write the study's report from every
    finished run; returns ``{"status": run_grid's status or None, "summary": ...}``.

    The grid file is copied to ``output/grid.yaml`` (what :func:`ship_recommendations` reads back).
    """
    grid = load_grid(grid_path)
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    status = None if report_only else run_grid(grid, output, only, shard, max_runs, detector)
    summary = write_report(grid, output, command)
    tmp = folder / f".{GRID_COPY}.tmp"
    shutil.copyfile(grid_path, tmp)
    tmp.replace(folder / GRID_COPY)
    return {"status": status, "summary": summary}


def ship_recommendations(outputs: list[str], command: str, path: str | Path = SHIPPED_TABLE) -> dict:
    """Merge the finished runs of several study folders into one table and write it to ``path`` (by default
    the table ``presets.recommend`` reads); returns it."""
    from .runner import load_results

    studies, commands = [], [command]
    for output in outputs:
        copy = Path(output) / GRID_COPY
        if not copy.is_file():
            raise FileNotFoundError(f"{copy} not found: {output} is not a study folder written by run_ablations.py")
        grid = load_grid(str(copy))
        if grid.task != "asr":
            raise ValueError(
                f"{output} is a task {grid.task!r} study: the recommendation table picks recognisers from task asr "
                "studies only; leave it out of --ship-recommendations"
            )
        summary = summarise(
            load_results(output),
            grid.reference,
            [{"name": v.name, "component": v.component} for v in grid.variants],
            grid.data["test_splits"],
        )
        studies.append((grid, output, summary))
    table = build_table(studies, commands)
    write_table(table, path)
    return table
