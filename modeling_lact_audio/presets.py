"""Named model sizes: ``tiny`` (CPU tests), ``small`` (CPU training), ``base``, ``large``, ``1p3b`` and ``3b``
(A40s, bf16; ``python -m modeling_lact_audio.memory`` plans their memory).

``python -m modeling_lact_audio.presets`` prints each preset's parameter count and its estimated
training memory per 1,000 frames (bf16 autocast, gradient checkpointing, AdamW in fp32; see
``modeling_lact_audio.memory.training_memory_bytes``).
"""

import argparse

import torch

from .configuration_lact_audio import TASKS, LaCTAudioConfig
from .memory import training_memory_bytes
from .modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters

_SIZES = {
    # hidden, layers, attention heads, LaCT heads, MLP width, LaCT chunk (frames), window (frames), momentum
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_lact_heads=2,
        intermediate_size=128,
        lact_chunk_size=16,
        window_size=8,
        use_momentum=True,
    ),
    # LaCTAudioConfig's defaults: hidden 256, 10 layers, 4 + 2 heads, MLP 768, chunk 64, window 32, no
    # momentum (why: see the config's docstring).
    "small": dict(),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_lact_heads=4,
        intermediate_size=2048,
        lact_chunk_size=512,
        window_size=128,
        use_momentum=True,
    ),
    "large": dict(
        hidden_size=1536,
        num_hidden_layers=32,
        num_attention_heads=16,
        num_lact_heads=8,
        intermediate_size=4096,
        lact_chunk_size=2048,
        window_size=512,
        use_momentum=True,
    ),
    # ~1.35B: GPT-style width and depth for 1.3B, SwiGLU width 8/3 d rounded to 256, head dims 128 (attention)
    # and 256 (LaCT).
    "1p3b": dict(
        hidden_size=2048,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_lact_heads=8,
        intermediate_size=5376,
        lact_chunk_size=2048,
        window_size=512,
        use_momentum=True,
    ),
    # ~3.0B: the same head dims and MLP ratio, wider and deeper.
    "3b": dict(
        hidden_size=2560,
        num_hidden_layers=34,
        num_attention_heads=20,
        num_lact_heads=10,
        intermediate_size=6912,
        lact_chunk_size=2048,
        window_size=512,
        use_momentum=True,
    ),
}
PRESETS = tuple(_SIZES)
__all__ = ["PRESETS", "preset_config", "training_memory_bytes"]


def preset_config(name: str, task: str = "ctc", **overrides) -> LaCTAudioConfig:
    """The config of preset ``name`` for ``task``, with the task's defaults (``LaCTAudioConfig``).

    ``task="ctc"``: log-mel front end, streaming orders (``update_apply`` + ``block_causal``);
    ``task="lm"``: audio tokens, ``apply_update`` + ``causal``. ``overrides`` replace any field.
    """
    if name not in _SIZES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return LaCTAudioConfig(task=task, **{**_SIZES[name], **overrides})


def main(argv=None) -> None:
    """Print every preset's parameter count and memory estimate."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="ctc")
    args = parser.parse_args(argv)
    cls = LaCTAudioForCTC if args.task == "ctc" else LaCTAudioForCausalLM
    print(
        f"| preset ({args.task}) | parameters | weights+grads+AdamW+bf16 copy (GiB) | activations / 1k frames (GiB) |"
    )
    print("|---|---|---|---|")
    for name in PRESETS:
        config = preset_config(name, args.task)
        with torch.device("meta"):
            n = count_parameters(cls(config))
        mem = {k: v / 2**30 for k, v in training_memory_bytes(config, n, frames=1000).items()}
        print(f"| {name} | {n / 1e6:.2f}M | {mem['states']:.2f} | {mem['activations']:.3f} |")


if __name__ == "__main__":
    main()
