"""Write the pretrained Whisper tiny.en baseline as a transformers folder (``make whisper-baseline``).

    python run_scripts/whisper_baseline.py [--output DIR] [--force]
"""

from modeling_lact_audio.whisper_conversion.baseline import main

if __name__ == "__main__":
    main()
