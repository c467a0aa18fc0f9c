"""Hostile inputs to the LaCT op, in both implementations: each used to crash inside torch or return NaN
silently (hardening issue). Value checks (NaN/Inf in the state) run under ``check_values()``."""

import pytest
import torch

from modeling_lact_audio.kernels import FastWeightState, lact_swiglu, lact_swiglu_reference
from modeling_lact_audio.kernels.validation import check_values
from tests.lact_op_utils import make_inputs

OPS = {"chunk": lact_swiglu, "reference": lact_swiglu_reference}


def inputs(dtype=torch.float32, T=10):
    x = make_inputs(B=1, T=T, H=2, D=4, Dh=6, dtype=dtype)
    return x["q"], x["k"], x["v"], x["lr"], x["state"]


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_rates_in_another_dtype_than_the_state_are_cast(op):
    q, k, v, lr, state = inputs()
    want, _ = op(q, k, v, lr, state, chunk_size=4)
    got, _ = op(q, k, v, lr.double(), state, chunk_size=4)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
@pytest.mark.parametrize("order", ["apply_update", "update_apply"])
def test_the_chunk_size_cannot_change_in_the_middle_of_a_stream(op, order):
    q, k, v, lr, state = inputs()
    _, mid = op(q[:, :6], k[:, :6], v[:, :6], lr[:, :6], state, chunk_size=4, order=order)
    assert mid.chunk_size == 4
    with pytest.raises(ValueError, match="started with chunk_size=4, got 3"):
        op(q[:, 6:], k[:, 6:], v[:, 6:], lr[:, 6:], mid, chunk_size=3, order=order)
    op(q[:, 6:], k[:, 6:], v[:, 6:], lr[:, 6:], mid.reset_stream(), chunk_size=3, order=order)  # a new stream


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_integer_rates_and_momentum_raise(op):
    q, k, v, lr, state = inputs()
    with pytest.raises(ValueError, match="momentum must be floating point"):
        op(q, k, v, lr, state, chunk_size=4, momentum=torch.zeros(1, 10, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="lr must be floating point"):
        op(q, k, v, lr.long(), state, chunk_size=4)


@pytest.mark.parametrize("dims", [(0, 2, 6, 4), (1, 0, 6, 4), (1, 2, 0, 4), (1, 2, 6, 0)])
def test_empty_sizes_raise(dims):
    B, H, Dh, D = dims
    with pytest.raises(ValueError, match="needs every size >= 1"):
        FastWeightState.from_weights(torch.zeros(B, H, Dh, D), torch.zeros(B, H, D, Dh), torch.zeros(B, H, Dh, D))
    q, k, v, lr, state = inputs()
    with pytest.raises(ValueError, match="need B, H, D >= 1"):
        lact_swiglu(q[:0], k[:0], v[:0], lr[:0], state, chunk_size=4)


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_a_state_on_another_device_raises(op):
    q, k, v, lr, state = inputs()
    with pytest.raises(ValueError, match="q is on cpu but the state is on meta"):
        op(q, k, v, lr, state.to("meta"), chunk_size=4)


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_a_nan_state_is_named_with_value_checks_on(op):
    q, k, v, lr, state = inputs()
    bad = FastWeightState.from_weights(state.w0, state.w1, state.w2)
    bad.w1[0, 0, 0, 0] = float("nan")
    with check_values(), pytest.raises(ValueError, match="incoming state holds NaN or Inf in w1"):
        op(q, k, v, lr, bad, chunk_size=4)
    with check_values(False):  # the switch: no host sync, garbage in, garbage out
        out, _ = op(q, k, v, lr, bad, chunk_size=4)
    assert not torch.isfinite(out).all()


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_an_overflowing_update_names_its_cause(op):
    q, k, v, lr, state = inputs()
    overflow = r"updated state holds NaN or Inf.*largest \|k\| [0-9.]+e\+(19|20)"
    with check_values(), pytest.raises(ValueError, match=overflow):
        op(q, k * 1e20, v, lr, state, chunk_size=4)
    with check_values():  # finite inputs of sane size pass the same checks
        out, new = op(q, k, v, lr, state, chunk_size=4)
    assert torch.isfinite(out).all() and torch.isfinite(new.w0).all()
