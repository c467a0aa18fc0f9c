"""``python -m modeling_lact_audio.benchmarks``: the efficiency suite (``suite.main``)."""

from .suite import main

main()
