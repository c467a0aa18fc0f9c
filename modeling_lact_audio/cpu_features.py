"""What this CPU computes fast: bf16 is native only with AVX512-BF16 or AMX.

Machines of the same kind differ: one measured a 2048^3 bf16 matmul at 840 GFLOP/s (AVX-512 with
bf16), another at under 1 GFLOP/s (AVX2 only, where PyTorch emulates bf16), against 130-210 GFLOP/s
in fp32 on both. Training, inference and the benchmarks ask here before using bf16 on a CPU.
"""

import functools
import warnings

import torch

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_INT8_FLAGS = ("avx512_vnni", "amx_int8")  # int8 x int8 products in hardware (torch._int_mm's fast CPU path)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux: the torch probes below decide alone
    return frozenset()


def cpu_capability() -> str:
    """PyTorch's dispatch level for this CPU (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ...)."""
    return torch.backends.cpu.get_cpu_capability()


def _cpu_has(torch_probes: tuple, flags: tuple) -> bool:
    """True when one of PyTorch's ``torch.cpu._is_*_supported`` probes (those this version has) or one of the
    ``/proc/cpuinfo`` ``flags`` says so."""
    probes = [getattr(torch.cpu, name, None) for name in torch_probes]
    return any(probe is not None and probe() for probe in probes) or any(flag in cpu_flags() for flag in flags)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when bf16 matmuls run in hardware (AVX512-BF16 or AMX-BF16), False when they are emulated."""
    return _cpu_has(("_is_avx512_bf16_supported", "_is_amx_tile_supported"), _BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_int8() -> bool:
    """True when int8 x int8 matmuls run in hardware dot products (AVX512-VNNI or AMX-INT8), which torchao's
    dynamic int8 path (``torch._int_mm``) needs to be faster than fp32 on the CPU."""
    return _cpu_has(("_is_vnni_supported", "_is_amx_tile_supported"), _INT8_FLAGS)


def describe_cpu() -> dict:
    """A record for reports: ``{"capability", "native_bf16", "bf16_flags", "fast_int8", "int8_flags"}``
    (``fast_int8``: ``cpu_has_fast_int8``; ``int8_flags``: the CPU's AVX512-VNNI / AMX-INT8 flags)."""
    return {
        "capability": cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "bf16_flags": sorted(flag for flag in _BF16_FLAGS if flag in cpu_flags()),
        "fast_int8": cpu_has_fast_int8(),
        "int8_flags": sorted(flag for flag in _INT8_FLAGS if flag in cpu_flags()),
    }


def resolve_mixed_precision(requested: str, device) -> str:
    """The mixed-precision mode to use: ``requested`` unless it is bf16 on a CPU without native bf16.

    Args:
        requested: ``"no"``, ``"fp16"`` or ``"bf16"`` (Accelerate's names).
        device: the ``torch.device`` (or its string) the work runs on.

    Returns:
        ``requested``, or ``"no"`` (fp32) with one warning when bf16 would be emulated on this CPU.
    """
    if requested == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            f"mixed_precision='bf16' asked for on a CPU without native bf16 (capability {cpu_capability()}; "
            "no avx512_bf16/amx_bf16): bf16 would be emulated and orders of magnitude slower, so this runs in fp32",
            stacklevel=2,
        )
        return "no"
    return requested
