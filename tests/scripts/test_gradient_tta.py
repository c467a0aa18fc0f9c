"""Gradient test-time adaptation baselines (SUTA, supervised fine-tuning) on tiny random recogniser heads."""

import copy
import functools
import math

import numpy as np
import pytest
import torch

from modeling_lact_audio.adaptation.gradient_tta import (
    adaptable_parameters,
    default_scope,
    entropy_loss,
    finetune_on_labelled,
    mcc_loss,
    suta_log_probs,
    suta_loss,
    time_on_one_thread,
)
from modeling_lact_audio.recogniser.heads import build_recogniser
from modeling_lact_audio.recogniser.sessions import SessionCollator
from tests.recogniser_heads import tiny_recogniser_config

VOCAB, D_MODEL = 12, 16


def _head(kind: str):
    """A fresh copy of a tiny random head in eval mode (built once per kind: the BiLSTM's width search is slow)."""
    return copy.deepcopy(_built_head(kind))


@functools.cache
def _built_head(kind: str):
    torch.manual_seed(0)
    config = tiny_recogniser_config(VOCAB)
    return build_recogniser(kind, config, d_model=D_MODEL).eval()


def _utterance(T: int = 24, pad: int = 0, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(1, T + pad, D_MODEL, generator=g)
    mask = torch.ones(1, T + pad, dtype=torch.long)
    mask[:, T:] = 0
    return states, mask


def _plain_log_probs(model, states, mask):
    with torch.no_grad():
        out = model(states, mask)
    return torch.log_softmax(out.logits[0, : int(out.output_lengths[0])].float(), -1)


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
        {n: p.grad for n, p in model.named_parameters()},
    )


def _assert_same(model, snapshot):
    state, flags, modes, grads = snapshot
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert torch.equal(now[k], state[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is grads[n] for n, p in model.named_parameters())


def _rows(n: int = 4, seed: int = 2):
    rng = np.random.default_rng(seed)
    return [
        {
            "states": rng.standard_normal((20 + 3 * i, D_MODEL)).astype(np.float16),
            "labels": rng.integers(1, VOCAB, size=4 + i).tolist(),
        }
        for i in range(n)
    ]


def _mean_ctc_loss(model, rows):
    model.eval()
    batch = SessionCollator()([[r] for r in rows])[0]
    with torch.no_grad():
        return float(model(**batch).loss)


# --- objective functions ---------------------------------------------------------------------------


def test_entropy_of_uniform_is_log_vocab_and_of_one_hot_is_zero():
    assert entropy_loss(torch.zeros(5, VOCAB)).item() == pytest.approx(math.log(VOCAB), rel=1e-6)
    one_hot = torch.full((5, VOCAB), -1e4)
    one_hot[torch.arange(5), torch.arange(5)] = 1e4
    assert entropy_loss(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    # temperature flattens: a one-hot at temperature -> inf is uniform
    assert entropy_loss(torch.eye(4) * 3, temperature=1e6).item() == pytest.approx(math.log(4), rel=1e-5)


def test_entropy_frame_mask_averages_selected_frames_only():
    logits = torch.zeros(3, VOCAB)
    logits[0, 0] = 1e4  # one confident frame
    mask = torch.tensor([True, False, False])
    assert entropy_loss(logits, frame_mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy_loss(logits, frame_mask=~mask).item() == pytest.approx(math.log(VOCAB), rel=1e-6)
    assert entropy_loss(logits, frame_mask=torch.zeros(3, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="frame_mask"):
        entropy_loss(logits, frame_mask=torch.ones(4, dtype=torch.bool))


def test_mcc_matches_a_hand_computed_two_class_example():
    # p_1 = [1/2, 1/2], p_2 = [3/4, 1/4]: C = p^T p = [[13/16, 7/16], [7/16, 5/16]], column sums 5/4 and 3/4,
    # off-diagonal of the column-normalised C: 7/12 + 7/20 = 14/15, divided by V = 2 -> 7/15.
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.75, 0.25]]))
    assert mcc_loss(logits, temperature=1.0, reweight=False).item() == pytest.approx(7 / 15, rel=1e-6)
    # temperature T on logits l is temperature 1 on l / T
    assert mcc_loss(logits * 2.5, temperature=2.5, reweight=False).item() == pytest.approx(7 / 15, rel=1e-5)
    # mirrored frames have equal entropy, so reweighting leaves w = 1: C = [[5/8, 3/8], [3/8, 5/8]] -> 3/8
    mirrored = torch.log(torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    assert mcc_loss(mirrored, reweight=False).item() == pytest.approx(3 / 8, rel=1e-6)
    assert mcc_loss(mirrored, reweight=True).item() == pytest.approx(3 / 8, rel=1e-6)


def test_mcc_reweighting_is_the_confidence_weighted_correlation():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    p = logits.softmax(-1)
    h = -(p * p.log()).sum(-1)
    w = 1 + torch.exp(-h)
    w = 2 * w / w.sum()
    c = torch.einsum("t,ti,tj->ij", w, p, p)
    c = c / c.sum(0, keepdim=True)
    expected = (c[0, 1] + c[1, 0]) / 2
    assert mcc_loss(logits, reweight=True).item() == pytest.approx(expected.item(), rel=1e-6)
    assert mcc_loss(logits, reweight=True).item() != pytest.approx(mcc_loss(logits, reweight=False).item())


def test_suta_loss_combines_the_terms_and_drops_blank_frames_from_the_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, VOCAB, generator=g)
    logits[:4, 0] = 10.0  # four frames predicted blank
    non_blank = logits.argmax(-1) != 0
    expected = 0.3 * entropy_loss(logits, 2.5, non_blank) + 0.7 * mcc_loss(logits, 2.5)
    assert suta_loss(logits, blank=0).item() == pytest.approx(expected.item(), rel=1e-6)
    # log-probabilities give the same objective as the logits
    assert suta_loss(torch.log_softmax(logits, -1)).item() == pytest.approx(expected.item(), rel=1e-5)
    assert suta_loss(logits, em_coef=1.0).item() == pytest.approx(entropy_loss(logits, 2.5, non_blank).item())
    with pytest.raises(ValueError, match="em_coef"):
        suta_loss(logits, em_coef=1.5)


# --- scopes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lact", "baseline_transformer"])
def test_norm_scope_holds_the_trainable_rms_norms_only(kind):
    model = _head(kind)
    assert default_scope(model) == "norm"
    params = adaptable_parameters(model)
    norm_ids = {id(p) for n, p in model.named_parameters() if "norm" in n.split(".")[-2] and p.requires_grad}
    assert params and {id(p) for p in params} == norm_ids
    assert all(p.requires_grad for p in params)  # the frozen front end's LayerNorms stay out
    assert {id(p) for p in adaptable_parameters(model, "output")} == {id(p) for p in model.ctc.lm_head.parameters()}


def test_bilstm_has_no_norm_so_it_adapts_its_output_layer():
    model = _head("bilstm")
    assert default_scope(model) == "output"
    with pytest.raises(ValueError, match="scope='output'"):
        adaptable_parameters(model, "norm")
    assert {id(p) for p in adaptable_parameters(model, "output")} == {id(p) for p in model.lm_head.parameters()}
    with pytest.raises(ValueError, match="scope must be one of"):
        adaptable_parameters(model, "everything")


# --- SUTA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lact", "baseline_transformer", "bilstm"])
def test_suta_lowers_its_objective_and_leaves_the_model_bit_identical(kind):
    model = _head(kind)
    # a random head is near-uniform, where the objective is flat; a larger output layer makes it confident
    # like a trained one, so SUTA's default learning rate moves the objective measurably
    with torch.no_grad():
        adaptable_parameters(model, "output")[0].mul_(30)
    states, mask = _utterance()
    before = _snapshot(model)
    plain = _plain_log_probs(model, states, mask)
    adapted, seconds = suta_log_probs(model, states, mask, steps=10)
    assert adapted.shape == plain.shape == (24, VOCAB) and seconds > 0
    assert suta_loss(adapted).item() < suta_loss(plain).item() - 1e-4
    assert not torch.equal(adapted, plain)
    _assert_same(model, before)
    assert torch.equal(_plain_log_probs(model, states, mask), plain)


def test_suta_restores_train_mode_and_custom_flags():
    model = _head("lact").train()
    model.projection.requires_grad_(False)
    before = _snapshot(model)
    states, mask = _utterance()
    suta_log_probs(model, states, mask, steps=3)
    _assert_same(model, before)


def test_suta_with_zero_steps_is_the_plain_model():
    for kind in ("lact", "bilstm"):
        model = _head(kind)
        states, mask = _utterance(T=20, pad=5)
        log_probs, _ = suta_log_probs(model, states, mask, steps=0)
        assert log_probs.shape == (20, VOCAB)
        assert torch.equal(log_probs, _plain_log_probs(model, states, mask))


def test_suta_rejects_a_batch():
    model = _head("lact")
    states, mask = _utterance()
    with pytest.raises(ValueError, match="one utterance"):
        suta_log_probs(model, states.repeat(2, 1, 1), mask.repeat(2, 1))
    with pytest.raises(ValueError, match="attention_mask"):
        suta_log_probs(model, states, mask[:, :-1])


# --- supervised fine-tuning ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lact", "bilstm"])
@pytest.mark.parametrize("scope", ["head", "full"])
def test_finetuning_lowers_ctc_loss_and_leaves_the_input_untouched(kind, scope):
    model = _head(kind)
    rows = _rows()
    before = _snapshot(model)
    start_loss = _mean_ctc_loss(model, rows)
    adapted, seconds = finetune_on_labelled(model, rows, scope=scope, steps=15, lr=3e-3, batch_size=2)
    assert adapted is not model and seconds > 0 and not adapted.training
    assert _mean_ctc_loss(adapted, rows) < start_loss
    _assert_same(model, before)
    assert {n: p.requires_grad for n, p in adapted.named_parameters()} == before[1]


@pytest.mark.parametrize("kind", ["lact", "bilstm"])
def test_head_scope_changes_only_lm_head(kind):
    model = _head(kind)
    adapted, _ = finetune_on_labelled(model, _rows(), scope="head", steps=5, lr=1e-2, batch_size=3)
    original, new = model.state_dict(), adapted.state_dict()
    changed = {k for k in original if not torch.equal(original[k], new[k])}
    assert changed == {k for k in original if k.split(".")[-2] == "lm_head"}


def test_full_scope_changes_the_blocks_but_not_the_frozen_front_end():
    model = _head("lact")
    adapted, _ = finetune_on_labelled(model, _rows(), scope="full", steps=3, lr=1e-2, batch_size=2)
    original, new = model.state_dict(), adapted.state_dict()
    changed = {k for k in original if not torch.equal(original[k], new[k])}
    assert "projection.weight" in changed and "ctc.model.norm.weight" in changed
    assert not any(k.startswith("ctc.model.frontend.") for k in changed)


def test_finetuning_is_seeded_and_leaves_the_global_rng_alone():
    model = _head("lact").train()  # dropout on while fine-tuning
    rows = _rows()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a, _ = finetune_on_labelled(model, rows, scope="full", steps=3, lr=1e-3, batch_size=2, seed=7)
    assert torch.equal(torch.rand(3), expected_draw)
    b, _ = finetune_on_labelled(model, rows, scope="full", steps=3, lr=1e-3, batch_size=2, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_finetuning_rejects_bad_input():
    model = _head("bilstm")
    with pytest.raises(ValueError, match="scope must be one of"):
        finetune_on_labelled(model, _rows(), scope="norm")
    with pytest.raises(ValueError, match="empty"):
        finetune_on_labelled(model, [])
    with pytest.raises(ValueError, match="lacks"):
        finetune_on_labelled(model, [{"states": np.zeros((4, D_MODEL))}])
    with pytest.raises(ValueError, match=r"\[T, d\]"):
        finetune_on_labelled(model, [{"states": np.zeros(4), "labels": [1]}])


# --- timing ----------------------------------------------------------------------------------------


def test_time_on_one_thread_runs_single_threaded_and_restores_the_count():
    previous = torch.get_num_threads()
    result, seconds = time_on_one_thread(lambda x, y=0: (torch.get_num_threads(), x + y), 2, y=3)
    assert result == (1, 5) and seconds >= 0
    assert torch.get_num_threads() == previous

    def fails():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        time_on_one_thread(fails)
    assert torch.get_num_threads() == previous
