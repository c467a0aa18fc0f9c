"""Tune SUTA's learning rate on a validation split, then report the test splits with the chosen rate.

    python eval/adaptation/tune_suta.py --head lact=outputs/recogniser_v3/lact/best \\
        --cache cache/whisper_tiny_en_states --rates 2e-4 1e-3 3e-3 1e-2 3e-2 \\
        --output eval/results/adaptation/suta_lr_validation

Writes ``results.json`` and ``REPORT.md`` into ``--output``: per head, SUTA's WER and relative change against
the reset model at each rate, and the chosen rate (lowest validation WER). A split with "test" in its name is
refused. Then: ``run_adaptation.py gradient --suta-lr <chosen> --splits sessions_test_unseen ...``.
"""

import argparse
import shlex
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", action="append", default=[], metavar="NAME=FOLDER", help="a trained head")
    parser.add_argument("--cache", default="cache/whisper_tiny_en_states", help="folder of cached splits")
    parser.add_argument("--split", default="validation", help="the held-out split the rate is chosen on")
    parser.add_argument("--rates", type=float, nargs="+", default=[2e-4, 1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--labelled", type=int, default=5, help="utterances skipped at each stream's start")
    parser.add_argument("--suta-steps", type=int, default=10)
    parser.add_argument("--max-streams", type=int, default=None)
    parser.add_argument("--max-utterances", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--output", default="eval/results/adaptation/suta_lr_validation")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    from modeling_lact_audio.adaptation.experiment import AdaptationSettings
    from modeling_lact_audio.adaptation.suta_tuning import check_tuning_split, render_tuning_report, tune_suta_lr
    from modeling_lact_audio.recogniser.evaluation import write_json

    args = parse_args(argv)
    bad = [h for h in args.head if "=" not in h]
    if bad or not args.head:
        raise SystemExit(f"--head takes NAME=FOLDER (at least one), got {args.head}")
    try:
        check_tuning_split(args.split)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    torch.set_num_threads(args.threads)
    settings = AdaptationSettings(
        labelled=args.labelled,
        suta_steps=args.suta_steps,
        max_streams=args.max_streams,
        max_utterances=args.max_utterances,
        seed=args.seed,
    )
    result = tune_suta_lr(dict(h.split("=", 1) for h in args.head), args.cache, args.rates, args.split, settings)
    command = shlex.join(["python", "eval/adaptation/tune_suta.py", *(sys.argv[1:] if argv is None else argv)])
    result["command"] = command
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "results.json", result)
    (output / "REPORT.md").write_text(render_tuning_report(result, command))
    for name, entry in result["heads"].items():
        print(f"{name}: chosen SUTA lr {entry['chosen_lr']:g} on {args.split}")
    return result


if __name__ == "__main__":
    main()
