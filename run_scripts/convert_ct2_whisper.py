"""Convert a CTranslate2 Whisper folder into a transformers folder (``modeling_lact_audio.whisper_conversion``).

    python run_scripts/convert_ct2_whisper.py --ct2 CT2_DIR --output HF_DIR
"""

from modeling_lact_audio.whisper_conversion.convert import main

if __name__ == "__main__":
    main()
