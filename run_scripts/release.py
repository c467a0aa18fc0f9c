"""Build a Hub-ready release folder (weights, config, processor, modeling code, model card from the evaluation
JSON) from a CTC model folder, and optionally push it (``modeling_lact_audio.export.release``).

    python run_scripts/release.py model_cards/checkpoints/lact_whisper_ctc --system lact \
        --results eval/results/recogniser/results.json --output outputs/release/lact_whisper_ctc \
        --training-summary outputs/recogniser_v2/lact/summary.json [--push USER/REPO]
"""

from modeling_lact_audio.export.release import main

if __name__ == "__main__":
    main()
