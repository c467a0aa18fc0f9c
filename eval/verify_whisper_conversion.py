"""Check the converted Whisper against faster-whisper (``modeling_lact_audio.whisper_conversion.verify``).

    python eval/verify_whisper_conversion.py [--model HF_DIR] [--ct2 CT2_DIR] [--n 60]
        [--corpus data/corpus --corpus-n 60]
"""

from modeling_lact_audio.whisper_conversion.verify import main

if __name__ == "__main__":
    main()
