"""Joint CTC / attention decoding of a recogniser folder (its shipped Whisper decoder and tuned CTC weight) on the
test splits, beside systems of an earlier evaluation on the same utterances.

    python eval/recogniser_joint_eval.py --folder model_cards/checkpoints/lact_whisper_ctc \\
        --keep-from eval/results/recogniser/results.json \\
        --keep 'lact + LM' 'whisper tiny.en zero-shot (greedy)' --output eval/results/recogniser_joint

Writes ``results.json`` (WER/CER with 95% bootstrap intervals, paired bootstrap p-values of the joint system
against each kept one, RTF), ``transcripts.json``, ``REPORT.md`` and ``results.png``; with ``--card``, rewrites
that model card's joint-decoding section from them.
"""

import argparse
import shlex
import sys
from pathlib import Path

SPLITS = ["test_seen", "test_unseen_speakers", "test_noise", "test_domain", "test_real"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="a recogniser folder with attention_decoder/")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", default=SPLITS)
    parser.add_argument("--rows", type=int, default=200, help="rows per split (a fixed random subset)")
    parser.add_argument("--keep-from", default=None, help="an earlier results.json on the same utterances")
    parser.add_argument("--keep", nargs="+", default=[], metavar="SYSTEM[=NAME]", help="systems kept from it")
    parser.add_argument("--name", default=None, help="the joint system's name in the report")
    parser.add_argument("--output", default="eval/results/recogniser_joint")
    parser.add_argument("--card", default=None, help="a model card (README.md) whose joint-decoding section to rewrite")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    from modeling_lact_audio.recogniser.evaluation import kept_from_arguments
    from modeling_lact_audio.recogniser.joint_evaluation import evaluate_joint_decoding

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = kept_from_arguments(args.keep_from, args.keep)
    results = evaluate_joint_decoding(
        args.folder,
        args.corpus,
        args.splits,
        args.rows,
        args.output,
        kept=kept,
        name=args.name,
        command=shlex.join(["python", "eval/recogniser_joint_eval.py", *(sys.argv[1:] if argv is None else argv)]),
    )
    if args.card:
        from modeling_lact_audio.recogniser.model_card import joint_card_section, with_joint_section

        card = Path(args.card)
        card.write_text(with_joint_section(card.read_text(), joint_card_section(results, Path(args.folder).name)))
    return results


if __name__ == "__main__":
    main()
