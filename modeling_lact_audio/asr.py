"""One transcriber for every saved recogniser folder, and the text normaliser used for scoring.

Used by ``eval/asr_eval.py``, the demo and the Whisper conversion check, so every number in the
project comes from the same decoding and the same normalisation.
"""

import json
from pathlib import Path

import jiwer
import numpy as np
import torch
from transformers import GenerationConfig, GenerationMixin

from .data import SAMPLING_RATE
from .processors import normalize_text


def normalize_for_scoring(text: str) -> str:
    """The normalisation applied to references and hypotheses before WER/CER.

    The CTC tokenizer's own normaliser (NFKC, lower case, punctuation to spaces, apostrophes kept), so a
    character model is scored on exactly the alphabet it writes; every earlier result in
    ``eval/results`` used it. (transformers' ``BasicTextNormalizer`` would split "don't" into two words,
    which a character CTC model never does.)
    """
    return normalize_text(text)


def per_utterance_errors(references: list[str], predictions: list[str]) -> dict[str, np.ndarray]:
    """Word and character edit counts and reference lengths ``[N]`` (int64), one entry per utterance."""
    out = {k: [] for k in ("word_errors", "words", "char_errors", "chars")}
    for ref, hyp in zip(references, predictions):
        w = jiwer.process_words(ref, hyp)
        c = jiwer.process_characters(ref, hyp)
        out["word_errors"].append(w.substitutions + w.deletions + w.insertions)
        out["words"].append(w.substitutions + w.deletions + w.hits)
        out["char_errors"].append(c.substitutions + c.deletions + c.insertions)
        out["chars"].append(c.substitutions + c.deletions + c.hits)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


class Transcriber:
    """Transcribes batches of 16 kHz float32 waveforms with a CTC model or a Whisper model.

    Args:
        model: a ``LaCTAudioForCTC`` / ``Wav2Vec2ForCTC`` (CTC, greedy), a Whisper trained here on
            characters, or the converted pretrained Whisper (``generate()`` with its own tokenizer).
        processor: the folder's processor (feature extractor + tokenizer).
        device: where the model runs.

    ``__call__(audio: list[np.ndarray [L_i]]) -> list[str]``; ``transcribe_batch(batch)`` takes an
    already collated batch (``input_features``/``input_values`` and ``attention_mask``).
    """

    def __init__(self, model, processor, device: str = "cpu", max_new_tokens: int = 400):
        self.model, self.processor, self.device = model.to(device).eval(), processor, torch.device(device)
        self.max_new_tokens = max_new_tokens
        config = model.config
        if config.model_type != "whisper":
            self.kind = "ctc"
        else:
            vocab = getattr(processor.tokenizer, "get_vocab", dict)()
            self.kind = "whisper_chars" if len(vocab) == config.vocab_size - 2 else "whisper_pretrained"
        self.num_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)

    @classmethod
    def from_pretrained(cls, folder: str, device: str = "cpu") -> "Transcriber":
        """Load the model and processor saved in ``folder``."""
        from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, WhisperForConditionalGeneration

        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no model folder at {folder!r}")
        config = AutoConfig.from_pretrained(folder)
        if config.model_type == "whisper":
            model = WhisperForConditionalGeneration.from_pretrained(folder)
            chars = Path(folder) / "vocab.json"
            if chars.exists() and len(json.loads(chars.read_text())) == config.vocab_size - 2:
                processor = AutoProcessor.from_pretrained(folder)
            else:
                from transformers import WhisperProcessor

                processor = WhisperProcessor.from_pretrained(folder)
        else:
            model, processor = AutoModelForCTC.from_pretrained(folder), AutoProcessor.from_pretrained(folder)
        return cls(model, processor, device)

    @torch.no_grad()
    def __call__(self, audio: list[np.ndarray]) -> list[str]:
        extractor = self.processor.feature_extractor
        if self.kind == "ctc":
            batch = self.processor(audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        elif self.kind == "whisper_pretrained":
            batch = extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")
        else:
            frames = 2 * self.model.config.max_source_positions
            features = extractor(
                audio,
                sampling_rate=SAMPLING_RATE,
                return_tensors="pt",
                padding="max_length",
                max_length=frames,
                truncation=True,
            )["input_features"]
            batch = {"input_features": features.transpose(1, 2)}
        return self.transcribe_batch(dict(batch))

    @torch.no_grad()
    def transcribe_batch(self, batch: dict) -> list[str]:
        """Transcripts of one collated batch (labels, if present, are ignored)."""
        batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
        tokenizer = self.processor.tokenizer
        if self.kind == "ctc":
            return tokenizer.batch_decode(self.model(**batch).logits.argmax(-1))
        if self.kind == "whisper_pretrained":
            ids = self.model.generate(batch["input_features"], max_new_tokens=200)
            return tokenizer.batch_decode(ids, skip_special_tokens=True)
        config = self.model.config
        generation = GenerationConfig(
            decoder_start_token_id=config.decoder_start_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.eos_token_id,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        # Whisper's own generate() expects its BPE vocabulary's task/language tokens; a character model has
        # none, so it decodes through the generic GenerationMixin loop.
        ids = GenerationMixin.generate(self.model, input_features=batch["input_features"], generation_config=generation)
        out = []
        for row in ids[:, 1:].tolist():
            row = row[: row.index(config.eos_token_id)] if config.eos_token_id in row else row
            out.append(tokenizer.decode(row, group_tokens=False))
        return out
