"""Audio processors for lact-audio: feature extractor, CTC tokenizer, audio tokenizers, processor.

Imports flow one way: nothing here imports the models or the kernels.
"""

from .audio_tokenization_codec2 import Codec2AudioTokenizer, Codec2AudioTokenizerConfig
from .audio_tokenization_lact import LaCTAudioTokenizer, LaCTAudioTokenizerConfig
from .feature_extraction_lact import LaCTFeatureExtractor
from .processing_lact import LaCTProcessor
from .tokenization_lact_ctc import LaCTCTCTokenizer, normalize_text


def register_auto_classes(config_class) -> None:
    """Register the processor parts with the transformers Auto classes for ``config_class``.

    ``AutoFeatureExtractor`` -> :class:`LaCTFeatureExtractor`, ``AutoTokenizer`` ->
    :class:`LaCTCTCTokenizer`, ``AutoProcessor`` -> :class:`LaCTProcessor`. Idempotent: calling it
    again (with the same or another config class) is harmless.
    """
    from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer

    AutoFeatureExtractor.register(config_class, LaCTFeatureExtractor, exist_ok=True)
    AutoTokenizer.register(config_class, tokenizer_class=LaCTCTCTokenizer, exist_ok=True)
    AutoProcessor.register(config_class, LaCTProcessor, exist_ok=True)


__all__ = [
    "Codec2AudioTokenizer",
    "Codec2AudioTokenizerConfig",
    "LaCTAudioTokenizer",
    "LaCTAudioTokenizerConfig",
    "LaCTCTCTokenizer",
    "LaCTFeatureExtractor",
    "LaCTProcessor",
    "normalize_text",
    "register_auto_classes",
]
