"""LaCTProcessor: routes audio to LaCTFeatureExtractor and text to LaCTCTCTokenizer (as CTC labels)."""

import numpy as np
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from .audio_input import split_batch


class LaCTProcessor(ProcessorMixin):
    """Wraps a :class:`LaCTFeatureExtractor` and a :class:`LaCTCTCTokenizer` into one object.

    ``processor(audio=..., sampling_rate=..., text=...)`` returns the feature extractor's output
    (``input_features`` ``[B, T', n_mels]`` or ``input_values``, ``attention_mask``) plus ``labels``:
    int64 ``[B, U]`` padded with -100 (ignored by the CTC loss) when ``return_tensors`` is set, else
    lists of ids. Text alone gives the tokenizer's output. ``batch_decode`` / ``decode`` read CTC
    ids (repeats collapsed, blanks dropped; -100 is read as padding). ``save_pretrained`` writes
    ``processor_config.json`` (feature extractor settings, normalisation statistics included),
    ``vocab.json`` and ``tokenizer_config.json``; ``AutoProcessor`` loads it once
    ``register_auto_classes`` has run.
    """

    def __init__(self, feature_extractor, tokenizer):
        super().__init__(feature_extractor, tokenizer)

    def __call__(
        self,
        audio=None,
        text: str | list[str] | None = None,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise ``audio`` and tokenize ``text``.

        Args:
            audio: one utterance or a batch, as ``LaCTFeatureExtractor.__call__`` accepts.
            text: one transcript or a list, one per utterance.
            sampling_rate: rate of ``audio`` in Hz.
            return_tensors: ``"pt"``, ``"np"`` or None.
            kwargs: passed to the feature extractor (``speaker_ids``, ``padding``, ...).
        """
        if audio is None and text is None:
            raise ValueError("You need to specify either an `audio` or `text` input to process.")
        if text is not None and audio is not None:
            n_audio = len(split_batch(audio)[0])
            n_text = 1 if isinstance(text, str) else len(text)
            if n_text != n_audio:
                raise ValueError(
                    f"LaCTProcessor got {n_audio} utterance(s) and {n_text} transcript(s): pass one text per utterance."
                )
        if text is not None:
            encodings = self.tokenizer(text, padding=return_tensors is not None, return_tensors=return_tensors)
            if audio is None:
                return encodings
        inputs = self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **kwargs)
        if text is not None:
            labels = encodings["input_ids"]
            if return_tensors is not None:
                # -100 marks padding: the CTC loss ignores it.
                padding = encodings["attention_mask"] == 0
                labels = (
                    labels.masked_fill(padding, -100) if return_tensors == "pt" else np.where(padding, -100, labels)
                )
            inputs["labels"] = labels
        return inputs

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """Texts of CTC ids ``[B, T]`` (or labels padded with -100, with ``group_tokens=False``)."""
        return self.tokenizer.batch_decode(sequences, **kwargs)

    def decode(self, token_ids, **kwargs) -> str:
        """Text of CTC ids ``[T]`` (or labels, with ``group_tokens=False``)."""
        return self.tokenizer.decode(token_ids, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return self.feature_extractor.model_input_names + ["labels"]
