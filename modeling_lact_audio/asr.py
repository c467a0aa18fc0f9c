"""One transcriber for every saved recogniser folder, and the scoring used for every WER/CER.

Used by training-time validation (``modeling_lact_audio.training``), ``eval/asr_eval.py``, the demo
and the Whisper conversion check, so every number in the project comes from the same decoding, the
same text normalisation and the same metric modules.
"""

import json
from pathlib import Path

import evaluate
import jiwer
import numpy as np
import torch
from scipy.stats import bootstrap
from transformers import GenerationConfig, GenerationMixin

from .data import SAMPLING_RATE
from .modeling_lact_audio import count_parameters
from .processors import normalize_text

# The local `evaluate` modules (``evaluate.load("wer")`` needs the Hub); shipped as package data.
METRICS_DIR = Path(__file__).resolve().parent / "metrics"


def normalize_for_scoring(text: str) -> str:
    """The normalisation applied to references and hypotheses before WER/CER.

    The CTC tokenizer's own normaliser (NFKC, lower case, punctuation to spaces, apostrophes kept), so a
    character model is scored on exactly the alphabet it writes; every earlier result in
    ``eval/results`` used it. transformers' ``BasicTextNormalizer`` would split "don't" into two words,
    which a character CTC model never does, and ``EnglishTextNormalizer`` rewrites spellings and numbers
    that the character models were trained to write as they are.
    """
    return normalize_text(text)


def load_metrics() -> tuple:
    """The local WER and CER ``evaluate`` modules, as ``(wer, cer)``."""
    return evaluate.load(str(METRICS_DIR / "wer")), evaluate.load(str(METRICS_DIR / "cer"))


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


def rate_interval(errors, totals, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the corpus-level rate ``sum(errors) / sum(totals)``.

    Args:
        errors, totals: ``[N]`` edit counts and reference lengths of N utterances; the utterances are
            resampled with replacement (``scipy.stats.bootstrap``, paired).
        samples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``; NaNs for no utterance, the rate itself for one (nothing to resample).
    """
    errors, totals = np.asarray(errors, dtype=np.float64), np.asarray(totals, dtype=np.float64)
    if len(errors) == 0:
        return float("nan"), float("nan")
    if len(errors) == 1:
        rate = float(errors[0] / max(totals[0], 1))
        return rate, rate
    result = bootstrap(
        (errors, totals),
        lambda e, t, axis=-1: e.sum(axis) / np.maximum(t.sum(axis), 1),
        paired=True,
        vectorized=True,
        n_resamples=samples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def whisper_char_features(feature_extractor, audio: list[np.ndarray], num_frames: int) -> torch.Tensor:
    """Input of a Whisper trained here on characters: the CTC models' log-mel, zero-padded (or cut) to
    Whisper's fixed length. ``audio``: 16 kHz waveforms ``[L_i]`` -> ``[B, n_mels, num_frames]`` float32."""
    features = feature_extractor(
        audio,
        sampling_rate=SAMPLING_RATE,
        return_tensors="pt",
        padding="max_length",
        max_length=num_frames,
        truncation=True,
    )["input_features"]
    return features.transpose(1, 2).contiguous()


def load_whisper(folder: str):
    """``WhisperForConditionalGeneration.from_pretrained(folder)`` with the encoder's sinusoidal positions
    fixed again: transformers 5.17's loading leaves them trainable although ``WhisperEncoder`` freezes
    them, so a reloaded Whisper would count (and fine-tune) them."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder)
    model.get_encoder().embed_positions.requires_grad_(False)
    return model


def _is_character_whisper(config, tokenizer) -> bool:
    """A Whisper trained here: its vocabulary is the character tokenizer's plus decoder start and end."""
    return config.model_type == "whisper" and len(tokenizer.get_vocab()) == config.vocab_size - 2


def as_model_inputs(batch: dict, model, device=None) -> dict:
    """``batch`` (tensors) on ``device`` (default: where they are) with its floating tensors in the model's dtype, as
    transformers' ASR pipeline feeds a model: bf16 features for a model cast by ``quantization.to_half_precision``;
    masks and ids keep their dtype."""
    return {
        k: v.to(device=device, dtype=model.dtype) if v.is_floating_point() else v.to(device=device)
        for k, v in batch.items()
    }


def split_windows(audio: list[np.ndarray], window: int) -> tuple[list[np.ndarray], list[int]]:
    """Consecutive ``window``-sample pieces of each waveform (the last one shorter; an empty waveform gives one
    empty piece): ``(pieces, owner)`` with ``owner[j]`` the index in ``audio`` of ``pieces[j]``, in order."""
    pieces, owner = [], []
    for i, a in enumerate(audio):
        for start in range(0, max(len(a), 1), window):
            pieces.append(a[start : start + window])
            owner.append(i)
    return pieces, owner


def join_windows(texts: list[str], owner: list[int], count: int) -> list[str]:
    """The transcripts of :func:`split_windows`' pieces joined back into ``count`` transcripts, one per waveform."""
    joined = [[] for _ in range(count)]
    for i, t in zip(owner, texts):
        joined[i].append(t)
    return [" ".join(t for t in parts if t) for parts in joined]


class Transcriber:
    """Transcribes batches of 16 kHz float32 waveforms with a CTC model or a Whisper model, greedily.

    Args:
        model: a ``LaCTAudioForCTC`` / ``Wav2Vec2ForCTC`` / attention baseline (CTC: argmax, collapse), a
            Whisper trained here on characters, or the converted pretrained Whisper (its own tokenizer).
        processor: the folder's processor (feature extractor + tokenizer).
        device: where the model runs.
        max_new_tokens: the longest transcript a Whisper may write, in tokens; by default 400 characters
            (a character Whisper) or 200 BPE tokens (the pretrained one: about its 30 s window's worth).
        decoder: for CTC models, a beam-search decoder called as ``decoder(log_probs [B, T', V], lengths [B])
            -> list[str]`` (``recogniser.lm.CTCBeamSearchDecoder``, e.g. the folder's word LM); None: greedy.
        joint: for a CTC model on Whisper's encoder, a ``recogniser.attention_decoder.JointCTCAttentionDecoder``
            (the folder's shipped Whisper decoder, joint CTC / attention beam search); None: CTC decoding.

    A CTC model on a pretrained Whisper encoder (``frontend="whisper_encoder"``) reads Whisper's 30 s
    window: longer audio is transcribed in consecutive 30 s pieces whose transcripts are joined.

    ``kind`` is ``"ctc"``, ``"whisper_chars"`` or ``"whisper_pretrained"``; ``num_parameters`` counts
    the trainable parameters. ``__call__(audio: list[np.ndarray [L_i]]) -> list[str]``;
    ``transcribe_batch(batch)`` takes an already collated batch (what training validation has).
    """

    def __init__(
        self, model, processor, device: str = "cpu", max_new_tokens: int | None = None, decoder=None, joint=None
    ):
        self.model, self.processor, self.device = model.to(device).eval(), processor, torch.device(device)
        self.decoder = decoder
        if joint is not None and decoder is not None:
            raise ValueError("pass decoder (CTC beam search) or joint (CTC + Whisper's decoder), not both")
        if joint is not None:
            joint.recogniser, joint.whisper = joint.recogniser.to(device), joint.whisper.to(device)
        self.joint = joint
        if model.config.model_type != "whisper":
            self.kind = "ctc"
        elif _is_character_whisper(model.config, processor.tokenizer):
            self.kind = "whisper_chars"
        else:
            self.kind = "whisper_pretrained"
        self.max_new_tokens = max_new_tokens or (200 if self.kind == "whisper_pretrained" else 400)
        self.num_parameters = count_parameters(model)

    @classmethod
    def from_pretrained(
        cls, folder: str, device: str = "cpu", use_lm: bool = False, use_attention_decoder: bool = False
    ) -> "Transcriber":
        """Load the model and processor saved in ``folder`` (``save_pretrained`` of both); with ``use_lm``,
        CTC transcripts come from beam search with the folder's ``language_model/`` (tuned settings); with
        ``use_attention_decoder``, from joint CTC / attention decoding with its ``attention_decoder/``.

        Raises:
            FileNotFoundError: ``folder`` is not a directory, or lacks what ``use_lm`` / ``use_attention_decoder``
                need.
            ValueError: both ``use_lm`` and ``use_attention_decoder``.
        """
        if use_lm and use_attention_decoder:
            raise ValueError("use_lm and use_attention_decoder are two decoders: choose one")
        from transformers import AutoConfig, AutoModelForCTC, AutoProcessor, WhisperProcessor

        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no model folder at {folder!r}")
        config = AutoConfig.from_pretrained(folder)
        if config.model_type != "whisper":
            decoder = None
            if use_lm:
                from .recogniser.lm import LM_FOLDER, CTCBeamSearchDecoder

                if not (Path(folder) / LM_FOLDER / "lm.arpa").exists():
                    raise FileNotFoundError(f"{folder} ships no {LM_FOLDER}/lm.arpa: transcribe without use_lm")
                decoder = CTCBeamSearchDecoder.from_pretrained(folder)
            model = AutoModelForCTC.from_pretrained(folder)
            joint = None
            if use_attention_decoder:
                from .recogniser.attention_decoder import JointCTCAttentionDecoder

                joint = JointCTCAttentionDecoder.from_pretrained(folder, recogniser=model)
            return cls(model, AutoProcessor.from_pretrained(folder), device, decoder=decoder, joint=joint)
        model = load_whisper(folder)
        chars = Path(folder) / "vocab.json"
        # A character Whisper's folder holds our LaCTProcessor; the converted one holds Whisper's own.
        if chars.exists() and len(json.loads(chars.read_text())) == config.vocab_size - 2:
            return cls(model, AutoProcessor.from_pretrained(folder), device)
        return cls(model, WhisperProcessor.from_pretrained(folder), device)

    def windows(self, audio: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        """The pieces this transcriber runs the model on: ``(pieces, owner)`` with ``owner[j]`` the index in
        ``audio`` of ``pieces[j]``, in order. A model on Whisper's encoder sees consecutive 30 s windows of
        each waveform (the encoder's training length); any other model sees each waveform whole."""
        if not (self.kind == "ctc" and getattr(self.model.config, "frontend", None) == "whisper_encoder"):
            return list(audio), list(range(len(audio)))
        return split_windows(audio, self.processor.feature_extractor.n_samples)  # Whisper's 30 s

    @torch.no_grad()
    def __call__(self, audio: list[np.ndarray]) -> list[str]:
        """Transcripts of 16 kHz float32 waveforms ``[L_i]``, one string each."""
        extractor = self.processor.feature_extractor
        if self.kind == "ctc" and getattr(self.model.config, "frontend", None) == "whisper_encoder":
            pieces, owner = self.windows(audio)
            batch = self.processor(
                audio=pieces, sampling_rate=SAMPLING_RATE, return_tensors="pt", return_attention_mask=True
            )
            return join_windows(self.transcribe_batch(dict(batch)), owner, len(audio))
        if self.kind == "ctc":
            batch = dict(self.processor(audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt"))
        elif self.kind == "whisper_pretrained":
            batch = dict(extractor(audio, sampling_rate=SAMPLING_RATE, return_tensors="pt"))
        else:
            frames = 2 * self.model.config.max_source_positions
            batch = {"input_features": whisper_char_features(extractor, audio, frames)}
        return self.transcribe_batch(batch)

    @torch.no_grad()
    def transcribe_batch(self, batch: dict) -> list[str]:
        """Transcripts of one collated batch: ``input_features`` / ``input_values`` ``[B, ...]`` and, for
        CTC models, ``attention_mask``; ``labels``, if present, are ignored."""
        batch = as_model_inputs({k: v for k, v in batch.items() if k != "labels"}, self.model, self.device)
        tokenizer = self.processor.tokenizer
        if self.kind == "ctc" and self.joint is not None:
            return self.joint.decode(batch["input_features"], batch["attention_mask"])
        if self.kind == "ctc":
            logits = self.model(**batch).logits  # [B, T', V]
            lengths = torch.full(logits.shape[:1], logits.shape[1], device=logits.device)
            if "attention_mask" in batch:
                # Frames computed from padding are no speech: drop them, or a padded row gets a noisy tail.
                lengths = self.model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).clamp_max(
                    logits.shape[1]
                )
            if self.decoder is not None:
                return self.decoder(torch.log_softmax(logits.float(), -1), lengths)
            ids = logits.argmax(-1)
            padded = torch.arange(ids.shape[1], device=ids.device) >= lengths[:, None]
            return tokenizer.batch_decode(ids.masked_fill(padded, tokenizer.pad_token_id))
        if self.kind == "whisper_pretrained":
            ids = self.model.generate(batch["input_features"], max_new_tokens=self.max_new_tokens)
            return tokenizer.batch_decode(ids, skip_special_tokens=True)
        config = self.model.config
        generation = GenerationConfig(
            decoder_start_token_id=config.decoder_start_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
        )
        # Whisper's own generate() expects its BPE vocabulary's task/language/timestamp tokens; a character
        # model has none, so it decodes through the generic GenerationMixin loop (same greedy search, KV cache).
        ids = GenerationMixin.generate(self.model, input_features=batch["input_features"], generation_config=generation)
        out, characters = [], len(tokenizer)  # the decoder's own tokens (start, end) lie past the characters
        for row in ids[:, 1:].tolist():  # drop the decoder start token; cut at the end of text
            row = row[: row.index(config.eos_token_id)] if config.eos_token_id in row else row
            out.append(tokenizer.decode([i for i in row if i < characters], group_tokens=False))
        return out
