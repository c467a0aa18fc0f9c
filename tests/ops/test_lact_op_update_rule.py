"""``update_rule="adam"`` of the LaCT op: the chunked op against the reference loop and an independent formula,
gradients, streams, state transformations and errors."""

import itertools

import pytest
import torch

from modeling_lact_audio.kernels import ORDERS, FastWeightState, lact_swiglu, lact_swiglu_reference
from modeling_lact_audio.kernels.chunk import chunk_gradient, dense_update
from tests.lact_op_utils import call_op, make_inputs, padding_mask

NAMES = ("q", "k", "v", "lr", "momentum", "w0", "w1", "w2")
STATE_NAMES = ("w0", "w1", "w2", "m0", "m1", "m2", "v0", "v1", "v2", "v_count")


def _call(fn, x, state=None, sl=slice(None), use_mom=True, mask=None, **kw):
    return call_op(fn, x, state=state, sl=sl, use_mom=use_mom, mask=mask, update_rule="adam", muon_steps=0, **kw)


def _assert_states_close(a: FastWeightState, b: FastWeightState, tol=1e-8):
    for name in STATE_NAMES:
        ta, tb = getattr(a, name), getattr(b, name)
        assert (ta is None) == (tb is None), name
        if ta is not None:
            torch.testing.assert_close(ta, tb, rtol=tol, atol=tol, msg=name)
    assert a.seen == b.seen and (a.pending is None) == (b.pending is None)


@pytest.mark.parametrize("T,chunk_size", [(1, 4), (37, 8), (63, 16), (40, 64)])
@pytest.mark.parametrize(
    "order,use_mom,wn,padded", list(itertools.product(ORDERS, [False, True], [False, True], [False, True]))
)
def test_adam_chunked_equals_reference_float64(T, chunk_size, order, use_mom, wn, padded):
    x = make_inputs(B=2, T=T, H=2, D=6, Dh=10, seed=T + chunk_size)
    mask = padding_mask(2, T, [T, max(1, T // 3)]) if padded else None
    kw = dict(chunk_size=chunk_size, order=order, weight_norm=wn, use_mom=use_mom, mask=mask)
    o_ref, s_ref = _call(lact_swiglu_reference, x, **kw)
    o, s = _call(lact_swiglu, x, **kw)
    torch.testing.assert_close(o, o_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s, s_ref)
    assert s.v0.shape == s.w0.shape and s.v1.shape == s.w1.shape and s.v_count.shape == (2, 2)


def test_adam_first_step_is_the_rate_scaled_sign_of_the_sgd_update():
    """From fresh moments, one chunk without momentum or weight norm: ``V_hat = G^2``, so
    ``dW = r * G / sqrt(G^2 + eps^2)``, ``r`` the chunk's mean rate per matrix: an independent formula."""
    B, C, H, D, Dh = 1, 8, 2, 5, 7
    x = make_inputs(B=B, T=C, H=H, D=D, Dh=Dh, seed=3)
    eps = 1e-3  # large enough that the step is not exactly a sign
    _, s = _call(lact_swiglu, x, use_mom=False, chunk_size=C, order="update_apply", weight_norm=False, adam_eps=eps)
    W02 = torch.cat([x["w0"], x["w2"]], dim=2).reshape(B * H, 2 * Dh, D)
    W1t = x["w1"].mT.reshape(B * H, Dh, D)
    k, v = (x[n].transpose(1, 2).reshape(B * H, C, D) for n in ("k", "v"))
    lr = x["lr"].transpose(1, 2).reshape(B * H, C, 3)
    G02, G1t = dense_update(*chunk_gradient(W02, W1t, k, v, lr), k, v)
    r = lr.mean(1)  # [BH, 3]
    step = lambda g, rate: rate[:, None, None] * g / torch.sqrt(g * g + eps**2)
    torch.testing.assert_close(s.w0.reshape(B * H, Dh, D) - W02[:, :Dh], step(G02[:, :Dh], r[:, 0]))
    torch.testing.assert_close(s.w2.reshape(B * H, Dh, D) - W02[:, Dh:], step(G02[:, Dh:], r[:, 2]))
    torch.testing.assert_close(s.w1.mT.reshape(B * H, Dh, D) - W1t, step(G1t, r[:, 1]))
    torch.testing.assert_close(s.v1.mT.reshape(B * H, Dh, D), (1 - 0.99) * G1t.square())
    assert s.v_count.tolist() == [[1, 1]]


def test_adam_bias_correction_and_second_moment_across_chunks():
    """Two chunks: ``V = b2 (1 - b2) G1^2 + (1 - b2) G2^2`` and the second step divides by ``sqrt(V / (1 - b2^2))``."""
    x = make_inputs(B=1, T=8, H=1, D=4, Dh=5, seed=9)
    kw = dict(use_mom=False, chunk_size=4, order="update_apply", weight_norm=False, adam_beta2=0.9)
    _, s1 = _call(lact_swiglu, x, sl=slice(0, 4), **kw)
    _, s2 = _call(lact_swiglu, x, state=s1, sl=slice(4, 8), **kw)
    W02 = torch.cat([s1.w0, s1.w2], dim=2).reshape(1, 10, 4)
    W1t = s1.w1.mT.reshape(1, 5, 4)
    k, v = (x[n][:, 4:].transpose(1, 2).reshape(1, 4, 4) for n in ("k", "v"))
    lr = x["lr"][:, 4:].transpose(1, 2).reshape(1, 4, 3)
    _, G1t = dense_update(*chunk_gradient(W02, W1t, k, v, lr), k, v)
    V1t = 0.9 * s1.v1.mT.reshape(1, 5, 4) + 0.1 * G1t.square()
    torch.testing.assert_close(s2.v1.mT.reshape(1, 5, 4), V1t)
    step = lr[..., 1].mean() * G1t / torch.sqrt(V1t / (1 - 0.9**2) + 1e-16)
    torch.testing.assert_close(s2.w1.mT.reshape(1, 5, 4) - W1t, step)
    assert s2.v_count.tolist() == [[2]]


@pytest.mark.parametrize("order", ORDERS)
def test_adam_gradients_equal_the_reference(order):
    x = make_inputs(B=2, T=21, H=2, D=4, Dh=6, seed=4, requires_grad=True)
    mask = padding_mask(2, 21, [21, 13])
    grads = []
    for fn in (lact_swiglu, lact_swiglu_reference):
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
        o, s = _call(fn, x, state=state, chunk_size=5, order=order, mask=mask)
        loss = o.square().sum() + s.w0.sin().sum() + s.w1.square().sum() + s.m2.cos().sum() + 1e3 * s.v1.sum()
        grads.append(torch.autograd.grad(loss, [x[n] for n in NAMES]))
    for name, a, b in zip(NAMES, *grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("use_mom", [False, True])
@pytest.mark.parametrize("order", ORDERS)
def test_adam_gradcheck_float64(order, use_mom):
    x = make_inputs(B=1, T=6, H=1, D=3, Dh=4, requires_grad=True)

    def fn(q, k, v, lr, momentum, w0, w1, w2):
        state = FastWeightState.from_weights(w0, w1, w2)
        o, s = lact_swiglu(
            q, k, v, lr, state, chunk_size=3, order=order, muon_steps=0, update_rule="adam",
            momentum=momentum if use_mom else None, adam_eps=1e-4,
        )  # fmt: skip
        return o, s.w0, s.w1, s.v2

    assert torch.autograd.gradcheck(fn, tuple(x[n] for n in NAMES), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("use_mom", [False, True])
@pytest.mark.parametrize("cuts", [[5], [1, 2, 3, 17, 40], [16, 32]])
def test_adam_apply_update_split_anywhere_equals_one_call(cuts, use_mom):
    x = make_inputs(T=50)
    mask = padding_mask(2, 50, [50, 37])
    kw = dict(chunk_size=16, order="apply_update", mask=mask, use_mom=use_mom)
    o_full, s_full = _call(lact_swiglu, x, **kw)
    state, outs = x["state"], []
    for a, b in zip([0, *cuts], [*cuts, 50]):
        o, state = _call(lact_swiglu, x, state=state, sl=slice(a, b), **kw)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), o_full, rtol=1e-10, atol=1e-10)
    _assert_states_close(state, s_full, 1e-10)


@pytest.mark.parametrize("order", ["update_apply", "bidirectional"])
def test_adam_split_at_chunk_multiples_equals_one_call(order):
    x = make_inputs(T=70)
    o_full, s_full = _call(lact_swiglu, x, chunk_size=16, order=order)
    state, outs = x["state"], []
    for a, b in zip([0, 16, 48, 64], [16, 48, 64, 70]):
        o, state = _call(lact_swiglu, x, state=state, sl=slice(a, b), chunk_size=16, order=order)
        outs.append(o)
    _assert_states_close(state, s_full, 1e-10)
    if order == "update_apply":
        torch.testing.assert_close(torch.cat(outs, 1), o_full, rtol=1e-10, atol=1e-10)


def test_state_transformations_carry_the_second_moments():
    x = make_inputs(T=20)
    _, s = _call(lact_swiglu, x, chunk_size=8)
    for name in ("v0", "v1", "v2", "v_count"):
        assert getattr(s, name) is not None
        assert getattr(s.detach(), name) is not None
        torch.testing.assert_close(getattr(s.index_select(torch.tensor([1, 0])), name)[0], getattr(s, name)[1])
        torch.testing.assert_close(getattr(s.reset_stream(), name), getattr(s, name))
        torch.testing.assert_close(getattr(s.to("cpu"), name), getattr(s, name))
    assert s.v_count.dtype == torch.long and s.to("cpu").v_count.dtype == torch.long
    # a state carried across utterances continues the same moments
    o1, _ = _call(lact_swiglu, x, state=s.reset_stream(), chunk_size=8)
    o2, _ = _call(lact_swiglu_reference, x, state=s.reset_stream(), chunk_size=8)
    torch.testing.assert_close(o1, o2, rtol=1e-8, atol=1e-8)


def test_default_rule_is_sgd_and_differs_from_adam():
    x = make_inputs(T=32)
    kw = dict(chunk_size=8, order="update_apply", muon_steps=0)
    o_default, s_default = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], **kw)
    o_sgd, _ = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], update_rule="sgd", **kw)
    o_adam, _ = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], update_rule="adam", **kw)
    torch.testing.assert_close(o_default, o_sgd, rtol=0, atol=0)
    assert s_default.v0 is None and not torch.allclose(o_adam, o_sgd)


def test_adam_under_bf16_autocast_keeps_float32_moments():
    x = make_inputs(B=1, T=64, H=2, D=16, Dh=16, dtype=torch.float32)
    kw = dict(chunk_size=16, order="update_apply", use_mom=True)
    o32, s32 = _call(lact_swiglu, x, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o16, s16 = _call(lact_swiglu, x, **kw)
    assert s16.v0.dtype == torch.float32 and torch.isfinite(o16.float()).all()
    assert (o16.float() - o32).norm() / o32.norm() < 0.05


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
def test_adam_on_the_triton_backend_equals_the_reference():
    """The Triton backend's steps (read, gradient, renorm) with Adam's PyTorch step; in the interpreter on CPU."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = make_inputs(B=1, T=10, H=1, D=4, Dh=4, seed=2, dtype=torch.float64 if device == "cpu" else torch.float32)
    x = {n: t.to(device) for n, t in x.items()}
    kw = dict(chunk_size=4, order="update_apply")
    o_ref, s_ref = _call(lact_swiglu_reference, x, **kw)
    o, s = _call(lact_swiglu, x, backend="triton", **kw)
    tol = 1e-9 if device == "cpu" else 2e-4
    torch.testing.assert_close(o, o_ref, rtol=tol, atol=tol)
    _assert_states_close(s, s_ref, tol)


def test_adam_errors():
    x = make_inputs(T=5)
    with pytest.raises(ValueError, match="update_rule='adam' needs muon_steps=0"):
        lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=4, update_rule="adam", muon_steps=5)
    with pytest.raises(ValueError, match="update_rule must be one of"):
        lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=4, update_rule="lion")
    with pytest.raises(ValueError, match="adam_beta2"):
        _call(lact_swiglu, x, chunk_size=4, adam_beta2=1.0)
    with pytest.raises(ValueError, match="adam_eps"):
        _call(lact_swiglu, x, chunk_size=4, adam_eps=0.0)
    _, s = _call(lact_swiglu, x, chunk_size=4, order="update_apply")
    with pytest.raises(ValueError, match="Adam second moments"):
        lact_swiglu(x["q"], x["k"], x["v"], x["lr"], s, chunk_size=4, order="update_apply")
