"""CTC prefix scores against brute-force path enumeration and ``ctc_loss``; the joint logits processor's scores
against the formula it implements."""

import itertools
import math
from collections import defaultdict

import pytest
import torch

from modeling_lact_audio.recogniser.ctc_prefix_score import CTCPrefixScorer
from modeling_lact_audio.recogniser.joint_decoding import CTCPrefixLogitsProcessor


def _collapse(path, blank=0):
    out, prev = [], None
    for label in path:
        if label != prev and label != blank:
            out.append(label)
        prev = label
    return tuple(out)


def _enumerated(log_probs):
    """Probability of every collapsed output, by summing all V^T paths."""
    T, V = log_probs.shape
    probs = defaultdict(float)
    for path in itertools.product(range(V), repeat=T):
        probs[_collapse(path)] += math.exp(sum(float(log_probs[t, a]) for t, a in enumerate(path)))
    return probs


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_and_full_scores_equal_path_enumeration(seed):
    torch.manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(6, 3, dtype=torch.float64) * 2, -1)
    outputs = _enumerated(log_probs)
    scorer = CTCPrefixScorer(log_probs)
    for g in [(), (1,), (2,), (1, 1), (1, 2), (2, 1, 2), (1, 1, 1), (2, 2, 1, 1)]:
        prefix = sum(p for out, p in outputs.items() if out[: len(g)] == g)
        assert scorer.prefix(g) == pytest.approx(math.log(prefix), abs=1e-9)
        if outputs[g] > 0:
            assert scorer.full(g) == pytest.approx(math.log(outputs[g]), abs=1e-9)


def test_full_score_equals_ctc_loss_on_long_sequences():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(80, 7, dtype=torch.float64), -1)
    scorer = CTCPrefixScorer(log_probs)
    for target in ([1, 2, 3], [4, 4, 4, 2, 5, 5, 6, 1, 1], [3] * 20):
        loss = torch.nn.functional.ctc_loss(
            log_probs[:, None], torch.tensor([target]), [80], [len(target)], blank=0, reduction="sum"
        )
        assert scorer.full(target) == pytest.approx(-float(loss), rel=1e-10)


def test_scorer_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[T, V\]"):
        CTCPrefixScorer(torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="no frames"):
        CTCPrefixScorer(torch.zeros(0, 3))


class _CharTokenizer:
    """A stand-in decoder tokenizer: one token per character of ``"abc ,9"``, then ``<eos>`` (id 6), ``<sot>`` (7)."""

    chars = "abc ,9"
    eos_token_id = 6

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.chars[i] for i in ids if i < len(self.chars))


CTC_VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "a": 3, "b": 4, "c": 5}


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_processor_scores_are_the_weighted_sum_of_decoder_and_ctc_prefix_gains(weight):
    torch.manual_seed(0)
    ctc = torch.log_softmax(torch.randn(2, 9, len(CTC_VOCAB), dtype=torch.float64), -1)
    lengths = torch.tensor([9, 6])
    processor = CTCPrefixLogitsProcessor(
        ctc.float(), lengths, _CharTokenizer(), CTC_VOCAB, weight, num_beams=2, candidates=8
    )
    # Rows 0-1 are utterance 0's beams, rows 2-3 utterance 1's.
    prefixes = [[7, 0], [7, 0, 3, 1], [7], [7, 2, 4]]
    scores = torch.log_softmax(torch.randn(4, 8), -1)
    input_ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(p) for p in prefixes], batch_first=True, padding_value=7)
    joint = processor(input_ids, scores)
    ids = {"a": 3, "b": 4, "c": 5, " ": 2}
    for row, prefix in enumerate(prefixes):
        reference = CTCPrefixScorer(ctc[row // 2, : int(lengths[row // 2])])
        text = _CharTokenizer().decode(prefix).strip().replace(",", "")
        base = tuple(ids[c] for c in " ".join(text.split()))
        for token in range(8):
            if token == 7:  # the start token writes nothing: pruned
                assert joint[row, token] == -math.inf
                continue
            if token == 6:
                gain = reference.full(base) - reference.prefix(base)
            else:
                new = _CharTokenizer().decode(prefix + [token]).replace(",", " ")
                if "9" in new or tuple(ids[c] for c in " ".join(new.split())) == base:
                    assert joint[row, token] == -math.inf, (prefix, token)  # a digit, or no new character
                    continue
                gain = reference.prefix(tuple(ids[c] for c in " ".join(new.split()))) - reference.prefix(base)
            expected = (1 - weight) * float(scores[row, token]) + weight * gain
            assert float(joint[row, token]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (prefix, token)


def test_processor_prunes_all_but_the_decoders_best_candidates():
    ctc = torch.log_softmax(torch.zeros(1, 5, len(CTC_VOCAB)), -1)
    processor = CTCPrefixLogitsProcessor(ctc, torch.tensor([5]), _CharTokenizer(), CTC_VOCAB, 0.5, 1, candidates=2)
    scores = torch.log_softmax(torch.tensor([[5.0, 4.0, 3.0, -1.0, -2.0, -3.0, -4.0, -9.0]]), -1)
    joint = processor(torch.tensor([[7]]), scores)
    # a and b are the two best; the end of text is always scored; c is pruned.
    assert torch.isfinite(joint[0, [0, 1, 6]]).all() and torch.isinf(joint[0, [2, 3, 4, 5, 7]]).all()


def test_processor_rejects_bad_arguments():
    ctc = torch.zeros(1, 5, len(CTC_VOCAB))
    with pytest.raises(ValueError, match="ctc_weight"):
        CTCPrefixLogitsProcessor(ctc, torch.tensor([5]), _CharTokenizer(), CTC_VOCAB, 1.5, 1)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        CTCPrefixLogitsProcessor(ctc[0], torch.tensor([5]), _CharTokenizer(), CTC_VOCAB, 0.5, 1)


def test_weight_zero_keeps_the_decoder_scores_where_ctc_rules_a_prefix_out():
    # Two frames cannot hold "abc": its CTC prefix probability is 0 (log -inf); at weight 0 that must not give NaN.
    ctc = torch.log_softmax(torch.randn(1, 2, len(CTC_VOCAB)), -1)
    processor = CTCPrefixLogitsProcessor(ctc, torch.tensor([2]), _CharTokenizer(), CTC_VOCAB, 0.0, 1, candidates=8)
    scores = torch.log_softmax(torch.randn(1, 8), -1)
    joint = processor(torch.tensor([[7, 0, 1, 2]]), scores)
    assert not torch.isnan(joint).any()
    assert torch.allclose(joint[0, [0, 1, 2, 6]], scores[0, [0, 1, 2, 6]])
