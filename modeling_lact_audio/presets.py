"""Named model sizes: ``tiny`` (CPU tests), ``small`` (CPU training), ``base``, ``large``, ``1p3b`` and ``3b``
(A40s, bf16; ``python -m modeling_lact_audio.memory`` plans their memory).

``python -m modeling_lact_audio.presets`` prints each preset's parameter count and its estimated
training memory per 1,000 frames (bf16 autocast, gradient checkpointing, AdamW in fp32; see
``modeling_lact_audio.memory.training_memory_bytes``).
"""

import argparse
import json
import math
from pathlib import Path

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
__all__ = ["PRESETS", "preset_config", "recommend", "training_memory_bytes"]


def preset_config(name: str, task: str = "ctc", **overrides) -> LaCTAudioConfig:
    """The config of preset ``name`` for ``task``, with the task's defaults (``LaCTAudioConfig``).

    ``task="ctc"``: log-mel front end, streaming orders (``update_apply`` + ``block_causal``);
    ``task="lm"``: audio tokens, ``apply_update`` + ``causal``. ``overrides`` replace any field.
    """
    if name not in _SIZES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    return LaCTAudioConfig(task=task, **{**_SIZES[name], **overrides})


# Written by the ablation report from measured runs (modeling_lact_audio/ablations/recommendations.py).
RECOMMENDATIONS_FILE = Path(__file__).parent / "ablations" / "recommendations.json"
RECOMMENDATIONS_COMMAND = (
    "python eval/ablations/run_ablations.py --ship-recommendations eval/results/ablations/components "
    "eval/results/ablations/chunk_window eval/results/ablations/optimiser eval/results/ablations/boundaries"
)


def recommend(budget="medium", input_seconds: float = 10.0, streaming: bool = False, table=None) -> dict:
    """The measured configuration to use for a compute budget and input length, from the ablation studies.

    Args:
        budget: ``"low"``, ``"medium"``, ``"high"`` (the table's tiers: a third and two thirds of the way up
            the measured costs, and no limit) or a number: the most inference seconds per second of audio
            allowed, as measured on the machine named in the table.
        input_seconds: length of the inputs; picks the table's length bin whose error rate decides.
        streaming: only configurations that can stream (no bidirectional LaCT order or attention).
        table: a recommendation table (its path or the loaded dict); None: the one shipped in the package.

    Returns:
        ``{"name", "config", "model", "chunk_boundaries", "error", "metric", "cost", "length_bin"}``:
        ``config`` are the ``LaCTAudioConfig`` overrides (over the recogniser recipe's
        ``recogniser_config``); ``model`` the recogniser kind; ``error`` the measured error rate in that
        length bin; ``cost`` inference seconds per audio second.

    Raises:
        FileNotFoundError: no table shipped yet (the message names the command that writes it).
        ValueError: an unknown budget tier, or no configuration within the budget.
    """
    if table is None or isinstance(table, (str, Path)):
        path = Path(table) if table is not None else RECOMMENDATIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"no recommendation table at {path}: it is written from measured ablation runs by "
                f"`{RECOMMENDATIONS_COMMAND}` (after the studies ran: eval/ablations/README.md)"
            )
        table = json.loads(path.read_text())
    if isinstance(budget, str):
        if budget not in table["budgets"]:
            raise ValueError(f"budget must be one of {sorted(table['budgets'])} or a number, got {budget!r}")
        limit = table["budgets"][budget]
        limit = math.inf if limit is None else limit
    else:
        limit = float(budget)
    bins = table["length_bins"]
    index = next(
        (i for i, (low, high) in enumerate(bins) if input_seconds >= low and (high is None or input_seconds < high)),
        len(bins) - 1,
    )
    usable = [c for c in table["candidates"] if c["streaming"] or not streaming]
    if not usable:
        raise ValueError("no measured configuration can stream (every one reads bidirectionally)")
    allowed = [c for c in usable if c["cost"] <= limit]
    if not allowed:
        cheapest = min(c["cost"] for c in usable)
        raise ValueError(f"no measured configuration costs <= {limit} s per audio second (cheapest: {cheapest:.4g})")

    def error(c):
        e = c["error_by_length"][index]
        return c["error"] if e is None else e

    best = min(allowed, key=lambda c: (error(c), c["cost"]))
    return {
        "name": best["name"],
        "config": dict(best["config"]),
        "model": best["model"],
        "chunk_boundaries": best["chunk_boundaries"],
        "error": error(best),
        "metric": table["metric"],
        "cost": best["cost"],
        "length_bin": bins[index],
    }


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
