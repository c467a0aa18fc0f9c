"""Train a recogniser head on a frozen pretrained Whisper encoder's cached states, in sessions.

    python run_scripts/train_recogniser.py --corpus data/corpus --model lact --output outputs/recogniser/lact

The encoder runs once per split (``--cache``, reused by every model of the recipe); ``--model`` is one of
``lact``, ``baseline_transformer``, ``baseline_sliding_window``, ``bilstm``; every model sees the same
batches for the same number of steps.
"""

import argparse
import dataclasses
from pathlib import Path

import datasets

from modeling_lact_audio.processors import LaCTCTCTokenizer
from modeling_lact_audio.recogniser.encoder_cache import cache_split, load_whisper_encoder
from modeling_lact_audio.recogniser.evaluation import wer_cer
from modeling_lact_audio.recogniser.heads import RECOGNISER_KINDS, build_recogniser, recogniser_config
from modeling_lact_audio.recogniser.training import RecogniserTrainingArguments, add_labels, train_recogniser
from modeling_lact_audio.whisper_conversion.baseline import default_output_dir

DEFAULT_WHISPER = str(default_output_dir())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument(
        "--whisper", default=DEFAULT_WHISPER, help="transformers Whisper folder (make whisper-baseline)"
    )
    parser.add_argument("--cache", default="cache/whisper_tiny_en_states", help="encoder-state cache folder")
    parser.add_argument("--model", choices=RECOGNISER_KINDS, default="lact")
    parser.add_argument("--output", required=True)
    parser.add_argument("--train-rows", type=int, default=None, help="a fixed random subset of the train split")
    parser.add_argument(
        "--extra-train-split",
        action="append",
        default=[],
        metavar="SPLIT[:REPEATS]",
        help="another training split added whole to the train rows (e.g. train_real: make corpus-train-real), "
        "REPEATS copies of it (default 1), each copy its own speakers so a session never holds an utterance twice; "
        "never a test or validation split",
    )
    parser.add_argument("--validation-rows", type=int, default=300)
    parser.add_argument("--lact-chunk-size", type=int, default=128)
    parser.add_argument(
        "--window-size",
        type=int,
        default=32,
        help="attention frames each side (lact, baseline_sliding_window); 0: a frame sees only itself, so a "
        "lact head's only token mixing is its fast weights",
    )
    for f in dataclasses.fields(RecogniserTrainingArguments):
        if f.name in ("output_dir", "extra"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)
    return parser.parse_args(argv)


def extra_training_rows(corpus, spec, cache, encoder, feature_extractor, encoder_id, tokenizer) -> datasets.Dataset:
    """The cached rows of ``spec`` (``SPLIT`` or ``SPLIT:REPEATS``) for training: REPEATS copies, copy r's
    speakers renamed ``<speaker>#r`` (a session holds one speaker, so never one utterance twice).

    Raises:
        SystemExit: a test or validation split, REPEATS below 1, or a transcript character the tokenizer
            (built from the train split) lacks.
    """
    name, _, repeats = spec.partition(":")
    repeats = int(repeats or 1)
    if name.startswith("test") or name.startswith("sessions_test") or name == "validation":
        raise SystemExit(f"--extra-train-split {spec!r}: only a training split may be trained on")
    if repeats < 1:
        raise SystemExit(f"--extra-train-split {spec!r}: REPEATS must be at least 1")
    rows = cache_split(corpus, name, cache, encoder, feature_extractor, None, encoder_id=encoder_id)
    texts = list(rows["text"])
    unknown = [t for t, ids in zip(texts, tokenizer(texts)["input_ids"]) if tokenizer.unk_token_id in ids]
    if unknown:
        raise SystemExit(
            f"--extra-train-split {name!r}: {len(unknown)} transcripts have characters outside the train split's "
            f"alphabet, e.g. {unknown[0]!r}"
        )
    return datasets.concatenate_datasets(
        [rows.map(lambda s, r=r: {"speaker": f"{s}#{r}"}, input_columns="speaker") for r in range(repeats)]
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    encoder, feature_extractor = load_whisper_encoder(args.whisper)
    encoder_id = Path(args.whisper).name
    train = cache_split(
        args.corpus, "train", args.cache, encoder, feature_extractor, args.train_rows, encoder_id=encoder_id
    )
    validation = cache_split(
        args.corpus, "validation", args.cache, encoder, feature_extractor, args.validation_rows, encoder_id=encoder_id
    )
    tokenizer = LaCTCTCTokenizer.from_texts(train["text"])  # the train split's characters, as the LM's
    extras = [
        extra_training_rows(args.corpus, spec, args.cache, encoder, feature_extractor, encoder_id, tokenizer)
        for spec in args.extra_train_split
    ]
    train = datasets.concatenate_datasets([train, *extras]) if extras else train
    train, validation = add_labels(train, tokenizer), add_labels(validation, tokenizer)
    config = recogniser_config(len(tokenizer), lact_chunk_size=args.lact_chunk_size, window_size=args.window_size)
    model = build_recogniser(args.model, config, encoder.config.d_model)
    fields = {f.name for f in dataclasses.fields(RecogniserTrainingArguments)} - {"output_dir", "extra"}
    training_args = RecogniserTrainingArguments(
        output_dir=args.output,
        **{k: getattr(args, k) for k in fields},
        extra={
            "model": args.model,
            "train_rows": len(train),
            "corpus": args.corpus,
            **({"extra_train_splits": args.extra_train_split} if args.extra_train_split else {}),
        },
    )
    return train_recogniser(model, tokenizer, train, validation, training_args, wer_cer)


if __name__ == "__main__":
    main()
