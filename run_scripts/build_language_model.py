"""Build the recogniser's word n-gram LM and lexicon from the train split's text (never a test text).

    python run_scripts/build_language_model.py --corpus data/corpus --vocab-from outputs/recogniser/lact/best \\
        --output outputs/recogniser

writes ``OUTPUT/language_model/{lm.arpa, lexicon.txt, decoder_config.json}``.
"""

import argparse

from modeling_lact_audio.data import load_split
from modeling_lact_audio.processors import LaCTCTCTokenizer, normalize_text
from modeling_lact_audio.recogniser.lm import build_language_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--split", default="train", help="the text source; only ever a training split")
    parser.add_argument("--vocab-from", required=True, help="a folder with the CTC tokenizer (its vocab.json)")
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    if args.split.startswith("test") or args.split == "validation":
        raise SystemExit(f"--split {args.split!r}: the LM may only see training text")
    texts = [normalize_text(t) for t in load_split(args.corpus, args.split).select_columns(["text"])["text"]]
    vocab = LaCTCTCTokenizer.from_pretrained(args.vocab_from).get_vocab()
    folder = build_language_model(texts, vocab, args.output, order=args.order)
    print(f"wrote {folder} from {len(texts)} sentences of {args.split!r}")
    return folder


if __name__ == "__main__":
    main()
