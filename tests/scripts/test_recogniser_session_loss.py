"""The recogniser's session loss: the carried state across utterances, and the carried-state read loss."""

import numpy as np
import pytest
import torch

from modeling_lact_audio.cache_lact_audio import LaCTCache
from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer
from modeling_lact_audio.recogniser.heads import build_recogniser
from modeling_lact_audio.recogniser.sessions import SessionCollator
from modeling_lact_audio.recogniser.training import RecogniserTrainingArguments, session_loss
from tests.recogniser_heads import tiny_recogniser_config

D_MODEL, VOCAB = 12, 8


def _head():
    torch.manual_seed(0)
    config = tiny_recogniser_config(VOCAB, lact_chunk_size=16, window_size=2, hidden_dropout=0.0, final_dropout=0.0)
    head = build_recogniser("lact", config, d_model=D_MODEL)
    with torch.no_grad():  # make the fast weights move visibly at a random init
        head.projection.weight.mul_(4)
    return head


def _positions():
    """Two sessions: one of three utterances, one of two (so the last position has a batch of one)."""
    rng = np.random.default_rng(0)

    def row(T, n_labels):
        return {"states": rng.standard_normal((T, D_MODEL)).astype(np.float32), "labels": list(range(1, n_labels + 1))}

    return SessionCollator()([[row(12, 3), row(10, 2), row(9, 3)], [row(11, 2), row(8, 3)]])


def _frozen_rates(model, frozen: bool):
    for m in model.modules():
        if isinstance(m, LaCTAudioMixer):
            m.lact_rate_scale = 0.0 if frozen else 1.0


def _reference(model, positions, reads):
    """The loss written out: every utterance read after its own update, plus, for each marked position, a read of
    a separate copy of the carried state with the fast-weight rates set to 0 by hand."""
    cache = LaCTCache(model.config.num_hidden_layers)
    terms, weights = [], []
    for i, batch in enumerate(positions):
        B = batch["labels"].shape[0]
        if cache.batch_size > B:
            cache.batch_select_indices(torch.arange(B))
        cache.start_new_utterance()
        if reads[i] and i > 0:
            copy = LaCTCache(model.config.num_hidden_layers)
            copy.layer_caches = list(cache.layer_caches)
            _frozen_rates(model, True)
            terms.append(model(**batch, past_key_values=copy, use_cache=True).loss)
            _frozen_rates(model, False)
            weights.append(B)
        out = model(**batch, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        terms.append(out.loss)
        weights.append(B)
    return sum(t * w for t, w in zip(terms, weights)) / sum(weights)


def test_carried_reads_add_a_frozen_read_of_the_carried_state_and_leave_the_stream_alone():
    model, positions = _head().eval(), _positions()
    plain = session_loss(model, positions, carry_state=True)
    assert torch.allclose(session_loss(model, positions, True, [False, False, False]), plain)
    assert torch.allclose(plain, _reference(model, positions, [False, False, False]))
    for reads in ([False, True, False], [True, True, True], [False, False, True]):
        got = session_loss(model, positions, True, reads)
        assert torch.allclose(got, _reference(model, positions, reads), atol=1e-6), reads
        assert not torch.allclose(got, plain)
    # the rates are restored after the frozen read
    assert all(m.lact_rate_scale == 1.0 for m in model.modules() if isinstance(m, LaCTAudioMixer))


def test_the_carried_read_loss_trains_the_earlier_utterances_updates():
    """With its own update frozen, the read of position 1 reaches the rate projection only through the state that
    position 0's update wrote: a nonzero gradient there is the gradient running back through the carried state."""
    model, positions = _head(), _positions()
    model.eval()  # no dropout; the graph is what matters
    cache = LaCTCache(model.config.num_hidden_layers)
    cache = model(**positions[0], past_key_values=cache, use_cache=True).past_key_values
    cache.batch_select_indices(torch.arange(positions[1]["labels"].shape[0]))
    cache.start_new_utterance()
    _frozen_rates(model, True)
    read = model(**positions[1], past_key_values=cache, use_cache=True).loss
    _frozen_rates(model, False)
    lr_proj = model.ctc.model.layers[0].mixer.lr_proj.weight
    (grad,) = torch.autograd.grad(read, lr_proj)
    assert grad.abs().sum() > 0
    # without a carried state the same frozen read has no path to the rates at all
    _frozen_rates(model, True)
    alone = model(**positions[1]).loss
    _frozen_rates(model, False)
    (grad,) = torch.autograd.grad(alone, lr_proj, allow_unused=True, materialize_grads=True)
    assert grad.abs().sum() == 0


def test_carried_reads_need_a_carried_state_and_a_flag_per_position():
    model, positions = _head(), _positions()
    with pytest.raises(ValueError, match="carry_state"):
        session_loss(model, positions, False, [False, True, False])
    with pytest.raises(ValueError, match="one flag per position"):
        session_loss(model, positions, True, [False, True])
    with pytest.raises(ValueError, match="carried_read_fraction"):
        RecogniserTrainingArguments(output_dir="x", carried_read_fraction=1.5)
