"""Measure what one training step of a LaCT audio model holds, to check :mod:`modeling_lact_audio.memory`'s plan.

:func:`measure_training_step` counts the bytes of live tensors (a ``TorchDispatchMode`` that tracks every
storage an op allocates until it is freed), which is what ``torch.cuda.max_memory_allocated`` reports on a
GPU and what the estimate models; :func:`saved_tensor_bytes` counts what autograd saves for backward.
"""

from __future__ import annotations

import argparse
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .configuration_lact_audio import LaCTAudioConfig
from .memory import CTC_LABELS_PER_SECOND, _check_supported, frames_per_second
from .presets import PRESETS


def saved_tensor_bytes(fn, exclude=()) -> tuple[int, object]:
    """Run ``fn()`` and count the bytes of the distinct storages autograd saves for backward meanwhile.

    ``exclude``: tensors whose storages do not count (the parameters). Tensors saved inside a
    non-reentrant checkpoint are not seen (the checkpoint's own hooks take them). Returns
    ``(bytes, fn())``.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in skip and key not in seen and t.device.type != "meta":
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages allocated by ops inside the mode, from allocation until freed.

    ``live``: bytes alive now; ``peak``: the most alive at once. Storages of ``existing`` tensors (the
    parameters and inputs, allocated before) are not counted, nor their views. Forward, backward
    (autograd runs the ops under the same mode) and the optimizer step are seen; buffers a kernel
    allocates internally (oneDNN, cuBLAS workspaces) are not. On a GPU this is what
    ``torch.cuda.max_memory_allocated`` measures, on any device.
    """

    def __init__(self, existing=()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._tracked: dict[int, weakref.finalize] = {}
        self._existing = {id(t.untyped_storage()) for t in existing}

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._tracked.pop(key, None)

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()  # one Python object per storage while it lives
        key = id(storage)
        if key in self._tracked or key in self._existing or tensor.device.type == "meta":
            return
        nbytes = storage.nbytes()
        self._tracked[key] = weakref.finalize(storage, self._freed, key, nbytes)
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def training_batch(config: LaCTAudioConfig, frames: int, batch_size: int, seed: int = 0) -> dict:
    """Random inputs and labels for a training step on ``batch_size`` examples of ``frames`` model frames.

    CTC: ``input_features [B, frames * total_stride, num_mel_bins]`` (or ``input_values`` for the
    waveform front end), an all-ones ``attention_mask`` and ``CTC_LABELS_PER_SECOND`` labels a second;
    LM: ``input_ids [B * num_codebooks, frames]``, ``attention_mask [B, frames]``, ``labels = input_ids``.
    """
    g = torch.Generator().manual_seed(seed)
    B = batch_size
    if config.task == "lm":
        ids = torch.randint(0, config.codebook_size, (B * config.num_codebooks, frames), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones(B, frames, dtype=torch.long), "labels": ids.clone()}
    _check_supported(config)
    n_in = frames * config.total_stride
    S = max(1, round(CTC_LABELS_PER_SECOND * frames / frames_per_second(config)))
    labels = torch.randint(1, config.vocab_size, (B, S), generator=g)
    mask = torch.ones(B, n_in, dtype=torch.long)
    if config.frontend == "waveform":
        return {"input_values": torch.randn(B, n_in, generator=g), "attention_mask": mask, "labels": labels}
    features = torch.randn(B, n_in, config.num_mel_bins, generator=g)
    return {"input_features": features, "attention_mask": mask, "labels": labels}


def measure_training_step(
    config: LaCTAudioConfig, frames: int, batch_size: int = 1, gradient_checkpointing: bool = True, seed: int = 0
) -> dict:
    """Peak tensor memory of training ``config`` in fp32 on the CPU, in bytes.

    Two forward + backward passes with an AdamW step after each, the gradients kept between them (as
    under gradient accumulation), so the second pass runs with the gradients and the optimizer state
    alive. Returns ``peak`` (parameters + inputs + the most bytes :class:`LiveTensorBytes` saw alive)
    and its parts ``parameters``, ``inputs``, ``gradients`` and ``optimizer`` (after the steps), and
    ``parameters_count``.
    """
    from .modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters

    torch.manual_seed(seed)
    model = (LaCTAudioForCausalLM if config.task == "lm" else LaCTAudioForCTC)(config).float().train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = training_batch(config, frames, batch_size, seed)
    existing = [*model.parameters(), *model.buffers(), *batch.values()]
    base = {
        "parameters": sum(p.nbytes for p in model.parameters()),
        "inputs": sum(t.nbytes for t in batch.values()) + sum(b.nbytes for b in model.buffers()),
    }
    tracker = LiveTensorBytes(existing)
    with tracker:
        for _ in range(2):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            del loss
    result = {
        **base,
        "gradients": sum(p.grad.nbytes for p in model.parameters() if p.grad is not None),
        "optimizer": sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)),
        "parameters_count": count_parameters(model),
    }
    result["peak"] = base["parameters"] + base["inputs"] + tracker.peak
    return result


def parse_point(text: str) -> tuple[str, float]:
    """``"PRESET:SECONDS"`` -> ``(preset, seconds)``."""
    try:
        preset, seconds = text.split(":")
        seconds = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a point is PRESET:SECONDS, e.g. tiny:4; got {text!r}") from None
    if preset not in PRESETS:
        raise argparse.ArgumentTypeError(f"unknown preset {preset!r} in {text!r}; choose one of {PRESETS}")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0 in {text!r}")
    return preset, seconds
