"""Test-time adaptation, measured: carried LaCT fast weights against reset, SUTA and supervised fine-tuning.

    python eval/adaptation/run_adaptation.py all --head lact=outputs/recogniser_v2/lact/best \\
        --head baseline_transformer=outputs/recogniser_v2/baseline_transformer/best \\
        --cache cache/whisper_tiny_en_states_full --output eval/results/adaptation

Subcommands (one protocol each, or ``all``): ``speaker`` (k previous utterances of the speaker, k = 0 is
the reset baseline, and the state carried from the stream's start), ``noise`` and ``domain`` (the same
over sessions of one noise condition / domain), ``conversation`` (interleaved speakers), ``failure`` (a
speaker change), ``presets`` (a saved state per domain or noise condition), ``gradient`` (SUTA and
supervised fine-tuning on the same utterances, timed on one CPU thread), ``evolution`` (how far the
fast weights move) and ``reliance`` (the LaCT branch's output scaled by 1, 0.5, 0: is it used at all).
Only heads with LaCT fast weights carry a state; the others get the reset, SUTA and fine-tuning baselines.

Writes ``results.json`` (every number, per-utterance error counts, the command lines), ``REPORT.md`` and
the plots into ``--output``; a protocol run again replaces only its own results. ``report --merge-from DIR``
merges the protocols of runs written elsewhere (e.g. side by side) and re-renders the report.
"""

import argparse
import shlex
import sys

from modeling_lact_audio.adaptation.experiment import PROTOCOLS, AdaptationSettings, merge_results, run_adaptation


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "protocol", choices=[*PROTOCOLS, "all", "report"], help="a protocol, all of them, or 'report' (re-render)"
    )
    parser.add_argument(
        "--merge-from", nargs="+", default=[], metavar="FOLDER", help="report: results folders to merge in first"
    )
    parser.add_argument("--head", action="append", default=[], metavar="NAME=FOLDER", help="a trained head")
    parser.add_argument("--cache", default="cache/whisper_tiny_en_states_full", help="folder of cached splits")
    parser.add_argument("--splits", nargs="+", default=None, help="splits of every protocol (default: its own)")
    parser.add_argument("--ks", type=int, nargs="+", default=[0, 1, 2, 5, 10], help="context lengths (with 0)")
    parser.add_argument("--max-streams", type=int, default=None, help="streams per split (a seeded random subset)")
    parser.add_argument("--max-utterances", type=int, default=None, help="first utterances of each stream")
    parser.add_argument("--session-length", type=int, default=11, help="session length of noise/domain groups")
    parser.add_argument("--evolution-streams", type=int, default=6, help="streams per split the evolution traces")
    parser.add_argument("--turns", type=int, default=5, help="turns per speaker in a conversation")
    parser.add_argument("--before", type=int, default=5, help="utterances of speaker A before a change")
    parser.add_argument("--after", type=int, default=5, help="utterances of speaker B after a change")
    parser.add_argument("--adapt", type=int, default=10, help="utterances a preset adapts on")
    parser.add_argument("--labelled", type=int, default=5, help="labelled utterances of the fine-tuning baseline")
    parser.add_argument("--suta-steps", type=int, default=10)
    parser.add_argument(
        "--suta-lr", type=float, default=2e-4, help="SUTA's AdamW learning rate (tune it on --splits validation)"
    )
    parser.add_argument("--finetune-steps", type=int, default=50)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument(
        "--finetune-scopes",
        nargs="*",
        choices=["head", "full"],
        default=["head", "full"],
        help="supervised fine-tunes of the gradient protocol (none: SUTA and reset only)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        help="multiply every LaCT mixer's per-token rates (0 freezes the fast weights; under Muon any factor > 0 "
        "changes nothing, see adaptation.reliance.scaled_lact_rates)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the forwards")
    parser.add_argument("--lm", default=None, help="language_model folder: LM beam search instead of greedy")
    parser.add_argument("--output", default="eval/results/adaptation")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    if args.protocol == "report":
        return merge_results(args.output, args.merge_from)
    torch.set_num_threads(args.threads)
    bad = [h for h in args.head if "=" not in h]
    if bad:
        raise SystemExit(f"--head takes NAME=FOLDER, got {bad}")
    settings = AdaptationSettings(
        ks=tuple(args.ks),
        session_length=args.session_length,
        max_streams=args.max_streams,
        max_utterances=args.max_utterances,
        evolution_streams=args.evolution_streams,
        turns=args.turns,
        before=args.before,
        after=args.after,
        adapt=args.adapt,
        labelled=args.labelled,
        suta_steps=args.suta_steps,
        suta_lr=args.suta_lr,
        finetune_scopes=tuple(args.finetune_scopes),
        finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        seed=args.seed,
        rate_scale=args.rate_scale,
    )
    return run_adaptation(
        list(PROTOCOLS) if args.protocol == "all" else [args.protocol],
        dict(h.split("=", 1) for h in args.head),
        args.cache,
        args.output,
        splits=args.splits,
        settings=settings,
        lm_folder=args.lm,
        command=shlex.join(["python", "eval/adaptation/run_adaptation.py", *(sys.argv[1:] if argv is None else argv)]),
    )


if __name__ == "__main__":
    main()
