"""Newton-Schulz in the factor space of a low-rank update, against the dense iteration and inside the op."""

import pytest
import torch

from modeling_lact_audio.kernels import ORDERS, FastWeightState, lact_swiglu, newton_schulz
from modeling_lact_audio.kernels import chunk as chunk_module
from modeling_lact_audio.kernels.newton_schulz import factored_is_cheaper, newton_schulz_factored, newton_schulz_flops
from tests.lact_op_utils import make_inputs, padding_mask


@pytest.mark.parametrize("m,n,r", [(10, 6, 4), (6, 10, 1), (12, 12, 5), (9, 14, 9), (7, 5, 8)])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_factored_equals_dense_newton_schulz_float64(m, n, r, steps):
    g = torch.Generator().manual_seed(m * 100 + n * 10 + r)
    left = torch.randn(3, m, r, generator=g, dtype=torch.float64)
    right = torch.randn(3, r, n, generator=g, dtype=torch.float64)
    want = newton_schulz(left @ right, steps)
    torch.testing.assert_close(newton_schulz_factored(left, right, steps), want, rtol=1e-10, atol=1e-12)
    base = torch.randn(3, m, n, generator=g, dtype=torch.float64)
    torch.testing.assert_close(newton_schulz_factored(left, right, steps, add_to=base), base + want)


def test_factored_zero_update_is_zero_like_dense():
    left, right = torch.zeros(2, 6, 3, dtype=torch.float64), torch.randn(2, 3, 8, dtype=torch.float64)
    assert torch.count_nonzero(newton_schulz_factored(left, right, 5)) == 0
    assert torch.count_nonzero(newton_schulz(left @ right, 5)) == 0


def test_factored_keeps_a_float32_state_in_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(4, 64, 4, generator=g), torch.randn(4, 4, 64, generator=g)
    state = torch.randn(4, 64, 64, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = newton_schulz_factored(left.bfloat16(), right.bfloat16(), 5, add_to=state)
    assert out.dtype == torch.float32
    want = state + newton_schulz(left.double() @ right.double(), 5).float()
    torch.testing.assert_close(out, want, rtol=0, atol=2e-2)  # bf16 inputs, float32 algebra and sum


def test_factored_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="left \\[N, m, r\\] and right \\[N, r, n\\]"):
        newton_schulz_factored(torch.randn(2, 5, 3), torch.randn(2, 4, 6), 5)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        newton_schulz_factored(torch.randn(2, 5, 3), torch.randn(2, 3, 6), -1)


def test_flop_model_and_choice():
    # dense 128 x 128, 5 steps: 5 * (4 + 2) * 128^3
    assert newton_schulz_flops(128, 128, 5) == 5 * 6 * 128**3
    assert newton_schulz_flops(128, 64, 5) == 5 * (4 * 64 * 64 * 128 + 2 * 64**3)
    r = 4
    assert newton_schulz_flops(128, 128, 5, r) == 2 * r * r * 256 + 50 * r**3 + 2 * 128 * r * r + 2 * 128 * 128 * r
    assert factored_is_cheaper(128, 128, 4, 5)  # a 160 ms streaming chunk of the small preset
    assert factored_is_cheaper(128, 128, 64, 5)  # the small preset's training chunk
    assert not factored_is_cheaper(128, 128, 128, 5)  # a chunk as long as the head: dense
    assert not factored_is_cheaper(256, 256, 512, 5)  # large chunks (base / large presets): dense
    assert not factored_is_cheaper(128, 128, 4, 0)  # no Muon, nothing to orthogonalise


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("padded", [False, True])
def test_op_factored_path_equals_dense_path(order, padded, monkeypatch):
    """Force each path in turn: the op's outputs, state and input gradients agree in float64."""
    x = make_inputs(B=2, T=40, H=2, D=12, Dh=16, seed=3, requires_grad=True)
    mask = padding_mask(2, 40, [40, 13]) if padded else None

    def run(force: bool):
        monkeypatch.setattr(chunk_module, "factored_is_cheaper", lambda *a: force)
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
        o, s = lact_swiglu(x["q"], x["k"], x["v"], x["lr"], state, chunk_size=6, order=order, mask=mask)
        grads = torch.autograd.grad((o.square().sum() + s.w1.sum()), [x["q"], x["k"], x["v"], x["lr"], x["w0"]])
        return o, s, grads

    o_f, s_f, g_f = run(True)
    o_d, s_d, g_d = run(False)
    torch.testing.assert_close(o_f, o_d, rtol=1e-9, atol=1e-10)
    for name in ("w0", "w1", "w2"):
        torch.testing.assert_close(getattr(s_f, name), getattr(s_d, name), rtol=1e-9, atol=1e-10)
    for a, b in zip(g_f, g_d):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def test_op_takes_the_factored_path_only_without_momentum(monkeypatch):
    calls = []
    real = chunk_module.newton_schulz_factored
    monkeypatch.setattr(chunk_module, "newton_schulz_factored", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = make_inputs(B=1, T=8, H=2, D=32, Dh=32)
    lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=4, order="update_apply")
    assert len(calls) == 2  # two chunks of 4 tokens, rank 4 next to 32 x 32 matrices
    lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=4, order="update_apply", momentum=x["momentum"])
    assert len(calls) == 2  # momentum accumulates a full-rank buffer: dense Newton-Schulz


def test_factored_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    left = torch.randn(2, 5, 2, generator=g, dtype=torch.float64, requires_grad=True)
    right = torch.randn(2, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    base = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: newton_schulz_factored(a, b, 3, add_to=c), (left, right, base))
