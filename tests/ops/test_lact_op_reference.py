"""The chunked LaCT op against the plain reference loop, and both against independent formulas."""

import itertools

import numpy as np
import pytest
import torch

from modeling_lact_audio.kernels import (
    ORDERS,
    FastWeightState,
    lact_swiglu,
    lact_swiglu_reference,
    newton_schulz,
)
from modeling_lact_audio.kernels.chunk import chunk_gradient, dense_update
from tests.lact_op_utils import make_inputs, padding_mask

CASES = list(itertools.product(ORDERS, [0, 5], [False, True], [False, True], [False, True]))


def _run(fn, x, chunk_size, order, muon, wn, use_mom, mask):
    return fn(
        x["q"],
        x["k"],
        x["v"],
        x["lr"],
        x["state"],
        chunk_size=chunk_size,
        order=order,
        muon_steps=muon,
        weight_norm=wn,
        momentum=x["momentum"] if use_mom else None,
        mask=mask,
    )


def _assert_states_close(a: FastWeightState, b: FastWeightState, tol):
    for name in ("w0", "w1", "w2", "m0", "m1", "m2"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert (ta is None) == (tb is None), name
        if ta is not None:
            torch.testing.assert_close(ta, tb, rtol=tol, atol=tol, msg=name)
    assert a.seen == b.seen
    assert (a.pending is None) == (b.pending is None)
    if a.pending is not None:
        torch.testing.assert_close(a.pending.k, b.pending.k)


@pytest.mark.parametrize("T,chunk_size", [(1, 4), (63, 7), (63, 16), (63, 64), (200, 32), (200, 256)])
@pytest.mark.parametrize("order,muon,wn,use_mom,padded", CASES)
def test_chunked_equals_reference_float64(T, chunk_size, order, muon, wn, use_mom, padded):
    x = make_inputs(B=2, T=T, H=2, D=6, Dh=10, seed=T + chunk_size)
    mask = padding_mask(2, T, [T, max(1, T // 3)]) if padded else None
    o_ref, s_ref = _run(lact_swiglu_reference, x, chunk_size, order, muon, wn, use_mom, mask)
    o, s = _run(lact_swiglu, x, chunk_size, order, muon, wn, use_mom, mask)
    torch.testing.assert_close(o, o_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s, s_ref, 1e-8)


def test_update_is_the_negative_weighted_gradient_of_the_dot_product_loss():
    x = make_inputs(B=1, T=9, H=3, D=5, Dh=7)
    W = [x["w0"].reshape(3, 7, 5), x["w1"].reshape(3, 5, 7), x["w2"].reshape(3, 7, 5)]
    k = x["k"][0].transpose(0, 1)  # [H, T, D]
    v = x["v"][0].transpose(0, 1)
    lr = x["lr"][0].transpose(0, 1)  # [H, T, 3]
    W02, W1t = torch.cat([W[0], W[2]], dim=1), W[1].mT  # working layout: rows w0, w2; w1^T
    for grad_mode in (False, True):  # in-place (inference) and autograd-friendly formulations
        with torch.set_grad_enabled(grad_mode):
            lr_ = lr.clone().requires_grad_(grad_mode)
            dW02, dW1t = dense_update(*chunk_gradient(W02, W1t, k, v, lr_), k, v)
        _check_negative_gradients(W, k, v, lr, [dW02[:, :7].detach(), dW1t.mT.detach(), dW02[:, 7:].detach()])


def _check_negative_gradients(W, k, v, lr, got):
    for i in range(3):
        Wg = [w.detach().clone().requires_grad_(True) for w in W]
        out = torch.einsum(
            "hdf,htf->htd",
            Wg[1],
            torch.nn.functional.silu(torch.einsum("hfd,htd->htf", Wg[0], k)) * torch.einsum("hfd,htd->htf", Wg[2], k),
        )
        loss = -(lr[..., i] * (out * v).sum(-1)).sum()
        (grad,) = torch.autograd.grad(loss, Wg[i])
        torch.testing.assert_close(got[i], -grad, rtol=1e-10, atol=1e-12)


def _newton_schulz_numpy(x, steps):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = x.T if x.shape[0] > x.shape[1] else x
    X = X / (np.linalg.norm(X) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if x.shape[0] > x.shape[1] else X


@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (6, 6)])
def test_newton_schulz_matches_formula_and_orthogonalises(shape):
    x = torch.randn(3, 2, *shape, dtype=torch.float64)
    y = newton_schulz(x, 5)
    for i, j in itertools.product(range(3), range(2)):
        np.testing.assert_allclose(y[i, j].numpy(), _newton_schulz_numpy(x[i, j].numpy(), 5), rtol=1e-10, atol=1e-12)
    sv = torch.linalg.svdvals(newton_schulz(x, 10))  # x is full rank: every singular value is lifted
    # Muon's quintic does not converge to exactly 1: it keeps singular values in about [0.68, 1.14].
    assert sv.min() > 0.6 and sv.max() < 1.2, sv


def test_masked_chunk_changes_nothing():
    x = make_inputs(B=2, T=32, H=2, D=6, Dh=10)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1] = False  # example 1 is all padding
    for order in ORDERS:
        o, s = lact_swiglu(
            x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=8, order=order, momentum=x["momentum"], mask=mask
        )
        torch.testing.assert_close(s.w0[1], x["state"].w0[1])
        torch.testing.assert_close(s.w1[1], x["state"].w1[1])
        assert torch.count_nonzero(s.m0[1]) == 0
        assert torch.count_nonzero(o[1]) == 0
        assert not torch.allclose(s.w0[0], x["state"].w0[0])


def test_weight_norm_restores_initial_row_norms():
    x = make_inputs(B=1, T=64, H=2, D=6, Dh=10)
    _, s = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=16, weight_norm=True)
    for w, w_init in ((s.w0, x["w0"]), (s.w1, x["w1"]), (s.w2, x["w2"])):
        torch.testing.assert_close(w.norm(dim=-1), w_init.norm(dim=-1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order", ORDERS)
def test_token_blocked_chunks_equal_the_reference_with_gradients(order, monkeypatch):
    """On the CPU inference processes a long chunk in cache-sized token blocks (force 64-token blocks: 64, 64, 32);
    with autograd recording the same values come from the out-of-place steps, gradients included."""
    from modeling_lact_audio.kernels import chunk as chunk_module

    monkeypatch.setattr(chunk_module, "CPU_BLOCK_BYTES", 1)
    assert chunk_module.token_block(torch.zeros(1, 300, 1), 4 * 10 * 8) == 64
    x = make_inputs(B=2, T=200, H=2, D=6, Dh=10, seed=5, requires_grad=True)
    mask = padding_mask(2, 200, [200, 150])
    outs = []
    for fn in (lact_swiglu, lact_swiglu_reference):
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
        o, s = fn(
            x["q"], x["k"], x["v"], x["lr"], state, chunk_size=160, order=order, momentum=x["momentum"], mask=mask
        )
        grads = torch.autograd.grad(o.square().sum() + s.w0.sum(), [x["q"], x["k"], x["lr"], x["w1"]])
        outs.append((o, s.w0, grads))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-8, atol=1e-8)
    for a, b in zip(outs[0][2], outs[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)
    with torch.no_grad():  # the in-place, token-blocked path
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
        o, s = lact_swiglu(
            x["q"], x["k"], x["v"], x["lr"], state, chunk_size=160, order=order, momentum=x["momentum"], mask=mask
        )
    torch.testing.assert_close(o, outs[1][0], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(s.w0, outs[1][1], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("T", [48, 50])
def test_without_final_state_the_outputs_are_the_same(order, T):
    """``output_final_state=False`` returns no state; apply_update then skips the last update, which no output reads."""
    x = make_inputs(B=2, T=T, H=2, D=6, Dh=10, seed=7)
    mask = padding_mask(2, T, [T, 30])
    outs = []
    for fn in (lact_swiglu, lact_swiglu_reference):
        for keep in (True, False):
            o, s = fn(
                x["q"],
                x["k"],
                x["v"],
                x["lr"],
                x["state"],
                chunk_size=16,
                order=order,
                mask=mask,
                momentum=x["momentum"],
                output_final_state=keep,
            )
            assert (s is None) == (not keep)
            outs.append(o)
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("order", ORDERS)
def test_single_example_with_padding_equals_the_reference(order):
    """B = 1: inference writes the reads straight into the output (no copy); padded outputs still zero."""
    x = make_inputs(B=1, T=50, H=3, D=6, Dh=10, seed=11)
    mask = padding_mask(1, 50, [37])
    kw = dict(chunk_size=16, order=order, mask=mask, momentum=x["momentum"])
    o, s = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], **kw)
    o_ref, s_ref = lact_swiglu_reference(x["q"], x["k"], x["v"], x["lr"], x["state"], **kw)
    torch.testing.assert_close(o, o_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s, s_ref, 1e-8)
    assert torch.count_nonzero(o[:, 37:]) == 0
