"""One run of a generation (``task: lm``) study: train the variant's LM, measure it, write its ``result.json``.

The result holds, besides the costs every study records, ``nll``: per held-out window the NLL summed over the
codes predicted in each bin of ``bin_frames`` target positions and the count of those codes (``lm_model.
score_lm``), from which ``statistics.lm_metrics`` derives the metrics (``test_nll``, ``test_nll_long``: positions
from ``long_from`` on, ``test_nll_last_minus_first``: the last bin's NLL minus the first's) and the report the
NLL-by-position curves.
"""

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..modeling_lact_audio import count_parameters
from .grid import Grid, Variant, run_id
from .lm_data import TokenData, load_token_data
from .lm_model import LMTrainingArguments, build_lm, lm_config, score_lm, train_lm
from .measure import PeakRSS
from .runner import machine, run_folder, run_spec, write_json_atomic


def load_lm_data(grid: Grid, output: str) -> TokenData:
    """The study's token sequences, from ``<output>/data/tokens`` (built there once)."""
    return load_token_data(grid.data, str(Path(output) / "data" / "tokens"))


def lm_training_arguments(grid: Grid, output_dir: str, seed: int) -> LMTrainingArguments:
    return LMTrainingArguments(output_dir=output_dir, seed=seed, **grid.budget)


def execute_lm_run(grid: Grid, variant: Variant, seed: int, data: TokenData, output: str, detector=None) -> dict:
    """Train and measure one LM run and write its ``result.json``; returns the result (``detector``: unused,
    an LM has no chunk boundaries at pauses; :func:`runner.execute_run`'s signature)."""
    folder = run_folder(output, variant.name, seed)
    overrides = grid.config_overrides(variant)
    config = lm_config(grid.data["num_codebooks"], grid.data["codebook_size"], **overrides)
    torch.manual_seed(seed)
    model = build_lm(variant.model, config)
    built = model.config
    resolved = dict(overrides)
    for name in ("mixer", "intermediate_size", "window_size", "lact_order", "attention_pattern", "lact_chunk_size"):
        resolved[name] = getattr(built, name)
    args = lm_training_arguments(grid, str(folder / "train"), seed)
    with PeakRSS() as memory:
        log = train_lm(model, data.train, grid.data["train_frames"], args)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "train" / "model.safetensors")
    built.save_pretrained(folder / "train")
    scores = score_lm(model, data.windows, grid.data["bin_frames"], data.frame_rate)
    result = {
        "task": "lm",
        "spec": run_spec(grid, variant, seed),
        "run": run_id(variant.name, seed),
        "component": variant.component,
        "resolved_config": resolved,
        "parameters": count_parameters(model),
        "train_seconds": log["train_seconds"],
        "steps": len(log["history"]),
        "final_loss": log["history"][-1]["loss"] if log["history"] else None,
        "peak_rss_mib": memory.peak_mib,
        "peak_rss_increase_mib": memory.peak_mib - memory.start_mib,
        "threads": args.threads,
        "machine": machine(),
        "frame_rate": data.frame_rate,
        "bin_frames": grid.data["bin_frames"],
        "long_from": grid.data["long_from"],
        "nll": {"window_ids": data.window_ids, "sums": scores["nll_sums"], "tokens": scores["tokens"]},
        "inference_seconds_per_audio_second": scores["model_seconds"] / max(scores["audio_seconds"], 1e-9),
        "audio_seconds": scores["audio_seconds"],
    }
    write_json_atomic(folder / "result.json", result)
    shutil.rmtree(folder / "train" / "checkpoints", ignore_errors=True)
    return result
