"""Run an ablation study from its YAML grid, resumably, and write its report.

    python eval/ablations/run_ablations.py --grid eval/ablations/grids/components.yaml \\
        --output eval/results/ablations/components

Every (variant, seed) run trains the grid's small recogniser head on the cached encoder states (a ``task: lm``
grid: a small audio-token LM on the corpus' session recordings, e.g. ``grids/generation.yaml``) and writes
``runs/<variant>/seed<k>/result.json``; a finished run is skipped, an interrupted one resumes from its
checkpoints. Two processes may share one output folder (``--shard 0/2`` and ``--shard 1/2``, or ``--only``):
a run is claimed by one of them. ``--report-only`` re-renders ``REPORT.md``, ``summary.json``, the plots and
the study's ``recommendations.json`` (recognition studies) from the finished runs. ``--ship-recommendations
DIR...`` merges the tables of finished recognition studies into the one ``modeling_lact_audio.presets.recommend``
reads.
"""

import argparse
import shlex
import sys

from modeling_lact_audio.ablations.study import run_study, ship_recommendations


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 0/2), got {text!r}") from error
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", help="the study's YAML grid (eval/ablations/grids/*.yaml)")
    parser.add_argument("--output", help="the study's folder (eval/results/ablations/<name>)")
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="PATTERN",
        help="runs to consider: variant names or VARIANT/seedK patterns (fnmatch)",
    )
    parser.add_argument("--shard", type=_shard, default=None, metavar="I/N", help="every N-th run from the I-th")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after training this many runs")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished runs only")
    parser.add_argument(
        "--ship-recommendations",
        nargs="+",
        default=None,
        metavar="STUDY_FOLDER",
        help="merge these finished studies into the package's recommendation table",
    )
    args = parser.parse_args(argv)
    if args.ship_recommendations is None and not (args.grid and args.output):
        parser.error("--grid and --output are required (or --ship-recommendations FOLDER...)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = shlex.join(["python", "eval/ablations/run_ablations.py", *(sys.argv[1:] if argv is None else argv)])
    if args.ship_recommendations is not None:
        return ship_recommendations(args.ship_recommendations, command)
    return run_study(args.grid, args.output, command, args.only, args.shard, args.max_runs, args.report_only)


if __name__ == "__main__":
    main()
