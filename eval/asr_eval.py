"""Evaluate saved ASR model folders on corpus splits: WER/CER with 95% bootstrap intervals, real-time factor.

    python eval/asr_eval.py --models lact=outputs/small_cpu/lact/best base=outputs/small_cpu/baseline_transformer/best \
        --corpus data/corpus --splits test_seen test_unseen_speakers test_noise test_real \
        --max_examples 200 --output_dir eval/results/small_cpu

Each model folder is what training saves (``save_pretrained`` model + processor): a lact-audio or
Wav2Vec2 CTC model, a Whisper trained on characters, or a converted pretrained Whisper. Writes
``results.json``, ``results.md`` (one table) and ``results.png`` (WER per split with its interval;
training curves when the folder's run has a ``log.jsonl``). The library is
``modeling_lact_audio.asr_evaluation``.
"""

import argparse
from pathlib import Path

import modeling_lact_audio  # noqa: F401  (registers the lact-audio Auto classes)
from modeling_lact_audio.asr_evaluation import evaluate_models, markdown_table, write_report


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, evaluate every model on every split, write the report; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="FOLDER or NAME=FOLDER, one per model")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", default=["test_seen", "test_unseen_speakers", "test_noise", "test_real"])
    parser.add_argument("--max_examples", type=int, default=None, help="a fixed random subset of each split")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--output_dir", default="eval/results/asr")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    models = {}
    for spec in args.models:
        name, _, folder = spec.rpartition("=")
        models[name or Path(folder).parent.name or folder] = folder
    results = evaluate_models(
        models, args.corpus, args.splits, args.max_examples, args.batch_size, args.bootstrap, args.device
    )
    out = write_report(results, args.output_dir)
    print(markdown_table(results))
    print(f"plot: {(out / 'results.png').resolve()}")
    return results


if __name__ == "__main__":
    main()
