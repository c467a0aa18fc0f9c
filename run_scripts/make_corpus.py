"""Build the offline multi-speaker speech corpus (``modeling_lact_audio.corpus.build``).

    python run_scripts/make_corpus.py --output data/corpus [--hours 20] [--seed 0] [--tiny] [--workers 2]
        [--train-real [--real-speech-cache DIR]]

``--train-real`` adds the ``train_real`` split of recorded human speech; run on a finished corpus built
without it (same ``--hours``/``--seed``), it adds only that split.
"""

from modeling_lact_audio.corpus.build import main

if __name__ == "__main__":
    main()
