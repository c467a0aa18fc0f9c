"""State semantics of the LaCT op: split streams, causality, padding, gradients, long inputs, errors."""

import pytest
import torch

from modeling_lact_audio.kernels import FastWeightState, check_values, lact_swiglu, value_checks_enabled
from tests.lact_op_utils import make_inputs, padding_mask


def _call(x, sl, state, **kw):
    mom = kw.pop("momentum", None)
    mask = kw.pop("mask", None)
    return lact_swiglu(
        x["q"][:, sl],
        x["k"][:, sl],
        x["v"][:, sl],
        x["lr"][:, sl],
        state,
        momentum=None if mom is None else mom[:, sl],
        mask=None if mask is None else mask[:, sl],
        **kw,
    )


def _split_run(x, cuts, **kw):
    T = x["q"].shape[1]
    bounds = [0, *cuts, T]
    state, outs = x["state"], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        o, state = _call(x, slice(a, b), state, **dict(kw))
        outs.append(o)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("use_mom", [False, True])
@pytest.mark.parametrize("cuts", [[5], [1, 2, 3, 17, 40], list(range(1, 50)), [16, 32]])
def test_apply_update_split_anywhere_equals_one_call(cuts, use_mom):
    x = make_inputs(T=50)
    mask = padding_mask(2, 50, [50, 37])
    kw = dict(chunk_size=16, order="apply_update", mask=mask, momentum=x["momentum"] if use_mom else None)
    o_full, s_full = _call(x, slice(0, 50), x["state"], **dict(kw))
    o_split, s_split = _split_run(x, cuts, **kw)
    torch.testing.assert_close(o_split, o_full, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_split.w1, s_full.w1, rtol=1e-10, atol=1e-10)
    assert s_split.seen == 50 and s_split.pending.length == 50 % 16


@pytest.mark.parametrize("order", ["update_apply", "bidirectional"])
def test_split_at_chunk_multiples_equals_one_call(order):
    x = make_inputs(T=70)
    kw = dict(chunk_size=16, order=order, momentum=x["momentum"])
    o_full, s_full = _call(x, slice(0, 70), x["state"], **dict(kw))
    o_split, s_split = _split_run(x, [16, 48, 64], **kw)
    for name in ("w0", "w1", "w2", "m0"):
        torch.testing.assert_close(getattr(s_split, name), getattr(s_full, name), rtol=1e-10, atol=1e-10)
    if order == "update_apply":
        torch.testing.assert_close(o_split, o_full, rtol=1e-10, atol=1e-10)


def test_update_apply_chunk_boundaries_follow_the_stream_position():
    # A call ending mid-chunk updates as a short chunk; the next call's chunks stay aligned to the stream.
    x = make_inputs(T=40)
    _, s = _split_run(x, [10], chunk_size=16, order="update_apply")
    _, s_ref = _split_run(x, [10, 16, 32], chunk_size=16, order="update_apply")
    torch.testing.assert_close(s.w0, s_ref.w0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("j", [0, 1, 2])
def test_apply_update_is_block_causal(j):
    C, T = 8, 32
    x = make_inputs(T=T)
    o, _ = _call(x, slice(0, T), x["state"], chunk_size=C, order="apply_update")
    y = dict(x)
    for name in ("k", "v"):
        y[name] = x[name].clone()
        y[name][:, j * C : (j + 1) * C] += torch.randn_like(y[name][:, j * C : (j + 1) * C])
    o2, _ = _call(y, slice(0, T), x["state"], chunk_size=C, order="apply_update")
    torch.testing.assert_close(o2[:, : (j + 1) * C], o[:, : (j + 1) * C], rtol=0, atol=0)
    assert not torch.allclose(o2[:, (j + 1) * C :], o[:, (j + 1) * C :])


def test_hazard_apply_update_never_adapts_within_one_chunk():
    x = make_inputs(T=16)
    fresh = lambda o: torch.testing.assert_close(
        o,
        lact_swiglu(x["q"], x["k"], x["v"], torch.zeros_like(x["lr"]), x["state"], chunk_size=16, order="apply_update")[
            0
        ],
    )
    o_au, _ = _call(x, slice(0, 16), x["state"], chunk_size=16, order="apply_update")
    fresh(o_au)  # read with the initial weights only
    o_ua, _ = _call(x, slice(0, 16), x["state"], chunk_size=16, order="update_apply")
    assert not torch.allclose(o_ua, o_au)  # update-then-apply adapts even a single short utterance


@pytest.mark.parametrize("order", ["apply_update", "update_apply", "bidirectional"])
def test_padded_example_equals_itself_alone(order):
    T, L = 45, 29
    x = make_inputs(T=T)
    mask = padding_mask(2, T, [T, L])
    o, s = _call(x, slice(0, T), x["state"], chunk_size=8, order=order, mask=mask, momentum=x["momentum"])
    alone = {n: t[1:2, :L] for n, t in x.items() if n not in ("state", "w0", "w1", "w2")}
    alone["state"] = FastWeightState.from_weights(x["w0"][1:2], x["w1"][1:2], x["w2"][1:2])
    o1, s1 = _call(alone, slice(0, L), alone["state"], chunk_size=8, order=order, momentum=alone["momentum"])
    torch.testing.assert_close(o[1:2, :L], o1, rtol=1e-10, atol=1e-10)
    assert torch.count_nonzero(o[1, L:]) == 0
    if order != "apply_update":  # apply_update keeps the partial chunk pending in both runs
        torch.testing.assert_close(s.w0[1:2], s1.w0, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("muon", [0, 2])
@pytest.mark.parametrize("order", ["apply_update", "update_apply", "bidirectional"])
def test_gradcheck_float64(order, muon):
    x = make_inputs(B=1, T=6, H=1, D=3, Dh=4, requires_grad=True)
    names = ["q", "k", "v", "lr", "momentum", "w0", "w1", "w2"]

    def fn(q, k, v, lr, momentum, w0, w1, w2):
        state = FastWeightState.from_weights(w0, w1, w2)
        o, s = lact_swiglu(q, k, v, lr, state, chunk_size=3, order=order, muon_steps=muon, momentum=momentum)
        return o, s.w0, s.w1

    assert torch.autograd.gradcheck(fn, tuple(x[n] for n in names), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("autocast", [False, True])
def test_65536_tokens_finite_and_bounded(autocast):
    x = make_inputs(B=1, T=65536, H=2, D=32, Dh=32, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        o, s = lact_swiglu(
            x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=2048, order="apply_update", momentum=x["momentum"]
        )
    assert o.shape == (1, 65536, 2, 32)
    assert torch.isfinite(o).all()
    assert s.w0.dtype == torch.float32
    for w, w_init in ((s.w0, x["w0"]), (s.w1, x["w1"]), (s.w2, x["w2"])):
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w.norm(dim=-1), w_init.norm(dim=-1), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("muon", [0, 5])
def test_bf16_autocast_close_to_float32(muon):
    x = make_inputs(B=1, T=256, H=2, D=32, Dh=32, dtype=torch.float32)
    kw = dict(chunk_size=64, order="update_apply", muon_steps=muon)
    o32, s32 = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o16, s16 = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], **kw)
    assert o16.dtype == torch.bfloat16 and s16.w0.dtype == torch.float32
    if muon == 0:
        assert (o16.float() - o32).norm() / o32.norm() < 0.02
    # Newton-Schulz lifts small singular directions of an update to ~1, so bf16 rounding in them is
    # amplified (Muon accepts this); the bf16 update must still point where the fp32 update points.
    for name in ("w0", "w1", "w2"):
        step32 = getattr(s32, name) - getattr(x["state"], name)
        err = getattr(s16, name) - getattr(s32, name)
        assert err.norm() < 0.3 * step32.norm(), name


def test_state_helpers():
    x = make_inputs(T=20)
    _, s = _call(x, slice(0, 20), x["state"], chunk_size=8, momentum=x["momentum"])
    d = s.detach()
    assert not d.w0.requires_grad and d.pending.length == 4
    r = s.index_select(torch.tensor([1, 0]))
    torch.testing.assert_close(r.w0[0], s.w0[1])
    torch.testing.assert_close(r.pending.k[0], s.pending.k[1])
    fresh = s.reset_stream()
    assert fresh.seen == 0 and fresh.pending is None and fresh.w0 is s.w0


BAD = [
    (dict(q=torch.zeros(2, 5, 2)), "q must be a 4-d tensor"),
    (dict(k=torch.zeros(2, 4, 2, 8)), "k must have the shape of q"),
    (dict(lr=torch.zeros(2, 5, 2, 2)), "lr must be"),
    (dict(mask=torch.ones(2, 5)), "bool"),
    (dict(mask=torch.ones(2, 6, dtype=torch.bool)), "mask must be"),
    (dict(order="causal"), "order must be one of"),
    (dict(chunk_size=0), "chunk_size must be"),
    (dict(muon_steps=-1), "muon_steps"),
    (dict(q=torch.zeros(2, 5, 2, 8, dtype=torch.long)), "floating point"),
    (dict(state="weights"), "FastWeightState"),
]

# Checks that read values: only under check_values(), since each one syncs the host.
BAD_VALUES = [
    (dict(lr=-torch.ones(2, 5, 2, 3)), "non-negative"),
    (dict(q=torch.full((2, 5, 2, 8), float("nan"))), "NaN"),
    (dict(lr=torch.full((2, 5, 2, 3), float("inf"))), "lr contains NaN or Inf"),
    (dict(momentum=torch.ones(2, 5, 2)), r"\[0, 1\)"),
    (dict(momentum=torch.full((2, 5, 2), float("nan"))), "momentum contains NaN"),
]


def _call_with(override):
    x = make_inputs(T=5, D=8, dtype=torch.float32)
    args = dict(
        q=x["q"],
        k=x["k"],
        v=x["v"],
        lr=x["lr"],
        state=x["state"],
        chunk_size=4,
        order="apply_update",
        muon_steps=5,
        momentum=None,
        mask=None,
    )
    args.update(override)
    return lact_swiglu(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("lr"), args.pop("state"), **args)


@pytest.mark.parametrize("override,message", BAD)
def test_bad_inputs_raise_clear_value_errors(override, message):
    with pytest.raises(ValueError, match=message):
        _call_with(override)


@pytest.mark.parametrize("override,message", BAD_VALUES)
def test_bad_values_raise_only_when_value_checks_are_on(override, message):
    with check_values():
        assert value_checks_enabled()
        with pytest.raises(ValueError, match=message):
            _call_with(override)
    with check_values(False):
        assert not value_checks_enabled()
        _call_with(override)  # unchecked: garbage in, garbage out, and no host sync


def test_bad_initial_weights_and_order_switch():
    with pytest.raises(ValueError, match="w1 must be"):
        FastWeightState.from_weights(torch.zeros(1, 2, 4, 3), torch.zeros(1, 2, 4, 3), torch.zeros(1, 2, 4, 3))
    x = make_inputs(T=5)
    _, s = _call(x, slice(0, 5), x["state"], chunk_size=4, order="apply_update")
    with pytest.raises(ValueError, match="unfinished apply_update chunk"):
        _call(x, slice(0, 5), s, chunk_size=4, order="update_apply")
