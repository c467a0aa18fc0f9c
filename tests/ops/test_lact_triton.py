"""The Triton backend of the LaCT op against the PyTorch steps and the reference, forward and every gradient.

Without CUDA the kernels run in Triton's numpy interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), in float64 where the kernels allow it, so tolerances stay tight; with CUDA
the same tests run compiled kernels in float32 and bf16. Shapes are tiny: the interpreter runs one
program at a time.
"""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_lact_audio.kernels import ORDERS, FastWeightState, lact_swiglu, lact_swiglu_reference
from modeling_lact_audio.kernels import chunk as torch_steps
from tests.lact_op_utils import make_inputs, padding_mask

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# float64 kernels in the interpreter; on CUDA the op's tests run in float32 (TF32 off: see below)
OP_DTYPE = torch.float64 if DEVICE == "cpu" else torch.float32
OP_TOL = {torch.float64: 1e-9, torch.float32: 2e-4}
# With Newton-Schulz (muon > 0) gradients amplify float32 rounding: the torch backend's own float32 gradients
# differ from its float64 ones by more than OP_TOL (test_float32_with_muon_needs_the_looser_tolerance measures
# it), so two float32 implementations are compared at MUON_TOL; the interpreter runs these cases in float64.
MUON_TOL = {torch.float64: 1e-9, torch.float32: 5e-3}
NAMES = ("q", "k", "v", "lr", "momentum", "w0", "w1", "w2")
# the interpreter's numpy scalar conversions
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


@pytest.fixture(autouse=True)
def _exact_float32():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


def _triton():
    from modeling_lact_audio.kernels import triton as triton_steps

    return triton_steps


def _inputs(dtype=OP_DTYPE, **kw):
    x = make_inputs(dtype=dtype, **kw)
    x = {n: t.to(DEVICE).requires_grad_(True) for n, t in x.items() if n != "state"}
    return x


def _run(x, backend, fn=lact_swiglu, use_mom=True, state=None, sl=slice(None), mask=None, **kw):
    state = state or FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])
    extra = {} if fn is lact_swiglu_reference else {"backend": backend}
    return fn(
        x["q"][:, sl],
        x["k"][:, sl],
        x["v"][:, sl],
        x["lr"][:, sl],
        state,
        momentum=x["momentum"][:, sl] if use_mom else None,
        mask=None if mask is None else mask[:, sl],
        **extra,
        **kw,
    )


def _loss(o, s):
    # reaches every input through the outputs and through the final state (momentum included)
    loss = o.float().square().sum() + s.w0.sin().sum() + s.w1.square().sum() + s.w2.sum()
    return loss if s.m0 is None else loss + s.m1.cos().sum()


def _outputs_and_grads(x, backend, fn=lact_swiglu, **kw):
    o, s = _run(x, backend, fn, **kw)
    inputs = [x[n] for n in NAMES]
    grads = torch.autograd.grad(_loss(o, s), inputs, allow_unused=True)
    return o, s, dict(zip(NAMES, grads))


def _assert_same(a, b, tol, with_grads=True):
    """Outputs, final states and (``with_grads``) gradients of two runs agree, compared in float64."""
    (o_a, s_a, g_a), (o_b, s_b, g_b) = a, b
    close = lambda x, y, msg: torch.testing.assert_close(x.double(), y.double(), rtol=tol, atol=tol, msg=msg)
    close(o_a, o_b, "o")
    for name in ("w0", "w1", "w2", "m0", "m1", "m2"):
        ta, tb = getattr(s_a, name), getattr(s_b, name)
        assert (ta is None) == (tb is None), name
        if ta is not None:
            close(ta, tb, name)
    if with_grads:
        for name in NAMES:
            assert (g_a[name] is None) == (g_b[name] is None), name
            if g_a[name] is not None:
                close(g_a[name], g_b[name], f"d{name}")


# ---- each kernel against its PyTorch step ----

KERNEL_SHAPES = [(3, 7, 6, 10), (2, 70, 20, 33), (1, 5, 300, 70)]  # (BH, n, D, Dh): one tile; several; wide D


def _step_inputs(BH, n, D, Dh, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(DEVICE)
    t = {name: rnd(BH, n + 3, D)[:, 2 : 2 + n] for name in ("q", "k", "v")}  # strided views, as in the op
    t["lr"] = rnd(BH, n, 3).abs() * 0.5
    t["W02"] = rnd(BH, 2 * Dh, D) / D**0.5
    t["W1t"] = rnd(BH, D, Dh).mT / D**0.5  # transposed strides
    t["norm02"] = rnd(BH, 2 * Dh, 1).abs() + 0.5
    t["norm1t"] = rnd(BH, 1, D).abs() + 0.5
    return {name: v.requires_grad_(True) for name, v in t.items()}


def _step_tol(dtype):
    return 1e-12 if dtype == torch.float64 else 2e-5


STEPS = {
    "read": (("W02", "W1t", "q"), "read_chunk", torch_steps.read_chunk),
    "gradient": (("W02", "W1t", "k", "v", "lr"), "chunk_gradient", torch_steps.chunk_gradient),
    "renormalise": (("W02", "W1t", "norm02", "norm1t"), "renormalise", torch_steps._renormalise),
}


@pytest.mark.parametrize("dtype", sorted({OP_DTYPE, torch.float32}, key=str))
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("step", list(STEPS))
def test_kernel_equals_its_torch_step_with_gradients(step, shape, dtype):
    names, triton_name, torch_fn = STEPS[step]
    t = _step_inputs(*shape, dtype)
    args = [t[n] for n in names]
    got, want = getattr(_triton(), triton_name)(*args), torch_fn(*args)
    if step == "read":
        got, want = (got,), (want,)
    tol = _step_tol(dtype)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    weights = [torch.randn_like(b) for b in want]  # a random cotangent for every output
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), args) for out in (got, want)]
    for name, a, b in zip(names, *grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=f"d{name}")


# ---- the op: every order and option, outputs, states and all gradients ----


@pytest.mark.parametrize("order,muon,wn,use_mom", list(itertools.product(ORDERS, [0, 5], [False, True], [False, True])))
def test_triton_backend_equals_torch_backend_and_reference(order, muon, wn, use_mom):
    x = _inputs(B=2, T=23, H=2, D=6, Dh=10, seed=3)
    mask = padding_mask(2, 23, [23, 9]).to(DEVICE)
    kw = dict(chunk_size=8, order=order, muon_steps=muon, weight_norm=wn, use_mom=use_mom, mask=mask)
    got = _outputs_and_grads(x, "triton", **kw)
    tol = (MUON_TOL if muon else OP_TOL)[OP_DTYPE]
    _assert_same(got, _outputs_and_grads(x, "torch", **kw), tol)
    o_ref, s_ref = _run(x, None, lact_swiglu_reference, **kw)
    _assert_same(got, (o_ref, s_ref, None), tol, with_grads=False)


@pytest.mark.parametrize("order", ORDERS)
def test_odd_sizes_equal_the_reference_with_gradients(order):
    """D, Dh not powers of two and wider than one tile, T not a multiple of the chunk, no mask."""
    x = _inputs(B=1, T=37, H=2, D=20, Dh=70, seed=4)
    kw = dict(chunk_size=16, order=order, muon_steps=5, weight_norm=True)
    _assert_same(
        _outputs_and_grads(x, "triton", **kw),
        _outputs_and_grads(x, None, lact_swiglu_reference, **kw),
        MUON_TOL[OP_DTYPE],
    )


@pytest.mark.parametrize("order", ORDERS)
def test_float32_kernels_equal_the_float64_op(order):
    x = _inputs(dtype=torch.float64, B=2, T=21, H=2, D=6, Dh=10, seed=5)
    x32 = {n: t.detach().float().requires_grad_(True) for n, t in x.items()}
    mask = padding_mask(2, 21, [21, 12]).to(DEVICE)
    kw = dict(chunk_size=8, order=order, muon_steps=5, mask=mask)
    _assert_same(_outputs_and_grads(x32, "triton", **kw), _outputs_and_grads(x, "torch", **kw), MUON_TOL[torch.float32])


def test_float32_with_muon_needs_the_looser_tolerance():
    """MUON_TOL's reason, measured: the torch backend's own float32 gradients (muon 5, the shapes above) already
    differ from its float64 ones by more than OP_TOL allows, and by less than MUON_TOL."""
    x64 = {
        n: t.detach().cpu().requires_grad_(True)
        for n, t in _inputs(dtype=torch.float64, B=2, T=23, H=2, D=6, Dh=10, seed=3).items()
    }
    x32 = {n: t.detach().float().requires_grad_(True) for n, t in x64.items()}
    mask = padding_mask(2, 23, [23, 9])
    worst = 0.0
    for order in ORDERS:
        kw = dict(chunk_size=8, order=order, muon_steps=5, weight_norm=True, use_mom=False, mask=mask)
        g64, g32 = (_outputs_and_grads(x, "torch", **kw)[2] for x in (x64, x32))
        for name in g64:
            if g64[name] is not None:
                worst = max(worst, ((g32[name].double() - g64[name]).abs() / (1 + g64[name].abs())).max().item())
    assert OP_TOL[torch.float32] < worst < MUON_TOL[torch.float32]


# ---- streams: several calls carrying the state equal one call ----


@pytest.mark.parametrize("use_mom", [False, True])
def test_apply_update_stream_split_at_odd_places_equals_one_call(use_mom):
    x = _inputs(B=2, T=30, H=2, D=6, Dh=10, seed=6)
    mask = padding_mask(2, 30, [30, 19]).to(DEVICE)
    kw = dict(chunk_size=8, order="apply_update", use_mom=use_mom, mask=mask)
    o_full, s_full = _run(x, "torch", **kw)
    state, outs = None, []
    for a, b in zip([0, 1, 6, 17], [1, 6, 17, 30]):
        o, state = _run(x, "triton", state=state, sl=slice(a, b), **kw)
        outs.append(o)
    tol = OP_TOL[OP_DTYPE]
    torch.testing.assert_close(torch.cat(outs, 1), o_full, rtol=tol, atol=tol)
    for name in ("w0", "w1", "w2") + (("m0", "m1", "m2") if use_mom else ()):
        torch.testing.assert_close(getattr(state, name), getattr(s_full, name), rtol=tol, atol=tol, msg=name)
    assert state.seen == 30 and state.pending.length == 30 % 8


def test_update_apply_stream_split_at_chunk_multiples_equals_one_call():
    x = _inputs(B=1, T=27, H=2, D=6, Dh=10, seed=7)
    kw = dict(chunk_size=8, order="update_apply")
    o_full, s_full = _run(x, "torch", **kw)
    o1, s1 = _run(x, "triton", sl=slice(0, 16), **kw)
    o2, s2 = _run(x, "triton", state=s1, sl=slice(16, 27), **kw)
    tol = OP_TOL[OP_DTYPE]
    torch.testing.assert_close(torch.cat([o1, o2], 1), o_full, rtol=tol, atol=tol)
    torch.testing.assert_close(s2.w1, s_full.w1, rtol=tol, atol=tol)


# ---- bf16 autocast: the state stays float32 ----


@pytest.mark.parametrize("order,muon", [(order, 0) for order in ORDERS] + [("update_apply", 5)])
def test_autocast_bf16_is_as_close_to_float32_as_the_torch_backend(order, muon):
    """Under bf16 autocast the outputs come in bf16, the state and the gradients in the inputs' float32, and
    without Muon the Triton backend is as close to the float32 op as the PyTorch backend under autocast. (Muon
    in bf16 moves both by tens of percent at these sizes: only dtypes and finiteness are checked then.)"""
    x = _inputs(dtype=torch.float32, B=2, T=21, H=2, D=20, Dh=20, seed=8)
    mask = padding_mask(2, 21, [21, 12]).to(DEVICE)
    kw = dict(chunk_size=8, order=order, mask=mask, muon_steps=muon)

    def run(backend, autocast):
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
            o, s = _run(x, backend, **kw)
        grads = torch.autograd.grad(_loss(o, s), [x[n] for n in NAMES])
        return [t.detach() for t in (o, s.w0, s.m1, *grads)]

    exact = run("torch", False)
    errors = {}
    for backend in ("triton", "torch"):
        got = run(backend, True)
        assert got[0].dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in got[1:])
        assert all(bool(torch.isfinite(t).all()) for t in got)
        errors[backend] = [float((a.float() - b).norm() / b.norm()) for a, b in zip(got, exact)]
    if muon == 0:
        for name, mine, theirs in zip(("o", "w0", "m1", *NAMES), errors["triton"], errors["torch"]):
            assert mine <= 2 * theirs + 2e-3 and mine < 0.02, (name, mine, theirs)


@pytest.mark.skipif(DEVICE != "cuda", reason="bf16 tl.dot runs on CUDA only (the interpreter computes in float32)")
def test_bf16_read_kernel_matches_float32():
    t = _step_inputs(4, 300, 128, 128, torch.float32)
    q = t["q"].detach().bfloat16()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        o = _triton().read_chunk(t["W02"], t["W1t"], q)
    want = torch_steps.read_chunk(t["W02"].detach(), t["W1t"].detach(), q.float())
    assert o.dtype == torch.bfloat16
    assert (o.float() - want).norm() <= 1e-2 * want.norm()


# ---- choosing a backend, and the messages ----


def _tiny_call(backend):
    x = make_inputs(B=1, T=5, H=1, D=4, Dh=4)
    return lact_swiglu(x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=4, backend=backend)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'triton'\), got 'cuda'"):
        _tiny_call("cuda")


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="runs on CUDA tensors, got tensors on cpu.*TRITON_INTERPRET=1"):
        _tiny_call("triton")
    o, _ = _tiny_call("auto")  # auto: PyTorch on the CPU
    torch.testing.assert_close(o, _tiny_call("torch")[0], rtol=0, atol=0)


def test_auto_picks_triton_for_cuda_inputs_in_eager_mode_only():
    """Dispatch only (no CUDA tensor is made): the kernels for CUDA, PyTorch on the CPU and while compiling."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert torch_steps.backend_steps("auto", cuda).read is _triton().read_chunk
    assert torch_steps.backend_steps("auto", cpu) is torch_steps.TORCH_STEPS
    assert torch_steps.backend_steps("torch", cuda) is torch_steps.TORCH_STEPS

    @torch.compile(backend="eager", fullgraph=True)
    def picks_torch(x):
        return x + (torch_steps.backend_steps("auto", cuda) is torch_steps.TORCH_STEPS)

    assert picks_torch(torch.zeros(1)).item() == 1


WITHOUT_TRITON = """
import importlib.abc, sys, torch

class NoTriton(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.modules.pop("triton", None)
sys.meta_path.insert(0, NoTriton())
from modeling_lact_audio import lact_kernels as bundle
from modeling_lact_audio.kernels import chunk
for module in (chunk, bundle):
    assert module.backend_steps("auto", torch.device("cuda")) is module.TORCH_STEPS
    try:
        module.backend_steps("triton", torch.device("cuda"))
        raise SystemExit("no error")
    except ImportError as error:
        print("ERROR", error)
print("LOADED", [m for m in sys.modules if m.endswith("kernels.triton")])
"""


def test_without_triton_auto_falls_back_and_triton_says_how_to_install():
    """Where triton or the kernels are missing (an exported folder's flat ``lact_kernels.py`` has no Triton
    subpackage): "auto" runs PyTorch, "triton" raises an ImportError saying what to do."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and all("pip install -e .[kernels]" in e and "backend='torch'" in e for e in errors)
    assert "LOADED []" in out.stdout
