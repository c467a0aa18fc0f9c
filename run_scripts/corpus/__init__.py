"""Building blocks of the offline speech corpus (see run_scripts/make_corpus.py)."""
