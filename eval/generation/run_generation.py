"""Evaluate the generation study's generators and write its report (``eval/results/generation/REPORT.md``).

    python eval/generation/run_generation.py                          # every piece, then the report
    python eval/generation/run_generation.py --only nll,cost          # some pieces
    python eval/generation/run_generation.py --report-only            # the report from the JSON there

Pieces (``generation.study``): ``nll`` (held-out NLL by position to 5 minutes), ``generate`` (continuations of
30 s, 1 min and 5 min prompts, their drift metrics and listening samples), ``cost`` (decoding time and cache
against context length), ``stream`` (chunked generation latency). Each writes JSON per model or per
continuation and skips what exists, so a rerun resumes. The generators come from
``run_scripts/train_generators.py``; the codes from the cache it built.
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from modeling_lact_audio.generation.report import write_report
from modeling_lact_audio.generation.study import PIECES, StudySettings, run_study, write_json
from modeling_lact_audio.generation.study_data import load_generation_data
from modeling_lact_audio.generation.training import GENERATORS, INFO


def _floats(text: str) -> tuple:
    return tuple(float(x) for x in text.split(",") if x)


def _ints(text: str) -> tuple:
    return tuple(int(x) for x in text.split(",") if x)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--models`` and ``--only`` become tuples."""
    defaults = StudySettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=defaults.models, help="the output of train_generators.py")
    parser.add_argument("--results", default=defaults.results)
    parser.add_argument("--models", default=",".join(defaults.kinds), help=f"comma-separated, of {GENERATORS}")
    parser.add_argument("--only", default=",".join(PIECES), help=f"comma-separated pieces, of {PIECES}")
    parser.add_argument("--report-only", action="store_true", help="only write REPORT.md from the JSON")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--bin-seconds", type=float, default=defaults.bin_seconds)
    parser.add_argument("--max-context-seconds", type=float, default=defaults.max_context_seconds)
    parser.add_argument("--prompt-seconds", type=_floats, default=defaults.prompt_seconds)
    parser.add_argument("--prompts-per-length", type=_ints, default=defaults.prompts_per_length)
    parser.add_argument("--continuation-seconds", type=float, default=defaults.continuation_seconds)
    parser.add_argument(
        "--subset-prompts",
        type=int,
        default=defaults.subset_prompts,
        help="prompts (of the longest length) that also run greedy, top-k 50 and temperature 0.7",
    )
    parser.add_argument("--window-seconds", type=float, default=defaults.window_seconds)
    parser.add_argument("--no-dnsmos", action="store_true")
    parser.add_argument("--cost-context-seconds", type=_floats, default=defaults.cost_context_seconds)
    parser.add_argument("--cost-new-frames", type=int, default=defaults.cost_new_frames)
    parser.add_argument("--stream-seconds", type=float, default=defaults.stream_seconds)
    parser.add_argument("--stream-chunk-frames", type=int, default=defaults.stream_chunk_frames)
    parser.add_argument("--samples", type=int, default=defaults.samples, help="prompts with listening samples")
    parser.add_argument("--sample-context-seconds", type=float, default=defaults.sample_context_seconds)
    parser.add_argument("--sample-seconds", type=float, default=defaults.sample_seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tokenizer-results", default="eval/results/audio_tokenizer/results.json")
    args = parser.parse_args(argv)
    args.models = tuple(m for m in args.models.split(",") if m)
    args.only = tuple(p for p in args.only.split(",") if p)
    return args


def main(argv=None) -> Path:
    """Run the chosen pieces (unless ``--report-only``) and write ``REPORT.md``; returns its path."""
    args = parse_args(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if not args.report_only:
        settings = StudySettings(
            results=str(results),
            models=args.models_dir,
            kinds=args.models,
            threads=args.threads,
            bin_seconds=args.bin_seconds,
            max_context_seconds=args.max_context_seconds,
            prompt_seconds=args.prompt_seconds,
            prompts_per_length=args.prompts_per_length,
            continuation_seconds=args.continuation_seconds,
            subset_prompts=args.subset_prompts,
            window_seconds=args.window_seconds,
            use_dnsmos=not args.no_dnsmos,
            cost_context_seconds=args.cost_context_seconds,
            cost_new_frames=args.cost_new_frames,
            stream_seconds=args.stream_seconds,
            stream_chunk_frames=args.stream_chunk_frames,
            samples=args.samples,
            sample_context_seconds=args.sample_context_seconds,
            sample_seconds=args.sample_seconds,
            seed=args.seed,
        )
        info = json.loads((Path(args.models_dir) / args.models[0] / INFO).read_text())
        tokens = Path(info["tokens"])
        data = load_generation_data(json.loads((tokens / "meta.json").read_text())["settings"], str(tokens.parent))
        train_command = Path(args.models_dir) / "command.txt"
        # every evaluation command that wrote part of these results, in order (a full run starts the list anew)
        evaluate = "python eval/generation/run_generation.py " + shlex.join(argv_list)
        earlier = json.loads((results / "command.json").read_text()) if (results / "command.json").exists() else {}
        done = earlier.get("evaluate") or []
        done = [done] if isinstance(done, str) else done
        write_json(
            results / "command.json",
            {
                "train": train_command.read_text().strip() if train_command.exists() else None,
                "evaluate": [evaluate] if set(args.only) == set(PIECES) else list(dict.fromkeys([*done, evaluate])),
                "report": "python eval/generation/run_generation.py --report-only"
                + ("" if args.results == StudySettings().results else f" --results {args.results}"),
            },
        )
        start = time.time()
        run_study(data, settings, args.only)
        print(f"evaluation done in {(time.time() - start) / 60:.1f} min")
    path = write_report(results, args.tokenizer_results)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
