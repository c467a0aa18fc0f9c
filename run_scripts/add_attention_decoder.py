"""Ship Whisper's pretrained decoder in a recogniser folder for joint CTC / attention decoding, its CTC weight
tuned on validation data (``modeling_lact_audio.recogniser.attention_decoder``).

    python run_scripts/add_attention_decoder.py --folder model_cards/checkpoints/lact_whisper_ctc

Writes ``FOLDER/attention_decoder/`` (decoder weights in float16, config, tokenizer, ``joint_config.json``). The
weight is chosen on ``--tune-splits`` (default: synthetic ``validation`` and recorded ``train_real``, which the
shipped head never trained on), by the lowest mean WER over them; no test split is read.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from modeling_lact_audio.whisper_conversion.baseline import default_output_dir

TEST_PREFIXES = ("test", "sessions_test")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, help="a recogniser folder on Whisper's encoder")
    parser.add_argument("--whisper", default=str(default_output_dir()), help="the transformers Whisper folder")
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--tune-splits", nargs="+", default=["validation", "train_real"])
    parser.add_argument("--tune-rows", type=int, default=64, help="rows per tuning split (a fixed random subset)")
    parser.add_argument("--ctc-weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=10, help="decoder tokens per beam and step CTC scores")
    parser.add_argument("--no-tune", action="store_true", help="write --ctc-weights' first value, untuned")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    from modeling_lact_audio.asr import load_whisper
    from modeling_lact_audio.data import load_split, read_audio
    from modeling_lact_audio.recogniser.attention_decoder import (
        ATTENTION_DECODER_FOLDER,
        JOINT_CONFIG,
        JointCTCAttentionDecoder,
        save_attention_decoder,
        tune_joint_decoding,
    )

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tests = [s for s in args.tune_splits if s.startswith(TEST_PREFIXES)]
    if tests:
        raise SystemExit(f"--tune-splits {tests}: a test split is never tuned on; use validation or train_real")
    command = shlex.join(["python", "run_scripts/add_attention_decoder.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {"ctc_weight": args.ctc_weights[0], "num_beams": args.num_beams, "candidates": args.candidates}
    whisper = load_whisper(args.whisper).eval()
    save_attention_decoder(whisper, WhisperTokenizer.from_pretrained(args.whisper), args.folder, settings)
    if args.no_tune:
        return settings
    decoder = JointCTCAttentionDecoder.from_pretrained(args.folder)  # the float16 weights the folder ships
    extractor = WhisperFeatureExtractor.from_pretrained(args.whisper)
    sets = {}
    for split in args.tune_splits:
        data = load_split(args.corpus, split, max_rows=args.tune_rows, shuffle_seed=0)
        sets[split] = ([read_audio(c) for c in data["audio"]], list(data["text"]))
    tuning = tune_joint_decoding(decoder, extractor, sets, args.ctc_weights)
    settings.update(ctc_weight=tuning["ctc_weight"], tuning={**tuning, "command": command})
    target = Path(args.folder) / ATTENTION_DECODER_FOLDER / JOINT_CONFIG
    target.write_text(json.dumps({**json.loads(target.read_text()), **settings}, indent=1))
    for g in tuning["grid"]:
        cells = "  ".join(f"{s} WER {100 * g[s]['wer']:.1f}%" for s in args.tune_splits)
        print(f"ctc_weight {g['ctc_weight']:.2f}: {cells}  mean {100 * g['mean_wer']:.1f}%")
    print(f"chosen ctc_weight {tuning['ctc_weight']} -> {target}")
    return settings


if __name__ == "__main__":
    main()
