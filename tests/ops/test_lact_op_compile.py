"""The op without host syncs: value checks only under ``check_values()``, one graph under ``torch.compile``."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from modeling_lact_audio.kernels import ORDERS, FastWeightState, check_values, lact_swiglu
from modeling_lact_audio.kernels.chunk import cpu_cache_bytes_per_core
from tests.lact_op_utils import make_inputs, padding_mask

# Ways Python reads a tensor's values on the host. `tolist` reads memory without an aten op, so the
# torch-function layer is watched as well as the dispatcher's `_local_scalar_dense`.
HOST_READS = {"tolist", "item", "numpy", "__bool__", "__float__", "__int__", "__index__"}


class HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class ScalarReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def _op(x, order="apply_update", mask=None, **kw):
    return lact_swiglu(
        x["q"], x["k"], x["v"], x["lr"], x["state"], chunk_size=8, order=order, momentum=x["momentum"], mask=mask, **kw
    )


def _host_reads(fn):
    with HostReads() as python_reads, ScalarReads() as scalar_reads:
        fn()
    return python_reads.calls + scalar_reads.calls


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_no_host_sync_unless_value_checks_are_on(order, requires_grad):
    x = make_inputs(B=2, T=30, H=2, D=6, Dh=10, dtype=torch.float32, requires_grad=requires_grad)
    mask = padding_mask(2, 30, [30, 21])

    def run():
        state = FastWeightState.from_weights(x["w0"], x["w1"], x["w2"])  # a fresh graph for each backward
        o, s = _op(dict(x, state=state), order, mask, muon_steps=2)
        if requires_grad:
            (o.square().sum() + s.w0.sum()).backward()

    with check_values(False):
        assert _host_reads(run) == []
    with check_values():
        assert _host_reads(run)  # the checks do read values when asked to


def test_compiles_to_one_graph_without_value_checks():
    x = make_inputs(B=2, T=30, H=2, D=6, Dh=10, dtype=torch.float32)
    mask = padding_mask(2, 30, [30, 21])
    fn = lambda q, k, v, lr, momentum: lact_swiglu(  # noqa: E731
        q, k, v, lr, x["state"], chunk_size=8, momentum=momentum, mask=mask, muon_steps=2
    )
    args = (x["q"], x["k"], x["v"], x["lr"], x["momentum"])
    with check_values(False), torch.no_grad():
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
        assert explained.graph_break_count == 0, explained.break_reasons
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        o, s = compiled(*args)
        o_eager, s_eager = fn(*args)
    torch.testing.assert_close(o, o_eager)
    torch.testing.assert_close(s.w1, s_eager.w1)
    with check_values(), torch.no_grad():
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
    assert explained.graph_break_count > 0  # the value checks are what breaks the graph
    torch._dynamo.reset()


def test_cache_size_is_read_from_sysfs(tmp_path):
    levels = [("Data", "32K", "0"), ("Instruction", "32K", "0"), ("Unified", "512K", "0"), ("Unified", "32768K", "0-7")]
    for i, (kind, size, cpus) in enumerate(levels):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "type").write_text(kind + "\n")
        (index / "size").write_text(size + "\n")
        (index / "shared_cpu_list").write_text(cpus + "\n")
    assert cpu_cache_bytes_per_core(tmp_path) == 32768 * 1024 // 8  # L3 shared by 8 cores: 4 MiB each
    assert cpu_cache_bytes_per_core(tmp_path / "missing") == 1 << 20
