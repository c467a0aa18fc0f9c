"""Joint CTC / attention decoding: Whisper's pretrained decoder proposes, the LaCT CTC head checks.

A recogniser on Whisper's frozen encoder (``frontend="whisper_encoder"``) reads the same encoder states as
Whisper's own pretrained decoder. Joint decoding (Watanabe et al. 2017; ESPnet's and WeNet's hybrid
decoding) runs the decoder's beam search and adds, for every proposed token, the change in the CTC head's
prefix log-probability of the normalised transcript so far::

    score(y) = (1 - ctc_weight) * log p_decoder(y) + ctc_weight * log p_ctc(y)

The decoder brings a language model trained on 680k hours of real speech; the CTC head, trained here, keeps
the hypothesis on the frames (a phrase the audio does not contain, a dropped or repeated word, a digit the
character head cannot write all lose score). Only the ``candidates`` best decoder tokens of each beam are
scored by CTC; every other token is pruned, as in ESPnet. ``ctc_weight`` is tuned on validation data.
"""

import torch
from transformers import LogitsProcessor

from ..processors import normalize_text
from .ctc_prefix_score import CTCPrefixScorer


class CTCPrefixLogitsProcessor(LogitsProcessor):
    """A ``transformers`` logits processor that mixes CTC prefix scores into a Whisper beam search.

    Args:
        ctc_log_probs: ``[B, T, V]`` log-softmax outputs of the CTC head, one row per utterance.
        lengths: ``[B]`` real frames of each row.
        decoder_tokenizer: the Whisper decoder's tokenizer (BPE).
        ctc_vocab: the CTC tokenizer's ``token -> id`` (``"|"`` the word delimiter, ``"<pad>"`` the blank).
        ctc_weight: the CTC share of the score, in ``[0, 1]``.
        num_beams: beams per utterance (rows ``b * num_beams ... (b + 1) * num_beams - 1`` of the search are
            utterance ``b``'s).
        candidates: decoder tokens per beam and step that CTC scores; the rest are pruned.

    ``__call__(input_ids [B * num_beams, L], scores [B * num_beams, vocab])`` takes the decoder's log-probs or
    logits (beam search hands over log-probs, greedy search logits; both are log-softmaxed) and returns the
    joint scores; a token whose
    normalised text holds a character the CTC head cannot write (a digit, an accented letter), or that adds
    no character (punctuation), gets ``-inf``: transcripts come out spelt and unpunctuated, as the head writes.
    """

    def __init__(
        self,
        ctc_log_probs: torch.Tensor,
        lengths: torch.Tensor,
        decoder_tokenizer,
        ctc_vocab: dict[str, int],
        ctc_weight: float,
        num_beams: int,
        candidates: int = 10,
    ):
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1], got {ctc_weight}")
        if ctc_log_probs.dim() != 3 or lengths.shape != ctc_log_probs.shape[:1]:
            raise ValueError(
                f"ctc_log_probs must be [B, T, V] with lengths [B]; got {tuple(ctc_log_probs.shape)} "
                f"and {tuple(lengths.shape)}"
            )
        self.scorers = [
            CTCPrefixScorer(lp[: max(int(n), 1)], blank=ctc_vocab["<pad>"]) for lp, n in zip(ctc_log_probs, lengths)
        ]
        self.tokenizer = decoder_tokenizer
        self.vocab = ctc_vocab
        self.delimiter = ctc_vocab["|"]
        self.ctc_weight = ctc_weight
        self.num_beams = num_beams
        self.candidates = candidates
        self.eos = decoder_tokenizer.eos_token_id
        self._labels = {}  # decoder token ids -> CTC labels of their normalised text (None: unwritable)

    def labels(self, token_ids: tuple) -> tuple | None:
        """The CTC label ids of the normalised text of decoder tokens ``token_ids`` (special tokens dropped),
        words joined by the delimiter; None when a character lies outside the CTC vocabulary."""
        if token_ids not in self._labels:
            text = normalize_text(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))
            ids = [self.delimiter if ch == " " else self.vocab.get(ch) for ch in text]
            self._labels[token_ids] = None if any(i is None for i in ids) else tuple(ids)
        return self._labels[token_ids]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # Beam search hands over log-probs, greedy search raw logits: log_softmax makes both log-probs.
        scores = torch.log_softmax(scores.float(), -1)
        joint = torch.full_like(scores, -torch.inf)
        k = min(self.candidates, scores.shape[-1])
        top = scores.topk(k, dim=-1).indices.tolist()
        for row, (prefix_ids, tokens) in enumerate(zip(input_ids.tolist(), top)):
            scorer = self.scorers[row // self.num_beams]
            prefix = self.labels(tuple(prefix_ids))
            if prefix is None:  # cannot happen for a hypothesis this processor let through; keep it dead
                continue
            base = scorer.prefix(prefix)
            if self.eos not in tokens:
                tokens = tokens + [self.eos]
            for token in tokens:
                if token == self.eos:
                    ctc = scorer.full(prefix) - base
                else:
                    labels = self.labels(tuple(prefix_ids) + (token,))
                    # Unwritable (a digit) or writing nothing (punctuation, a bare space): the CTC head cannot
                    # score it, and a free token lets a beam put off the end for ever (" . . . .").
                    if labels is None or labels == prefix:
                        continue
                    ctc = scorer.prefix(labels) - base
                att = float(scores[row, token])
                if att == -torch.inf:
                    continue
                # At weight 0 the CTC term is left out, not multiplied: 0 * -inf (a prefix longer than the frames
                # can hold) would be NaN.
                joint[row, token] = (1.0 - self.ctc_weight) * att + (self.ctc_weight * ctc if self.ctc_weight else 0.0)
        return joint
