"""The models of the recogniser recipe, all reading the same cached Whisper encoder states.

- ``lact``: a projection of the encoder states into the blocks and CTC head of a ``LaCTAudioForCTC``
  (offline: bidirectional LaCT order and attention), trained on sessions so its fast weights carry
  across utterances;
- ``baseline_transformer`` / ``baseline_sliding_window``: the same model with the LaCT mixer replaced
  by full / sliding-window attention, MLP width re-fitted to the same trainable parameter count;
- ``bilstm``: a SUPERB-style 2-layer BiLSTM CTC head of the same trainable parameter count.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..baselines import matched_baseline_config
from ..configuration_lact_audio import LaCTAudioConfig
from ..modeling_lact_audio import LaCTAudioForCTC, LaCTCTCOutput, count_parameters

RECOGNISER_KINDS = ("lact", "baseline_transformer", "baseline_sliding_window", "bilstm")


def recogniser_config(vocab_size: int, **overrides) -> LaCTAudioConfig:
    """The recogniser head's configuration: 4 offline LaCT blocks of width 256 over the encoder states."""
    fields = dict(
        task="ctc",
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_lact_heads=2,
        intermediate_size=768,
        lact_chunk_size=128,
        window_size=32,
        lact_order="bidirectional",
        attention_pattern="bidirectional",
        use_momentum=False,
        muon_steps=5,
        hidden_dropout=0.1,
        final_dropout=0.1,
        vocab_size=vocab_size,
        pad_token_id=0,
    )
    fields.update(overrides)
    return LaCTAudioConfig(**fields)


class BiLSTMCTCHead(nn.Module):
    """SUPERB's ASR head: a 2-layer BiLSTM over frozen encoder states, then a linear CTC layer.

    ``forward(frontend_states [B, T, d_in], attention_mask [B, T], labels [B, S] or None)`` ->
    ``LaCTCTCOutput`` (``logits [B, T, vocab]``, ``output_lengths [B]``, ``loss``).
    """

    def __init__(self, input_size: int, hidden_size: int, vocab_size: int, dropout: float = 0.1, blank: int = 0):
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=2, bidirectional=True, batch_first=True, dropout=dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.lm_head = nn.Linear(2 * hidden_size, vocab_size)
        self.blank = blank

    def forward(self, frontend_states, attention_mask, labels=None, **unused):
        lengths = attention_mask.long().sum(-1)
        packed = nn.utils.rnn.pack_padded_sequence(
            frontend_states, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=frontend_states.shape[1])
        logits = self.lm_head(self.dropout(out))
        loss = None
        if labels is not None:
            mask = labels >= 0
            log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
            loss = F.ctc_loss(
                log_probs, labels.masked_select(mask), lengths, mask.sum(-1), blank=self.blank, zero_infinity=True
            )
        return LaCTCTCOutput(loss=loss, logits=logits, output_lengths=lengths)


class CachedStatesCTC(nn.Module):
    """The trainable part of a Whisper-front-end recogniser, reading cached encoder states.

    ``projection`` (``d_model -> hidden_size``) then the blocks and CTC head of ``ctc`` (a
    ``LaCTAudioForCTC`` whose own front end is never called: it is frozen and left out of every count).
    ``forward(frontend_states [B, T, d_model], attention_mask [B, T], labels=None, past_key_values=None,
    use_cache=None, lact_chunk_ends=None)`` -> ``LaCTCTCOutput`` (``lact_chunk_ends [B, T]``: frames that end a
    fast-weight chunk, see ``LaCTAudioModel``). Not yet a shippable folder: a ``frontend="whisper_encoder"``
    ``LaCTAudioForCTC`` that holds the encoder too is the next step of the recogniser issue.
    """

    def __init__(self, config: LaCTAudioConfig, d_model: int):
        super().__init__()
        self.projection = nn.Linear(d_model, config.hidden_size)
        self.ctc = LaCTAudioForCTC(config)
        self.ctc.model.frontend.requires_grad_(False)

    @property
    def config(self) -> LaCTAudioConfig:
        return self.ctc.config

    def forward(
        self, frontend_states, attention_mask, labels=None, past_key_values=None, use_cache=None, lact_chunk_ends=None
    ):
        mask = attention_mask.bool()
        out = self.ctc.model(
            inputs_embeds=self.projection(frontend_states),
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            lact_chunk_ends=lact_chunk_ends,
        )
        logits = self.ctc.lm_head(self.ctc.dropout(out.last_hidden_state))
        lengths = mask.long().sum(-1)
        loss = self.ctc.ctc_loss(logits, lengths, labels) if labels is not None else None
        return LaCTCTCOutput(loss=loss, logits=logits, output_lengths=lengths, past_key_values=out.past_key_values)


# Fields of an assembled recogniser's config that belong to its Whisper front end, not to the head.
_FRONTEND_FIELDS = ("frontend", "whisper_config", "whisper_trainable_layers", "architectures", "auto_map", "dtype")


def head_from_recogniser(model: LaCTAudioForCTC) -> CachedStatesCTC:
    """The head inside an assembled recogniser (``frontend="whisper_encoder"``, ``export.assemble_recogniser``):
    a ``CachedStatesCTC`` with the model's projection, blocks, norm and CTC layer, which computes from the
    encoder's cached states what ``model`` computes from audio. The inverse of ``assemble_recogniser``; the
    adaptation protocols run a shipped recogniser folder this way. Returned in eval mode.

    Raises:
        ValueError: ``model`` has no Whisper-encoder front end.
    """
    if getattr(model.config, "frontend", None) != "whisper_encoder":
        raise ValueError(
            f"a recogniser with frontend='whisper_encoder' holds a head over encoder states; got frontend="
            f"{getattr(model.config, 'frontend', None)!r}"
        )
    fields = {k: v for k, v in model.config.to_dict().items() if k not in _FRONTEND_FIELDS}
    frontend = model.model.frontend
    head = CachedStatesCTC(LaCTAudioConfig(**fields), frontend.projection.in_features)
    head.projection.load_state_dict(frontend.projection.state_dict())
    head.ctc.model.layers.load_state_dict(model.model.layers.state_dict())
    head.ctc.model.norm.load_state_dict(model.model.norm.state_dict())
    head.ctc.lm_head.load_state_dict(model.lm_head.state_dict())
    return head.eval()


def build_recogniser(kind: str, config: LaCTAudioConfig, d_model: int) -> nn.Module:
    """A head of ``kind`` (one of ``RECOGNISER_KINDS``) on ``d_model``-wide cached encoder states.

    ``config`` is the block/head configuration (:func:`recogniser_config`); the baselines and the BiLSTM
    are fitted to the trainable parameter count of the LaCT head.
    """
    if kind not in RECOGNISER_KINDS:
        raise ValueError(f"kind must be one of {RECOGNISER_KINDS}, got {kind!r}")
    if kind == "lact":
        return CachedStatesCTC(config, d_model)
    if kind in ("baseline_transformer", "baseline_sliding_window"):
        mixer = "attention" if kind == "baseline_transformer" else "sliding_window"
        return CachedStatesCTC(matched_baseline_config(config, mixer=mixer), d_model)
    target = count_parameters(CachedStatesCTC(config, d_model))
    d_in = d_model

    def size(h: int) -> int:
        return count_parameters(BiLSTMCTCHead(d_in, h, config.vocab_size))

    hidden = min(range(16, 1025, 8), key=lambda h: abs(size(h) - target))
    return BiLSTMCTCHead(d_in, hidden, config.vocab_size, dropout=config.hidden_dropout, blank=config.pad_token_id)
