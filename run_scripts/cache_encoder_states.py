"""Encode corpus splits once with a frozen Whisper encoder and keep the states on disk.

    python run_scripts/cache_encoder_states.py --splits test_unseen_speakers test_real \\
        --cache cache/whisper_tiny_en_states_full

Each split lands in ``--cache/<split>`` (a ``datasets`` folder with ``states`` float16 ``[T', d_model]``
and the split's metadata, session columns included); a complete cache of the same encoder and rows is
reused. ``--rows`` takes a fixed random subset (seed 0) of every split; without it, whole splits.

With ``--sessions`` the splits are session splits (``sessions_*``: one long recording per row), cached one
row per utterance segment (uid ``<session>/<k>``, the segment's text and states; ``session_id`` and
``utterance_index`` give the session order), and ``--rows`` is a subset of sessions:

    python run_scripts/cache_encoder_states.py --sessions --splits sessions_test_seen sessions_test_unseen \\
        --cache cache/whisper_tiny_en_session_segments
"""

import argparse
from pathlib import Path

from modeling_lact_audio.recogniser.encoder_cache import cache_session_segments, cache_split, load_whisper_encoder
from modeling_lact_audio.whisper_conversion.baseline import default_output_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--splits", nargs="+", required=True)
    parser.add_argument("--cache", required=True, help="cache folder (one sub-folder per split)")
    parser.add_argument(
        "--rows", type=int, default=None, help="a fixed random subset of each split (of sessions with --sessions)"
    )
    parser.add_argument("--sessions", action="store_true", help="session splits: cache one row per utterance segment")
    parser.add_argument("--whisper", default=str(default_output_dir()), help="transformers Whisper folder")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Encode ``--splits``; returns ``{split: rows cached}`` (segments with ``--sessions``)."""
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    encoder, feature_extractor = load_whisper_encoder(args.whisper)
    encoder_id = Path(args.whisper).name
    cache = cache_session_segments if args.sessions else cache_split
    return {
        split: len(cache(args.corpus, split, args.cache, encoder, feature_extractor, args.rows, encoder_id=encoder_id))
        for split in args.splits
    }


if __name__ == "__main__":
    main()
