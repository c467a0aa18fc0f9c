"""Named model sizes: ``tiny`` (CPU tests), ``small`` (CPU training), ``base`` and ``large`` (A40, bf16).

``python -m modeling_lact_audio.presets`` prints each preset's parameter count and its estimated
training memory per 1,000 frames (bf16 activations, gradient checkpointing, AdamW in fp32).
"""

import argparse

import torch

from .configuration_lact_audio import TASKS, LaCTAudioConfig
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
}
PRESETS = tuple(_SIZES)


def preset_config(name: str, task: str = "ctc", **overrides) -> LaCTAudioConfig:
    """The config of preset ``name`` for ``task``, with the task's defaults (``LaCTAudioConfig``).

    ``task="ctc"``: log-mel front end, streaming orders (``update_apply`` + ``block_causal``);
    ``task="lm"``: audio tokens, ``apply_update`` + ``causal``. ``overrides`` replace any field.
    """
    if name not in _SIZES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return LaCTAudioConfig(task=task, **{**_SIZES[name], **overrides})


def training_memory_bytes(
    config: LaCTAudioConfig, num_params: int, frames: int, gradient_checkpointing: bool = True, bytes_per_value: int = 2
) -> dict:
    """Estimated training memory in bytes of a model sized from ``config`` on ``frames`` model frames.

    ``states``: fp32 weights, gradients and AdamW moments, 16 bytes a parameter. ``activations``: every
    block keeps its input (hidden values a frame); a block being computed holds about 34·hidden +
    6·intermediate values a frame, plus the LaCT chunk's fast-weight intermediates (20·Dh a LaCT head).
    With gradient checkpointing one block at a time does; without, every block. ``bytes_per_value``:
    2 in bf16, 4 in fp32.
    """
    d, L = config.hidden_size, config.num_hidden_layers
    block = 34 * d + 6 * config.intermediate_size
    if config.mixer == "lact":
        block += 20 * config.lact_hidden_dim * config.num_lact_heads
    per_frame = d * L + block * (1 if gradient_checkpointing else L)
    return {"states": 16 * num_params, "activations": bytes_per_value * frames * per_frame}


def main(argv=None) -> None:
    """Print every preset's parameter count and memory estimate."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, default="ctc")
    args = parser.parse_args(argv)
    cls = LaCTAudioForCTC if args.task == "ctc" else LaCTAudioForCausalLM
    print(f"| preset ({args.task}) | parameters | weights+grads+AdamW (GiB) | activations / 1k frames (GiB) |")
    print("|---|---|---|---|")
    for name in PRESETS:
        config = preset_config(name, args.task)
        with torch.device("meta"):
            n = count_parameters(cls(config))
        mem = {k: v / 2**30 for k, v in training_memory_bytes(config, n, frames=1000).items()}
        print(f"| {name} | {n / 1e6:.2f}M | {mem['states']:.2f} | {mem['activations']:.3f} |")


if __name__ == "__main__":
    main()
