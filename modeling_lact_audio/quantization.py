"""Quantised and half-precision inference of lact-audio models, with the fast weights kept in fp32.

INT8 post-training quantisation of the ``nn.Linear`` layers through torchao (the maintained successor of
``torch.ao.quantization``, which torch 2.11 deprecates):

- ``"int8_dynamic"``: ``Int8DynamicActivationInt8WeightConfig``: weights int8 per output channel (symmetric),
  activations quantised to int8 per token at run time, int8 x int8 products accumulated in int32, fp32 out.
- ``"int8_weight_only"``: ``Int8WeightOnlyConfig``: weights int8 per output channel; activations and the
  matmul stay fp32 (the weight is dequantised in the call): 4x smaller weights, no faster arithmetic.

and, for CPUs without AVX512-VNNI/AMX, where torchao's int8 products are slow:

- ``"int8_dynamic_fbgemm"``: every converted layer becomes an ``int8_linear.Int8DynamicLinear``: weights int8
  per output channel (as torchao's), activations quantised to 7 bits at run time per block of 64 frames of
  similar magnitude, FBGEMM's op ``quantized::linear_dynamic`` (AVX2) for the product. CPU only. Saved as plain tensors
  (``quantization_config.quant_method = "lact_int8_fbgemm"``); ``from_pretrained`` and the Auto classes load
  such a folder through ``load_quantized``.

What is never quantised, and why (``eval/quantization_eval.py`` measures it):

- the fast weights: a mixer's initial weights ``w0, w1, w2`` are parameters, not linear layers, and the LaCT
  op builds its ``FastWeightState`` from them in fp32 and computes every update (gradient, Newton-Schulz,
  row renormalisation) in fp32, whatever the linear layers around it run in;
- ``FAST_WEIGHT_LAYERS`` (skipped by default): ``lr_proj`` sets each token's learning rates and
  ``momentum_proj`` the momentum of the update, so they are part of the update; together they hold under 1%
  of a block's weights;
- norms, convolutions, embeddings (torchao's linear configs touch only ``nn.Linear``).

On a CPU, torchao 0.18 runs ``int8_dynamic`` in eager mode through ``torch._int_mm``, which has a fast kernel
only with AVX512-VNNI or AMX: on an AVX2-only CPU it is much slower than fp32 (14x on the Whisper recogniser,
``eval/results/quantization_avx2``), with AVX512-VNNI faster (0.69x, ``eval/results/quantization``).
``exact_emulated_int_mm`` computes the same products bit for bit with float matmuls, so that accuracy can be
evaluated quickly there; latency is always measured without it.

``"auto"`` picks the mode that is faster than fp32 where the model is (``recommended_int8_mode``):
``"int8_dynamic"`` on CUDA and on CPUs with AVX512-VNNI or AMX, ``"int8_dynamic_fbgemm"`` on other CPUs; asking
for ``"int8_dynamic"`` on a CPU without them warns.

A quantised model saves as safetensors through transformers' torchao quantizer (``save_quantized``: the
tensor subclasses flattened into plain tensors, ``quantization_config`` in ``config.json``) and loads with
``load_quantized``; the loaded model runs in ``pipeline("automatic-speech-recognition", model=...)``.

bf16/fp16 inference (``to_half_precision``): the linear layers, attention and activations in half precision,
the fast weights and the op in fp32. Only where the arithmetic is native: a GPU, or a CPU with AVX512-BF16/AMX
for bf16 (``cpu_features``); fp16 never on a CPU.
"""

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from scipy.stats import bootstrap
from torch import nn
from transformers import AutoConfig, TorchAoConfig

from . import mixer_lact_audio
from .cpu_features import cpu_capability, cpu_has_fast_int8, cpu_has_native_bf16
from .int8_linear import ROW_BLOCK, SORT_ROWS, Int8DynamicLinear
from .lact_ops import FastWeightState
from .mixer_lact_audio import LaCTAudioMixer
from .modeling_lact_audio import (
    INT8_FBGEMM_QUANT_METHOD,
    LaCTAudioForCausalLM,
    LaCTAudioForCTC,
    LaCTAudioPreTrainedModel,
    check_finite_weights,
    verify_weights_checksums,
    warn_if_folder_code_differs,
)

TORCHAO_MODES = ("int8_dynamic", "int8_weight_only")
FBGEMM_MODE = "int8_dynamic_fbgemm"
FBGEMM_QUANT_METHOD = INT8_FBGEMM_QUANT_METHOD
MODES = (*TORCHAO_MODES, FBGEMM_MODE)
AUTO_MODE = "auto"  # quantize_model: the INT8 mode recommended_int8_mode gives for the model's device
HALF_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}
FAST_WEIGHT_LAYERS = ("lr_proj", "momentum_proj")
FAST_WEIGHTS = ("w0", "w1", "w2")
# Formats a fast-weight state can be stored in between chunk updates (``rounded_fast_weights``).
STATE_FORMATS = ("fp32", "bf16", "fp16", "int8")
_MODEL_CLASSES = {cls.__name__: cls for cls in (LaCTAudioForCTC, LaCTAudioForCausalLM)}


def _check_mode(mode: str, allow_auto: bool = False) -> None:
    choices = (*MODES, AUTO_MODE) if allow_auto else MODES
    if mode not in choices:
        raise ValueError(
            f"unknown quantisation mode {mode!r}: choose one of {choices} (bf16/fp16 inference: to_half_precision)"
        )


def recommended_int8_mode(device="cpu") -> str:
    """The dynamic INT8 mode that runs faster than fp32 on ``device`` (a ``torch.device`` or its string).

    Returns ``"int8_dynamic"`` (torchao: int8 x int8 products) on CUDA and on CPUs with AVX512-VNNI or AMX-INT8,
    and ``"int8_dynamic_fbgemm"`` on other CPUs, where ``torch._int_mm`` has no fast kernel (measured 14x
    slower than fp32 on an AVX2 CPU) and FBGEMM's AVX2 kernel does the products.
    """
    if torch.device(device).type == "cpu" and not cpu_has_fast_int8():
        return FBGEMM_MODE
    return "int8_dynamic"


def _skipped(fqn: str, skip) -> bool:
    """``fqn`` is, or lies under, a module named by an entry of ``skip`` (a name or a dotted path)."""
    return any(f".{name}." in f".{fqn}." for name in skip)


def torchao_config(mode: str, skip=FAST_WEIGHT_LAYERS) -> TorchAoConfig:
    """transformers' ``TorchAoConfig`` of ``mode`` (what ``config.json`` records), ``skip`` left in fp32.

    Raises:
        ValueError: an unknown ``mode``.
    """
    _check_mode(mode)
    if mode not in TORCHAO_MODES:
        raise ValueError(f"{mode!r} is not a torchao mode ({TORCHAO_MODES}): it has no TorchAoConfig")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    quant_type = Int8DynamicActivationInt8WeightConfig() if mode == "int8_dynamic" else Int8WeightOnlyConfig()
    return TorchAoConfig(quant_type=quant_type, modules_to_not_convert=list(skip))


def quantizable_linears(model: nn.Module, skip=FAST_WEIGHT_LAYERS) -> list[str]:
    """Qualified names of the ``nn.Linear`` layers ``quantize_model`` converts (those not under ``skip``)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _skipped(n, skip)]


def quantization_mode(model: nn.Module) -> str | None:
    """The mode (``MODES``) of a model ``quantize_model`` or ``load_quantized`` made, None for a model that is not
    quantised."""
    if any(isinstance(m, Int8DynamicLinear) for m in model.modules()):
        return FBGEMM_MODE
    try:
        from torchao.quantization import Int8Tensor
    except ModuleNotFoundError:
        return None

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and isinstance(weight, Int8Tensor):
            return "int8_dynamic" if weight.act_quant_kwargs is not None else "int8_weight_only"
    return None


def quantize_model(model: LaCTAudioPreTrainedModel, mode: str = "int8_dynamic", skip=FAST_WEIGHT_LAYERS):
    """Quantise ``model``'s linear layers in place (torchao) and return it, ready for ``save_quantized``.

    Args:
        model: an fp32 lact-audio model (``LaCTAudioForCTC``, ``LaCTAudioForCausalLM``) on the CPU or a GPU.
        mode: one of ``MODES`` (see the module docstring) or ``"auto"`` (``recommended_int8_mode`` for the
            device of the model's linear layers). ``"int8_dynamic"`` on a CPU without AVX512-VNNI/AMX warns.
        skip: module names (or dotted paths, e.g. ``"model.frontend.encoder"``) whose linear layers stay fp32;
            by default the layers that set the fast-weight update (``FAST_WEIGHT_LAYERS``).

    Every linear layer's ``weight [out, in]`` becomes a torchao ``Int8Tensor`` (``qdata`` int8 ``[out, in]``,
    ``scale`` fp32 ``[out]``), or, in ``"int8_dynamic_fbgemm"``, the layer becomes an ``Int8DynamicLinear``
    (``weight_int8`` int8 ``[out, in]``, ``weight_scale`` fp32 ``[out]``); biases, the fast weights
    ``w0, w1, w2`` (``[H, Dh, D]``, ``[H, D, Dh]``) and every other parameter keep their fp32 values. Inputs and
    outputs keep their shapes and dtypes.

    Raises:
        ValueError: an unknown mode, a model already quantised, a model that is not fp32, one on the meta
            device or on a device other than the CPU and CUDA (``"int8_dynamic_fbgemm"``: the CPU only), or one
            with no linear layer to quantise.
    """
    _check_mode(mode, allow_auto=True)
    if quantization_mode(model) is not None or getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(f"the model is already quantised ({quantization_mode(model)}): quantise an fp32 model")
    names = quantizable_linears(model, skip)
    if not names:
        raise ValueError(f"the model has no nn.Linear layer outside skip={list(skip)}: nothing to quantise")
    modules = dict(model.named_modules())
    devices = {modules[n].weight.device.type for n in names}
    dtypes = {modules[n].weight.dtype for n in names}
    if "meta" in devices:
        raise ValueError("the model is on the meta device: load or initialise its weights before quantising")
    if not devices <= {"cpu", "cuda"}:
        raise ValueError(f"int8 quantisation runs on the CPU and on CUDA; the model is on {sorted(devices)}")
    if dtypes != {torch.float32}:
        raise ValueError(
            f"quantise an fp32 model (its linear weights are {sorted(map(str, dtypes))}); int8 replaces "
            "half precision, it does not stack on it"
        )
    if mode == AUTO_MODE:
        mode = recommended_int8_mode("cuda" if "cuda" in devices else "cpu")
    elif mode == "int8_dynamic" and "cpu" in devices and not cpu_has_fast_int8():
        warnings.warn(
            f"int8_dynamic on a CPU without AVX512-VNNI or AMX (capability {cpu_capability()}): torchao's int8 "
            f"products have no fast kernel here and run many times slower than fp32; use {FBGEMM_MODE!r} (or "
            f"{AUTO_MODE!r}) for speed on this CPU",
            stacklevel=2,
        )
    if mode == FBGEMM_MODE:
        return _quantize_fbgemm(model, names, devices, skip)
    from torchao.quantization import quantize_
    from transformers.quantizers.quantizer_torchao import TorchAoHfQuantizer

    config = torchao_config(mode, skip)
    quantize_(
        model,
        config.get_apply_tensor_subclass(),
        filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and not _skipped(fqn, skip),
    )
    # What from_pretrained(quantization_config=...) would attach: save_pretrained then flattens the torchao
    # tensors into safetensors and writes quantization_config into config.json.
    quantizer = TorchAoHfQuantizer(config, pre_quantized=True)
    model.hf_quantizer = quantizer
    model.quantization_method = config.quant_method
    quantizer.postprocess_model(model)
    return model


def _replace_linears(model: nn.Module, names, row_block: int, sort_rows: bool) -> None:
    """Swap each ``nn.Linear`` named in ``names`` for its ``Int8DynamicLinear``."""
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        linear = getattr(owner, child)
        setattr(owner, child, Int8DynamicLinear.from_linear(linear, row_block=row_block, sort_rows=sort_rows))


def _quantize_fbgemm(model, names: list[str], devices: set, skip):
    if devices != {"cpu"}:
        raise ValueError(
            f"{FBGEMM_MODE} runs on the CPU only (FBGEMM); the model is on {sorted(devices)}: move it to the CPU, "
            "or use 'int8_dynamic' (torchao) on a GPU"
        )
    _replace_linears(model, names, ROW_BLOCK, SORT_ROWS)
    model.config.quantization_config = {
        "quant_method": FBGEMM_QUANT_METHOD,
        "mode": FBGEMM_MODE,
        "row_block": ROW_BLOCK,
        "sort_rows": SORT_ROWS,
        "modules": names,
        "modules_to_not_convert": list(skip),
    }
    model.requires_grad_(False)
    return model


def fast_weight_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """``{"model.layers.i.mixer.w0": dtype, ...}``: the dtype of every LaCT mixer's initial fast weights."""
    return {
        f"{name}.{w}": getattr(module, w).dtype
        for name, module in model.named_modules()
        if isinstance(module, LaCTAudioMixer) and module.use_lact
        for w in FAST_WEIGHTS
    }


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: a torchao tensor counts its inner tensors (int8 data, scales)."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, n)) for n in names)
    return tensor.numel() * tensor.element_size()


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (each shared tensor once), quantised ones at their int8 size."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor_bytes(tensor)
    return total


def save_quantized(model: LaCTAudioPreTrainedModel, folder, processor=None) -> Path:
    """Write a quantised model (and its processor) to ``folder``: ``model.safetensors`` with the int8 data and
    scales as plain tensors plus torchao's metadata, ``config.json`` with ``quantization_config``.

    Raises:
        ValueError: ``model`` is not quantised (an fp32 model saves with ``save_pretrained``).
    """
    mode = quantization_mode(model)
    if mode is None or (mode in TORCHAO_MODES and getattr(model, "hf_quantizer", None) is None):
        raise ValueError("the model is not quantised: call quantize_model first (fp32 models: save_pretrained)")
    folder = Path(folder)
    if mode == FBGEMM_MODE:  # plain tensors: transformers' own writer, no quantizer involved
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
        return folder
    # save_original_format=False: a model loaded pre-quantised has no reverse of its load conversion, and the
    # quantizer already wrote the state dict in the on-disk layout.
    model.save_pretrained(folder, save_original_format=False)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


def _values(tensor: torch.Tensor) -> torch.Tensor:
    """A torchao tensor's dequantised values; a plain tensor itself (``Tensor.dequantize`` would alias it)."""
    return tensor if type(tensor) in (torch.Tensor, nn.Parameter) else tensor.dequantize()


def load_quantized(folder, device: str = "cpu") -> LaCTAudioPreTrainedModel:
    """Load a folder ``save_quantized`` wrote: the quantised model, in eval mode on ``device``.

    The same checks as ``LaCTAudioPreTrainedModel.from_pretrained`` (export checksums, code copies, finite
    weights), the finiteness checked on the dequantised values (torchao's int8 tensors have no ``isfinite``).
    An ``"int8_dynamic_fbgemm"`` folder is rebuilt with ``Int8DynamicLinear`` layers and loads on the CPU only.

    Raises:
        FileNotFoundError: no ``config.json`` (or, FBGEMM, no ``model.safetensors``) in ``folder``.
        ValueError: the folder holds no quantised lact-audio model, weights that do not fit its config, corrupt
            or non-finite weights, or an FBGEMM model asked for on a device other than the CPU.
    """
    folder = str(folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"no config.json in {folder!r}: not a saved model folder")
    config = AutoConfig.from_pretrained(folder)
    quant = getattr(config, "quantization_config", None) or {}
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    if quant.get("quant_method") not in ("torchao", FBGEMM_QUANT_METHOD):
        raise ValueError(
            f"{folder} holds no quantised model (its config.json has no torchao or {FBGEMM_QUANT_METHOD} "
            "quantization_config): load it with from_pretrained, or quantise it with quantize_model"
        )
    names = [a for a in (config.architectures or []) if a in _MODEL_CLASSES]
    if not names:
        raise ValueError(f"{folder} holds a {config.architectures} model; expected one of {sorted(_MODEL_CLASSES)}")
    verify_weights_checksums(folder)
    warn_if_folder_code_differs(folder)
    if quant["quant_method"] == FBGEMM_QUANT_METHOD:
        return _load_fbgemm(folder, config, _MODEL_CLASSES[names[0]], quant, device)
    # The base class's loader: LaCTAudioPreTrainedModel.from_pretrained's finiteness check calls isfinite,
    # which torchao's tensors do not implement; the same check runs below on the dequantised values.
    model = super(LaCTAudioPreTrainedModel, _MODEL_CLASSES[names[0]]).from_pretrained(folder)
    # An inference model: torchao's loader leaves the int8 weights requiring grad, with which Module.to would
    # swap them for non-leaf copies.
    model.requires_grad_(False)
    with torch.no_grad():
        bad = [n for n, t in model.named_parameters() if not bool(torch.isfinite(_values(t)).all())]
    if bad:
        raise ValueError(f"the weights in {folder} hold NaN or infinite values in {', '.join(bad[:5])}")
    if any(p.device != torch.device(device) for p in model.parameters()):
        model.to(device)
    return model.eval()


def _load_fbgemm(folder: str, config, model_class, quant: dict, device: str):
    """The ``Int8DynamicLinear`` model of a folder ``save_quantized`` wrote in ``"int8_dynamic_fbgemm"``."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"{folder} holds an {FBGEMM_MODE} model, which runs on the CPU only, not on {device}")
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model.safetensors in {folder!r}: the quantised weights are missing")
    try:
        state = load_file(path)
    except SafetensorError as error:
        raise ValueError(f"the weights file {path} is corrupt or truncated ({error}): re-save the model") from error
    model = model_class(config)
    # folders written before sorted blocks existed say only "row_block": they were consecutive rows
    _replace_linears(model, quant["modules"], quant.get("row_block", ROW_BLOCK), quant.get("sort_rows", False))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"the weights in {folder} do not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]} "
            "(the config.json and model.safetensors come from different models)"
        )
    check_finite_weights(model)  # plain tensors: from_pretrained's own check applies as it is
    return model.requires_grad_(False).eval()


def half_precision_skip_reason(precision: str, device) -> str | None:
    """Why ``precision`` (``"bf16"``/``"fp16"``) inference is not run on ``device``; None where it is native.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in HALF_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {tuple(HALF_PRECISIONS)}")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device in this run"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device)} has no bf16"
        return None
    if device.type != "cpu":
        return f"half-precision inference is checked on the CPU and CUDA only, not on {device.type}"
    if precision == "fp16":
        return "fp16 matmuls on the CPU run about 1000x slower than fp32 (no native fp16 GEMM): never used here"
    if not cpu_has_native_bf16():
        return (
            f"CPU capability {cpu_capability()} without avx512_bf16/amx_bf16: PyTorch would emulate bf16, orders "
            "of magnitude slower than fp32, so bf16 inference is not run here"
        )
    return None


def to_half_precision(model: LaCTAudioPreTrainedModel, precision: str = "bf16", allow_emulated: bool = False):
    """Cast ``model`` in place to bf16/fp16 except its fast weights, and return it.

    Linear layers, attention, norms' weights and activations run in ``precision``; the mixers' ``w0, w1, w2``
    stay fp32, so the LaCT op (which casts q, k, v to the state's dtype outside autocast) keeps the state and
    every update in fp32 and hands its output back in ``precision``. Inputs: cast features to ``precision``.

    Args:
        allow_emulated: run also where the arithmetic is emulated (tests of the numerics only).

    Raises:
        ValueError: an unknown precision, or a quantised model.
        RuntimeError: the model's device has no native ``precision`` (``half_precision_skip_reason``).
    """
    reason = half_precision_skip_reason(precision, next(model.parameters()).device)
    if reason is not None and not allow_emulated:
        raise RuntimeError(f"{precision} inference not run: {reason}")
    if quantization_mode(model) is not None:
        raise ValueError("the model is int8-quantised: half precision applies to an fp32 model")
    fast = {
        id(getattr(m, w)) for m in model.modules() if isinstance(m, LaCTAudioMixer) and m.use_lact for w in FAST_WEIGHTS
    }
    dtype = HALF_PRECISIONS[precision]
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and id(tensor) not in fast:
            tensor.data = tensor.data.to(dtype)
    return model


# ---- measurement tools (eval/quantization_eval.py) ----


@contextlib.contextmanager
def exact_emulated_int_mm():
    """Within: torchao's CPU int8 x int8 -> int32 matmul runs as a float matmul with the same result bits.

    ``torch._int_mm`` has no fast CPU kernel without AVX512-VNNI/AMX. Each product of two int8 values is an
    integer of magnitude <= 128 * 128, so for a reduction of K <= 1024 every partial sum stays below 2^24 and an
    fp32 matmul is exact in any summation order (fp64, exact below 2^53, for larger K); the int32 result and its
    rounding to float then equal ``torch._int_mm``'s bit for bit. For evaluating accuracy; never for timing.

    Raises:
        RuntimeError: torchao no longer has the function this replaces (``torchao.kernel.intmm``).
    """
    from torchao.kernel import intmm

    if not hasattr(intmm, "_int_scaled_matmul_cpu"):
        raise RuntimeError("torchao.kernel.intmm._int_scaled_matmul_cpu is gone: update exact_emulated_int_mm")
    original = intmm._int_scaled_matmul_cpu

    def emulated(a, b, scales1):  # a [M, K] int8, b [K, N] int8, scales1 [M, 1]
        dtype = torch.float32 if a.shape[1] <= 1024 else torch.float64
        return torch.mm(a.to(dtype), b.to(dtype)).to(scales1.dtype) * scales1

    intmm._int_scaled_matmul_cpu = emulated
    try:
        yield
    finally:
        intmm._int_scaled_matmul_cpu = original


def round_to_format(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``w`` stored in ``fmt`` and read back as ``w``'s dtype: ``"bf16"``/``"fp16"`` casts, ``"int8"`` symmetric
    per row (last dim) with scale ``max|row| / 127``, ``"fp32"`` unchanged."""
    if fmt == "fp32":
        return w
    if fmt in HALF_PRECISIONS:
        return w.to(HALF_PRECISIONS[fmt]).to(w.dtype)
    if fmt == "int8":
        scale = w.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
        return (w / scale).round().clamp(-127, 127) * scale
    raise ValueError(f"unknown state format {fmt!r}: choose one of {STATE_FORMATS}")


def _round_state(state: FastWeightState, fmt: str) -> FastWeightState:
    r = lambda t: None if t is None else round_to_format(t, fmt)
    # detach() drops the op's cached working layout, which it would read instead of the rounded weights
    state = state.detach()
    return dataclasses.replace(
        state,
        **{name: r(getattr(state, name)) for name in ("w0", "w1", "w2", "m0", "m1", "m2", "v0", "v1", "v2")},
    )


def _weights(state: FastWeightState) -> torch.Tensor:
    return torch.cat([state.w0.flatten(2), state.w1.flatten(2), state.w2.flatten(2)], -1)  # [B, H, 3 Dh D]


def _read(state: FastWeightState, q: torch.Tensor, mask) -> torch.Tensor:
    """``f_W(q) = w1 (silu(w0 q) * (w2 q))`` per head: q ``[B, T, H, D]`` -> ``[B, T, H, D]`` (the state's dtype)."""
    q = q.to(state.dtype)
    g = torch.einsum("bthd,bhed->bthe", q, state.w0)
    h = torch.einsum("bthd,bhed->bthe", q, state.w2)
    o = torch.einsum("bthe,bhde->bthd", F.silu(g) * h, state.w1)
    return o if mask is None else o * mask[:, :, None, None].to(o.dtype)


@contextlib.contextmanager
def rounded_fast_weights(fmt: str, round_inputs: bool = False):
    """Within: every LaCT mixer keeps its fast-weight state in ``fmt`` (``STATE_FORMATS``) between chunk updates.

    The op runs one chunk at a time (a stream split at chunk multiples equals one call): the state is rounded
    (``round_to_format``: weights, momentum and Adam second moments) before the first chunk and after every
    update, as if stored in ``fmt``; each update itself is computed in fp32 from the rounded state.
    ``"bidirectional"`` updates chunk by chunk, then reads every token with the final rounded weights.
    ``"fp32"`` runs the same chunked path without rounding (it must equal the plain op: the check of this
    simulation). ``round_inputs``: q, k, v ``[B, T, H, D]`` are rounded to ``fmt`` too (int8: per token and
    head), as if the op's matmuls took operands in ``fmt``.

    Yields a dict filled while it runs: ``update_sq`` (sum over updates of ``||W_new - W_old||^2``, fp32 update),
    ``error_sq`` (``||round(W_new) - W_new||^2``: what storing the state in ``fmt`` changes), ``weight_sq``
    (``||W_old||^2``) and ``updates`` (chunk updates seen).
    """
    if fmt not in STATE_FORMATS:
        raise ValueError(f"unknown state format {fmt!r}: choose one of {STATE_FORMATS}")
    op = mixer_lact_audio.lact_swiglu
    stats = {"update_sq": 0.0, "error_sq": 0.0, "weight_sq": 0.0, "updates": 0}

    def chunked(q, k, v, lr, state, *, chunk_size, order="apply_update", momentum=None, mask=None, **kwargs):
        T = q.shape[1]
        if round_inputs:
            q, k, v = (round_to_format(t, fmt) for t in (q, k, v))
        state = _round_state(state, fmt)
        bounds, s = [], 0
        while s < T:  # pieces end where the stream's chunks end (token s is the stream's token seen + s)
            e = min(T, s + chunk_size - (state.seen + s) % chunk_size)
            bounds.append((s, e))
            s = e
        cut = lambda t, s, e: None if t is None else t[:, s:e]
        outs = []
        for s, e in bounds:
            before = _weights(state)
            o, state = op(
                cut(q, s, e),
                cut(k, s, e),
                cut(v, s, e),
                cut(lr, s, e),
                state,
                chunk_size=chunk_size,
                order="update_apply" if order == "bidirectional" else order,
                momentum=cut(momentum, s, e),
                mask=cut(mask, s, e),
                **kwargs,
            )
            after = _weights(state)
            rounded = _round_state(state, fmt)
            if not torch.equal(after, before):
                stats["update_sq"] += float((after - before).square().sum())
                stats["error_sq"] += float((_weights(rounded) - after).square().sum())
                stats["weight_sq"] += float(before.square().sum())
                stats["updates"] += 1
            state = rounded
            outs.append(o)
        if order == "bidirectional":
            return _read(state, q, mask), state
        return torch.cat(outs, 1), state

    mixer_lact_audio.lact_swiglu = chunked
    try:
        yield stats
    finally:
        mixer_lact_audio.lact_swiglu = op


def paired_difference(errors_a, errors_b, totals, samples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """The change of a corpus-level rate from system a to system b on the same items, with a 95% interval.

    ``diff = (sum(errors_b) - sum(errors_a)) / sum(totals)``; the interval is the percentile bootstrap of
    ``diff`` over the items resampled with replacement, both systems together (``scipy.stats.bootstrap``,
    ``paired=True``, as ``asr.rate_interval``). Items are utterances: ``errors`` are edit counts and ``totals``
    reference lengths (WER, CER), or summed token NLLs and token counts (NLL per token).

    Args:
        errors_a, errors_b, totals: ``[N]`` arrays of the N items.

    Returns:
        ``(diff, low, high)``; NaNs for no item, ``(diff, diff, diff)`` for one.
    """
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, totals))
    if not a.shape == b.shape == t.shape or a.ndim != 1:
        raise ValueError(
            f"errors_a, errors_b and totals must be [N] arrays of one length, got {a.shape}, {b.shape}, {t.shape}"
        )
    if len(t) == 0:
        return float("nan"), float("nan"), float("nan")
    diff = float((b.sum() - a.sum()) / max(t.sum(), 1e-12))
    if len(t) == 1 or np.array_equal(a, b):
        return diff, diff, diff
    result = bootstrap(
        (a, b, t),
        lambda a, b, t, axis=-1: (b.sum(axis) - a.sum(axis)) / np.maximum(t.sum(axis), 1e-12),
        paired=True,
        vectorized=True,
        n_resamples=samples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return diff, float(result.confidence_interval.low), float(result.confidence_interval.high)
