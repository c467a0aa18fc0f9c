"""Variable chunk boundaries (``chunk_ends``) of the LaCT op: the slot layout against the per-example reference
loop, against fixed chunks and against one call per chunk; gradients, streams split anywhere, padding, errors."""

import itertools

import pytest
import torch

from modeling_lact_audio.kernels import ORDERS, FastWeightState, lact_swiglu, lact_swiglu_reference
from modeling_lact_audio.kernels.chunk import segment_layout
from tests.lact_op_utils import call_op, make_inputs, padding_mask

NAMES = ("q", "k", "v", "lr", "momentum", "w0", "w1", "w2")


def random_ends(B, T, p=0.15, seed=0):
    """Bool ``[B, T]`` with a True (a chunk ends) at about a fraction ``p`` of the tokens; rows differ."""
    return torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < p


def _call(fn, x, state=None, sl=slice(None), ends=None, mask=None, use_mom=True, **kw):
    return call_op(fn, x, state=state, sl=sl, use_mom=use_mom, mask=mask, chunk_ends=ends, **kw)


def _split_run(x, cuts, **kw):
    T = x["q"].shape[1]
    state, outs = x["state"], []
    for a, b in zip([0, *cuts], [*cuts, T]):
        o, state = _call(lact_swiglu, x, state=state, sl=slice(a, b), **kw)
        outs.append(o)
    return torch.cat(outs, 1), state


def _assert_states_close(a: FastWeightState, b: FastWeightState, tol=1e-8):
    for name in ("w0", "w1", "w2", "m0", "m1", "m2", "v0", "v1", "v2", "v_count", "chunk_fill"):
        ta, tb = getattr(a, name), getattr(b, name)
        assert (ta is None) == (tb is None), name
        if ta is not None:
            torch.testing.assert_close(ta, tb, rtol=tol, atol=tol, msg=name)
    assert a.seen == b.seen and (a.pending is None) == (b.pending is None)
    if a.pending is not None:
        torch.testing.assert_close(a.pending.mask, b.pending.mask)
        for name in ("k", "v", "lr", "momentum"):  # the reference keeps padded tokens' rates, the op zeroes them
            ta, tb = getattr(a.pending, name), getattr(b.pending, name)
            if name == "lr":
                ta, tb = (t * p.mask[:, :, None, None] for t, p in ((ta, a.pending), (tb, b.pending)))
            if ta is not None:
                torch.testing.assert_close(ta, tb, rtol=tol, atol=tol, msg=f"pending.{name}")


RULES = [("sgd", 0), ("sgd", 2), ("adam", 0)]


@pytest.mark.parametrize("T,chunk_size", [(1, 4), (37, 8), (63, 16)])
@pytest.mark.parametrize(
    "order,rule,use_mom,padded", list(itertools.product(ORDERS, RULES, [False, True], [False, True]))
)
def test_chunk_ends_equal_the_reference_float64(T, chunk_size, order, rule, use_mom, padded):
    x = make_inputs(B=3, T=T, H=2, D=5, Dh=7, seed=T)
    ends = random_ends(3, T, seed=T + chunk_size)
    mask = padding_mask(3, T, [T, max(1, T // 2), max(1, T - 5)]) if padded else None
    kw = dict(ends=ends, mask=mask, use_mom=use_mom, chunk_size=chunk_size, order=order)
    kw.update(update_rule=rule[0], muon_steps=rule[1])
    o_ref, s_ref = _call(lact_swiglu_reference, x, **kw)
    o, s = _call(lact_swiglu, x, **kw)
    torch.testing.assert_close(o, o_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s, s_ref)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("at_multiples", [False, True])
def test_no_extra_ends_or_ends_at_multiples_are_the_fixed_chunks(order, at_multiples):
    x = make_inputs(T=45)
    ends = torch.zeros(2, 45, dtype=torch.bool)
    if at_multiples:
        ends[:, 7::8] = True
    kw = dict(chunk_size=8, order=order, mask=padding_mask(2, 45, [45, 30]))
    o_fixed, s_fixed = _call(lact_swiglu, x, **kw)
    o, s = _call(lact_swiglu, x, ends=ends, **kw)
    torch.testing.assert_close(o, o_fixed, rtol=1e-10, atol=1e-10)
    for name in ("w0", "w1", "w2", "m0"):
        torch.testing.assert_close(getattr(s, name), getattr(s_fixed, name), rtol=1e-10, atol=1e-10)
    assert s.chunk_fill.tolist() == [45 % 8] * 2


def test_update_apply_equals_one_call_per_chunk():
    """An independent check with the fixed-chunk op: each chunk of an example is one call whose chunk_size is
    the chunk's length (a new stream per call, the adapted weights carried)."""
    T, C = 29, 6
    x = make_inputs(B=2, T=T, H=2, D=5, Dh=7, seed=1)
    ends = random_ends(2, T, p=0.2, seed=5)
    o, s = _call(lact_swiglu, x, ends=ends, chunk_size=C, order="update_apply", use_mom=False, muon_steps=2)
    for b in range(2):
        one = {n: t[b : b + 1] for n, t in x.items() if n != "state"}
        state = FastWeightState.from_weights(one["w0"], one["w1"], one["w2"])
        start, count, outs = 0, 0, []
        for t in range(T):
            count += 1
            if bool(ends[b, t]) or count == C or t == T - 1:
                piece = {n: one[n][:, start : t + 1] for n in ("q", "k", "v", "lr")}
                o_b, state = lact_swiglu(
                    *piece.values(), state.reset_stream(), chunk_size=t + 1 - start, order="update_apply", muon_steps=2
                )
                outs.append(o_b)
                start, count = t + 1, 0
        torch.testing.assert_close(o[b : b + 1], torch.cat(outs, 1), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s.w1[b : b + 1], state.w1, rtol=1e-10, atol=1e-10)


def test_segment_layout_counts_from_each_chunks_own_start():
    ends = torch.tensor([[False, True, False, False, False, False, False, False, False]])
    layout = segment_layout(ends, torch.tensor([2]), torch.tensor([2]), 4, True)
    # chunks: [2 pending + t0, t1] (ends at t1), [t2..t5] (4 = chunk_size), [t6..t8] open
    assert layout["segment"].tolist() == [[0, 0, 1, 1, 1, 1, 2, 2, 2]]
    assert layout["offset"].tolist() == [[2, 3, 0, 1, 2, 3, 0, 1, 2]]
    assert layout["segments"].tolist() == [3] and layout["updating"].tolist() == [2]
    assert layout["fill"].tolist() == [3]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_chunk_ends_gradients_equal_the_reference(order, rule):
    x = make_inputs(B=2, T=19, H=2, D=4, Dh=6, seed=8, requires_grad=True)
    ends = random_ends(2, 19, p=0.2, seed=3)
    mask = padding_mask(2, 19, [19, 12])
    grads = []
    for fn in (lact_swiglu, lact_swiglu_reference):
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
        o, s = _call(
            fn, x, state=state, ends=ends, mask=mask, chunk_size=5, order=order, update_rule=rule,
            muon_steps=2 if rule == "sgd" else 0,
        )  # fmt: skip
        loss = o.square().sum() + s.w0.sin().sum() + s.w1.square().sum() + s.m2.cos().sum()
        if s.pending is not None:
            loss = loss + s.pending.k.square().sum() + s.pending.lr.sum()
        grads.append(torch.autograd.grad(loss, [x[n] for n in NAMES]))
    for name, a, b in zip(NAMES, *grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_chunk_ends_gradcheck_float64(order, rule):
    x = make_inputs(B=2, T=7, H=1, D=3, Dh=4, requires_grad=True)
    ends = torch.tensor(
        [[False, True, False, False, False, True, False], [False, False, False, True, True, False, False]]
    )

    def fn(q, k, v, lr, momentum, w0, w1, w2):
        state = FastWeightState.from_weights(w0, w1, w2)
        o, s = lact_swiglu(
            q, k, v, lr, state, chunk_size=3, order=order, momentum=momentum, chunk_ends=ends, update_rule=rule,
            muon_steps=2 if rule == "sgd" else 0, adam_eps=1e-4,
        )  # fmt: skip
        return o, s.w0, s.w1

    assert torch.autograd.gradcheck(fn, tuple(x[n] for n in NAMES), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("rule", ["sgd", "adam"])
@pytest.mark.parametrize("use_mom", [False, True])
@pytest.mark.parametrize("cuts", [[5], [1, 2, 3, 17, 40], list(range(1, 50, 3)), [16, 32]])
def test_apply_update_split_anywhere_equals_one_call(cuts, use_mom, rule):
    x = make_inputs(B=3, T=50)
    ends = random_ends(3, 50, p=0.1, seed=len(cuts))
    mask = padding_mask(3, 50, [50, 37, 44])
    kw = dict(ends=ends, chunk_size=16, order="apply_update", mask=mask, use_mom=use_mom)
    kw.update(update_rule=rule, muon_steps=5 if rule == "sgd" else 0)
    o_full, s_full = _call(lact_swiglu, x, **kw)
    o_split, s_split = _split_run(x, cuts, **kw)
    torch.testing.assert_close(o_split, o_full, rtol=1e-10, atol=1e-10)
    _assert_states_close(s_split, s_full, 1e-10)
    o_ref, s_ref = _call(lact_swiglu_reference, x, **kw)
    torch.testing.assert_close(o_full, o_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s_full, s_ref)


@pytest.mark.parametrize("order", ["update_apply", "bidirectional"])
def test_split_at_chunk_ends_equals_one_call(order):
    x = make_inputs(B=2, T=60)
    ends = random_ends(2, 60, seed=11)
    cuts = [13, 30, 31, 47]
    ends[:, [c - 1 for c in cuts]] = True  # every row ends a chunk where the stream is cut
    kw = dict(ends=ends, chunk_size=8, order=order)
    o_full, s_full = _call(lact_swiglu, x, **kw)
    o_split, s_split = _split_run(x, cuts, **kw)
    _assert_states_close(s_split, s_full, 1e-10)
    if order == "update_apply":
        torch.testing.assert_close(o_split, o_full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["apply_update", "update_apply"])
def test_a_stream_switches_from_fixed_to_variable_chunks(order):
    """Calls without chunk_ends, then with: the fixed chunks so far are the start of the variable ones."""
    x = make_inputs(B=2, T=40)
    ends = random_ends(2, 40, seed=2)
    ends[:, :20] = False
    ends[:, 15] = True  # update_apply: the fixed call ends a chunk at 16 too
    kw = dict(chunk_size=8, order=order)
    o1, s1 = _call(lact_swiglu, x, sl=slice(0, 16), **kw)
    o2, s2 = _call(lact_swiglu, x, state=s1, sl=slice(16, 40), ends=ends, **kw)
    o_full, s_full = _call(lact_swiglu, x, ends=ends, **kw)
    torch.testing.assert_close(torch.cat([o1, o2], 1), o_full, rtol=1e-10, atol=1e-10)
    _assert_states_close(s2, s_full, 1e-10)
    o3, s3 = _call(lact_swiglu, x, state=s_full, sl=slice(0, 7), **kw)  # then without chunk_ends: only chunk_size
    o3_ref, s3_ref = _call(lact_swiglu_reference, x, state=s_full, sl=slice(0, 7), **kw)
    torch.testing.assert_close(o3, o3_ref, rtol=1e-8, atol=1e-8)
    _assert_states_close(s3, s3_ref)


@pytest.mark.parametrize("order", ORDERS)
def test_padded_example_equals_itself_alone(order):
    T, L = 45, 29
    x = make_inputs(T=T)
    ends = random_ends(2, T, seed=4)
    mask = padding_mask(2, T, [T, L])
    o, s = _call(lact_swiglu, x, ends=ends, chunk_size=8, order=order, mask=mask)
    alone = {n: t[1:2, :L] for n, t in x.items() if n not in ("state", "w0", "w1", "w2")}
    alone["state"] = FastWeightState.from_weights(x["w0"][1:2], x["w1"][1:2], x["w2"][1:2])
    o1, s1 = _call(lact_swiglu, alone, ends=ends[1:2, :L], chunk_size=8, order=order)
    torch.testing.assert_close(o[1:2, :L], o1, rtol=1e-10, atol=1e-10)
    assert torch.count_nonzero(o[1, L:]) == 0
    if order != "apply_update":
        torch.testing.assert_close(s.w0[1:2], s1.w0, rtol=1e-10, atol=1e-10)


def test_state_helpers_carry_the_chunk_fill():
    x = make_inputs(B=2, T=20)
    ends = random_ends(2, 20, seed=6)
    _, s = _call(lact_swiglu, x, ends=ends, chunk_size=8, order="apply_update")
    r = s.index_select(torch.tensor([1, 0]))
    assert r.chunk_fill.tolist() == s.chunk_fill.tolist()[::-1]
    torch.testing.assert_close(r.pending.mask[0], s.pending.mask[1])
    assert s.detach().chunk_fill is not None
    fresh = s.reset_stream()
    assert fresh.chunk_fill is None and fresh.pending is None and fresh.seen == 0


@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
@pytest.mark.parametrize("order", ["apply_update", "bidirectional"])
def test_chunk_ends_on_the_triton_backend_equal_the_reference(order):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = make_inputs(B=2, T=9, H=1, D=4, Dh=4, seed=3, dtype=torch.float64 if device == "cpu" else torch.float32)
    x = {n: t.to(device) for n, t in x.items()}
    ends = random_ends(2, 9, p=0.3, seed=1).to(device)
    kw = dict(ends=ends, chunk_size=4, order=order, muon_steps=2)
    o_ref, s_ref = _call(lact_swiglu_reference, x, **kw)
    o, s = _call(lact_swiglu, x, backend="triton", **kw)
    tol = 1e-9 if device == "cpu" else 2e-4
    torch.testing.assert_close(o, o_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(s.w0, s_ref.w0, rtol=tol, atol=tol)


def test_bad_chunk_ends_raise_clear_value_errors():
    x = make_inputs(T=5)
    with pytest.raises(ValueError, match=r"chunk_ends must be None or a bool tensor \[B, T\]"):
        _call(lact_swiglu, x, ends=torch.zeros(2, 4, dtype=torch.bool), chunk_size=4)
    with pytest.raises(ValueError, match="chunk_ends must be bool"):
        _call(lact_swiglu, x, ends=torch.zeros(2, 5), chunk_size=4)
