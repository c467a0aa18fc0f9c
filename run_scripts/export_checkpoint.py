"""Export a training run as a Hub-ready checkpoint folder, or refresh a folder's generated files
(``modeling_lact_audio.export.checkpoint``).

    python run_scripts/export_checkpoint.py RUN/best model_cards/checkpoints/NAME --storage_dtype bfloat16
    python run_scripts/export_checkpoint.py --refresh-code model_cards/checkpoints/*/
"""

from modeling_lact_audio.export.checkpoint import main

if __name__ == "__main__":
    main()
