"""Whisper's pretrained decoder shipped beside a recogniser on Whisper's encoder, and joint decoding with it.

A recogniser folder (``frontend="whisper_encoder"``) may hold ``attention_decoder/``: Whisper's decoder weights
(float16, as OpenAI released them; the encoder is not stored twice, the recogniser's own frozen encoder is
shared), its config, generation config and tokenizer, and ``joint_config.json`` with the decoding settings
(CTC weight, beams, candidates) tuned on validation data. :class:`JointCTCAttentionDecoder` runs the encoder
once, the LaCT blocks and CTC head on its states, and Whisper's beam search with CTC prefix scores mixed in
(``joint_decoding.CTCPrefixLogitsProcessor``).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..processors import normalize_text
from ..whisper_frontend_lact_audio import whisper_output_lengths
from .joint_decoding import CTCPrefixLogitsProcessor

ATTENTION_DECODER_FOLDER = "attention_decoder"
DECODER_WEIGHTS = "decoder.safetensors"
JOINT_CONFIG = "joint_config.json"
DEFAULT_JOINT_CONFIG = {"ctc_weight": 0.3, "num_beams": 5, "candidates": 10, "max_new_tokens": 200}


def _decoder_state(whisper) -> dict:
    """The decoder's tensors of a ``WhisperForConditionalGeneration`` (``proj_out`` is tied to the embeddings)."""
    return {k: v for k, v in whisper.state_dict().items() if k.startswith("model.decoder.")}


def save_attention_decoder(whisper, tokenizer, folder: str, joint_config: dict | None = None) -> Path:
    """Write ``folder/attention_decoder/`` from a pretrained ``WhisperForConditionalGeneration`` and its tokenizer.

    Args:
        whisper: the Whisper model whose encoder the recogniser in ``folder`` uses (checked equal).
        tokenizer: its ``WhisperTokenizer``.
        folder: a saved recogniser folder (``LaCTAudioForCTC`` with ``frontend="whisper_encoder"``).
        joint_config: decoding settings (``ctc_weight``, ``num_beams``, ``candidates``, ``max_new_tokens``) and,
            when tuned, how (``tuning``); missing keys take ``DEFAULT_JOINT_CONFIG``'s.

    Returns:
        the ``attention_decoder`` folder.

    Raises:
        ValueError: the recogniser's encoder is not ``whisper``'s (joint decoding needs the same encoder states).
    """
    from ..modeling_lact_audio import LaCTAudioForCTC

    recogniser = LaCTAudioForCTC.from_pretrained(folder)
    if getattr(recogniser.config, "frontend", None) != "whisper_encoder":
        raise ValueError(f"{folder} is not a recogniser on Whisper's encoder (frontend={recogniser.config.frontend!r})")
    ours, theirs = recogniser.model.frontend.encoder.state_dict(), whisper.get_encoder().state_dict()
    if ours.keys() != theirs.keys() or any(not torch.equal(ours[k], theirs[k].to(ours[k].dtype)) for k in ours):
        raise ValueError(
            f"the recogniser in {folder} reads another encoder than this Whisper's: joint decoding needs both"
        )
    target = Path(folder) / ATTENTION_DECODER_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    whisper.config.save_pretrained(target)
    whisper.generation_config.save_pretrained(target)
    tokenizer.save_pretrained(target)
    save_file(
        {k: v.detach().to(torch.float16).contiguous() for k, v in _decoder_state(whisper).items()},
        target / DECODER_WEIGHTS,
    )
    (target / JOINT_CONFIG).write_text(json.dumps({**DEFAULT_JOINT_CONFIG, **(joint_config or {})}, indent=1))
    return target


def load_attention_decoder(folder: str, encoder) -> tuple:
    """``(whisper, tokenizer, joint_config)`` from ``folder/attention_decoder/``: a float32
    ``WhisperForConditionalGeneration`` (eval mode) whose encoder *is* ``encoder`` (shared, not copied).

    Raises:
        FileNotFoundError: the folder ships no attention decoder.
        ValueError: its weights do not match its config (a corrupt or foreign file).
    """
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    source = Path(folder) / ATTENTION_DECODER_FOLDER
    if not (source / DECODER_WEIGHTS).exists():
        raise FileNotFoundError(
            f"{folder} ships no {ATTENTION_DECODER_FOLDER}/{DECODER_WEIGHTS}: decode without the attention decoder "
            "(run_scripts/add_attention_decoder.py writes one)"
        )
    whisper = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(source))
    weights = {k: v.float() for k, v in load_file(source / DECODER_WEIGHTS).items()}
    expected = _decoder_state(whisper)
    if weights.keys() != expected.keys() or any(weights[k].shape != expected[k].shape for k in weights):
        raise ValueError(f"{source / DECODER_WEIGHTS} does not hold the decoder its config.json describes")
    whisper.load_state_dict(weights, strict=False)
    whisper.model.encoder = encoder
    whisper.generation_config = GenerationConfig.from_pretrained(source)
    config = {**DEFAULT_JOINT_CONFIG, **json.loads((source / JOINT_CONFIG).read_text())}
    return whisper.eval(), WhisperTokenizer.from_pretrained(source), config


class JointCTCAttentionDecoder:
    """Transcribes with a recogniser on Whisper's encoder and Whisper's decoder together (joint CTC / attention).

    Args:
        recogniser: a ``LaCTAudioForCTC`` with ``frontend="whisper_encoder"`` (eval mode).
        whisper: a ``WhisperForConditionalGeneration`` whose encoder gives the same states (shared).
        tokenizer: the Whisper tokenizer.
        ctc_vocab: the recogniser's CTC ``token -> id``.
        ctc_weight, num_beams, candidates, max_new_tokens: decoding settings (see ``CTCPrefixLogitsProcessor``).

    ``decode(input_features [B, 80, 3000], attention_mask [B, 3000]) -> list[str]``: normalised transcripts
    (lower case, spelt, no punctuation: what the CTC head writes), one per row.
    """

    def __init__(
        self, recogniser, whisper, tokenizer, ctc_vocab, ctc_weight=0.3, num_beams=5, candidates=10, max_new_tokens=200
    ):
        self.recogniser, self.whisper, self.tokenizer, self.ctc_vocab = recogniser, whisper, tokenizer, ctc_vocab
        self.ctc_weight, self.num_beams, self.candidates = float(ctc_weight), int(num_beams), int(candidates)
        self.max_new_tokens = int(max_new_tokens)

    @classmethod
    def from_pretrained(cls, folder: str, recogniser=None, **overrides) -> "JointCTCAttentionDecoder":
        """The joint decoder of a recogniser folder that ships ``attention_decoder/`` (its tuned settings, or
        ``overrides``); ``recogniser``: the folder's model if already loaded (its encoder is shared)."""
        from ..modeling_lact_audio import LaCTAudioForCTC

        recogniser = (recogniser or LaCTAudioForCTC.from_pretrained(folder)).eval()
        if getattr(recogniser.config, "frontend", None) != "whisper_encoder":
            raise ValueError(
                f"joint decoding needs a recogniser on Whisper's encoder; {folder} has frontend "
                f"{getattr(recogniser.config, 'frontend', None)!r}"
            )
        whisper, tokenizer, config = load_attention_decoder(folder, recogniser.model.frontend.encoder)
        settings = {k: config[k] for k in ("ctc_weight", "num_beams", "candidates", "max_new_tokens")}
        settings.update(overrides)
        vocab = json.loads((Path(folder) / "vocab.json").read_text())
        return cls(recogniser, whisper, tokenizer, vocab, **settings)

    @torch.inference_mode()
    def ctc_log_probs(self, input_features, attention_mask) -> tuple:
        """``(encoder_states [B, 1500, d], ctc_log_probs [B, T', V], lengths [B])``: the encoder run once, the
        recogniser on its real frames."""
        encoder = self.recogniser.model.frontend.encoder
        states = encoder(input_features.to(self.recogniser.dtype)).last_hidden_state
        lengths = whisper_output_lengths(attention_mask.long().sum(-1))
        frames = int(lengths.max())
        mask = (torch.arange(frames, device=states.device)[None] < lengths[:, None]).long()
        logits = self.recogniser(frontend_states=states[:, :frames], attention_mask=mask).logits
        return states, torch.log_softmax(logits.float(), -1), lengths

    @torch.inference_mode()
    def decode(self, input_features, attention_mask, ctc_weight: float | None = None) -> list[str]:
        """Joint beam search over a batch of Whisper log-mel windows; ``ctc_weight`` overrides the setting."""
        from transformers import GenerationConfig, LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        if input_features.dim() != 3:
            raise ValueError(f"input_features must be [B, num_mel_bins, frames], got {tuple(input_features.shape)}")
        states, log_probs, lengths = self.ctc_log_probs(input_features, attention_mask)
        processor = CTCPrefixLogitsProcessor(
            log_probs,
            lengths,
            self.tokenizer,
            self.ctc_vocab,
            self.ctc_weight if ctc_weight is None else ctc_weight,
            self.num_beams,
            self.candidates,
        )
        generation = GenerationConfig(**self.whisper.generation_config.to_dict())
        generation.update(num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, max_length=None)
        ids = self.whisper.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states),
            generation_config=generation,
            logits_processor=LogitsProcessorList([processor]),
        )
        return [normalize_text(t) for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def joint_transcripts(
    decoder: JointCTCAttentionDecoder, feature_extractor, audio: list, ctc_weights, batch_size: int = 8
) -> dict[float, list[str]]:
    """Transcripts of 16 kHz waveforms for every CTC weight in ``ctc_weights``: ``{weight: [text, ...]}``. The
    encoder and CTC head run once per batch. A waveform over Whisper's 30 s window is read in consecutive 30 s
    windows (the encoder's training length) whose transcripts are joined, as ``asr.Transcriber`` does."""
    from tqdm.auto import tqdm

    from ..asr import join_windows, split_windows

    pieces, owner = split_windows(audio, feature_extractor.n_samples)
    texts = {float(w): [] for w in ctc_weights}
    for i in tqdm(range(0, len(pieces), batch_size), desc="joint decoding"):
        batch = feature_extractor(
            pieces[i : i + batch_size], sampling_rate=16000, return_tensors="pt", return_attention_mask=True
        )
        for w in texts:
            texts[w] += decoder.decode(batch["input_features"], batch["attention_mask"], ctc_weight=w)
    return {w: join_windows(piece_texts, owner, len(audio)) for w, piece_texts in texts.items()}


def tune_joint_decoding(
    decoder: JointCTCAttentionDecoder,
    feature_extractor,
    tuning_sets: dict[str, tuple[list, list[str]]],
    ctc_weights=(0.0, 0.1, 0.2, 0.3, 0.4),
    batch_size: int = 8,
) -> dict:
    """Choose the CTC weight on tuning data (never a test split): the weight with the lowest mean WER over the
    sets, so each set counts the same whatever its size.

    Args:
        decoder: the joint decoder (its ``num_beams`` and ``candidates`` are kept).
        feature_extractor: Whisper's feature extractor.
        tuning_sets: ``{name: (waveforms, references)}``, e.g. synthetic validation speech and recorded speech
            the recogniser never trained on.
        ctc_weights: the grid.

    Returns:
        ``{"ctc_weight", "mean_wer", "grid": [{"ctc_weight", "mean_wer", name: {"wer", "cer"}, ...}], "sets":
        {name: utterances}}``.
    """
    from .evaluation import wer_cer

    per_set = {}
    for name, (audio, references) in tuning_sets.items():
        texts = joint_transcripts(decoder, feature_extractor, audio, ctc_weights, batch_size)
        per_set[name] = {w: wer_cer(references, hyps) for w, hyps in texts.items()}
    grid = []
    for w in (float(x) for x in ctc_weights):
        entry = {"ctc_weight": w, **{name: per_set[name][w] for name in per_set}}
        entry["mean_wer"] = sum(per_set[name][w]["wer"] for name in per_set) / len(per_set)
        grid.append(entry)
    best = min(grid, key=lambda g: (g["mean_wer"], g["ctc_weight"]))
    return {
        "ctc_weight": best["ctc_weight"],
        "mean_wer": best["mean_wer"],
        "grid": grid,
        "sets": {name: len(audio) for name, (audio, _) in tuning_sets.items()},
    }
