"""Efficiency benchmark of LaCT against full and sliding-window attention (``modeling_lact_audio.benchmarks``).

    python eval/efficiency/run.py [--quick | --smoke] [--device cuda] [--sections op layer ...]

is the same as ``python -m modeling_lact_audio.benchmarks``; ``--help`` lists the options.
"""

from modeling_lact_audio.benchmarks import suite


def main(argv=None) -> dict:
    """Run the suite with ``argv`` (the command line when None); returns its results."""
    return suite.main(argv)


if __name__ == "__main__":
    main()
