"""The offline speech corpus: voices, text, noise and the build that writes a ``datasets.DatasetDict``.

Entry point: :func:`modeling_lact_audio.corpus.build.build` (``python run_scripts/make_corpus.py``).
"""
