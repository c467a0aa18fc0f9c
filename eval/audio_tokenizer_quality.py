"""Reconstruction quality of the mel_rvq audio tokenizer on held-out espeak-ng voices, per number of codebooks.

The metrics are described in ``modeling_lact_audio.benchmarks.tokenizer_quality``. Needs ``espeak-ng``.
Usage: ``python eval/audio_tokenizer_quality.py [--codebooks 1 2 4 8] [--codebook-size 256]``.
"""

import argparse

import torch

from modeling_lact_audio.benchmarks.tokenizer_quality import evaluate_codebooks, format_table


def main(argv=None) -> dict:
    """Fit, encode, decode and score; prints the table and returns ``evaluate_codebooks``' rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codebooks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20, help="k-means iterations of the fit")
    parser.add_argument("--griffin-lim-iters", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = evaluate_codebooks(args.codebooks, args.codebook_size, args.iters, args.griffin_lim_iters)
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
