"""Evaluate recogniser heads (greedy and with the word LM) and Whisper tiny.en zero-shot on the same utterances.

    python eval/recogniser_eval.py --head lact=outputs/recogniser/lact/best \\
        --head baseline_transformer=outputs/recogniser/baseline_transformer/best --reference lact \\
        --lm outputs/recogniser/language_model --output eval/results/recogniser

Writes ``results.json`` (WER/CER with 95% bootstrap intervals, paired bootstrap p-values against
``--reference``, parameters, training time, RTF), ``REPORT.md`` and ``results.png``.
"""

import argparse
import shlex
import sys

from modeling_lact_audio.recogniser.evaluation import evaluate_recognisers, kept_from_arguments, wer_cer
from modeling_lact_audio.whisper_conversion.baseline import default_output_dir

SPLITS = ["test_seen", "test_unseen_speakers", "test_noise", "test_domain", "test_real"]
DEFAULT_WHISPER = str(default_output_dir())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", action="append", default=[], metavar="NAME=FOLDER", help="a trained head")
    parser.add_argument("--cache", default="cache/whisper_tiny_en_states")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", default=SPLITS)
    parser.add_argument("--rows", type=int, default=200, help="rows per test split (a fixed random subset)")
    parser.add_argument("--validation-rows", type=int, default=300, help="validation rows the LM weights are tuned on")
    parser.add_argument("--lm", default=None, help="language_model folder (build_language_model)")
    parser.add_argument(
        "--whisper", default=DEFAULT_WHISPER, help="Whisper folder: the encoder of the cache and the zero-shot system"
    )
    parser.add_argument("--no-zero-shot", action="store_true", help="skip Whisper's own decoder")
    parser.add_argument("--whisper-beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--reference", default=None, help="system the paired p-values compare against")
    parser.add_argument(
        "--keep-from", default=None, help="an earlier results.json whose --keep systems are kept (same utterances)"
    )
    parser.add_argument(
        "--keep", nargs="+", default=[], metavar="SYSTEM[=NAME]", help="systems kept from --keep-from (renamed NAME)"
    )
    parser.add_argument("--output", default="eval/results/recogniser")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    heads = dict(h.split("=", 1) for h in args.head)
    kept = kept_from_arguments(args.keep_from, args.keep)
    return evaluate_recognisers(
        heads,
        args.cache,
        args.corpus,
        args.splits,
        args.rows,
        args.output,
        lm_folder=args.lm,
        whisper_folder=None if args.no_zero_shot else args.whisper,
        encoder_folder=args.whisper,
        validation_rows=args.validation_rows,
        whisper_beams=tuple(args.whisper_beams),
        reference=args.reference,
        score_fn=wer_cer,
        kept=kept,
        command=shlex.join(["python", "eval/recogniser_eval.py", *(sys.argv[1:] if argv is None else argv)]),
    )


if __name__ == "__main__":
    main()
