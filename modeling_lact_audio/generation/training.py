"""The study's three generators at one budget: the LaCT LM and its two parameter-matched attention baselines.

Each is trained by ``ablations.lm_model.train_lm`` (AdamW, warmup and cosine decay, exact resume from its last
state checkpoint) on windows of ``train_frames`` code frames of the training voices' concatenated sessions,
conditioned on the voice's Resemblyzer embedding (``conditioning_embeds``), and saved to ``<output>/<kind>/``
with ``save_pretrained`` (it loads with ``from_pretrained``) and ``generator.json`` (what was trained, how long
it took). Same seed, same batches (step ``s`` draws from ``default_rng([seed, s])``), same steps for all three.
"""

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..ablations.lm_model import LMTrainingArguments, build_lm, lm_config, train_lm
from ..ablations.measure import PeakRSS
from ..baselines import BaselineAudioTransformer
from ..modeling_lact_audio import LaCTAudioForCausalLM, count_parameters
from ..training.models import LM_MODELS
from .study_data import CONDITION_DIM, GenerationData, load_generation_data

GENERATORS = LM_MODELS  # ("lact", "baseline_transformer", "baseline_sliding_window")
INFO = "generator.json"


@dataclass
class GeneratorSize:
    """The LaCT LM's size; the baselines get its trainable parameter count (``build_lm``).

    ``lact_chunk_size`` and ``window_size`` are in code frames (62.5 per second: 512 frames = 8.2 s of fast-weight
    chunk, 128 frames = 2.0 s of attention window for LaCT's local branch and for the sliding-window baseline).
    """

    hidden_size: int = 192
    num_hidden_layers: int = 3
    num_attention_heads: int = 3
    num_lact_heads: int = 1
    intermediate_size: int = 384
    lact_chunk_size: int = 512
    window_size: int = 128


def generator_config(num_codebooks: int, codebook_size: int, size: GeneratorSize):
    """``LaCTAudioConfig(task="lm")`` of the LaCT generator: ``apply_update`` order, causal attention, a
    ``conditioning_embeds`` input of 256 (a Resemblyzer embedding)."""
    config = lm_config(num_codebooks, codebook_size, condition_dim=CONDITION_DIM, **asdict(size))
    if config.lact_order != "apply_update" or config.attention_pattern != "causal":
        raise ValueError("a generator needs lact_order='apply_update' and attention_pattern='causal'")
    return config


def train_generator(
    kind: str,
    data: GenerationData,
    size: GeneratorSize,
    train_frames: int,
    args: LMTrainingArguments,
) -> dict:
    """Train (or resume, or skip when done) the generator ``kind`` into ``args.output_dir``.

    Returns ``generator.json``'s content: ``{"kind", "parameters", "config" (the LaCT size), "train_frames",
    "train_seconds" (wall), "steps", "final_loss", "mean_step_seconds", "peak_rss_increase_mib", "threads",
    "tokens" (the code cache folder)}``. The model is saved as ``config.json`` and ``model.safetensors`` and
    loads with :func:`load_generator`; the state checkpoints are removed once it is.
    """
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {GENERATORS}, got {kind!r}")
    output = Path(args.output_dir)
    info_path = output / INFO
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info["steps"] == args.max_steps and info["train_frames"] == train_frames:
            return info
    config = generator_config(data.meta["settings"]["num_codebooks"], data.meta["settings"]["codebook_size"], size)
    torch.manual_seed(args.seed)
    model = build_lm(kind, config)
    sequences = [s.codes for s in data.train]
    conditions = torch.stack([torch.from_numpy(s.condition) for s in data.train]).numpy()
    start = time.time()
    with PeakRSS() as memory:
        log = train_lm(model, sequences, train_frames, args, conditions=conditions)
    model.save_pretrained(str(output))  # config.json, model.safetensors and the modeling code copies
    history = log["history"]
    info = {
        "kind": kind,
        "class": type(model).__name__,
        "parameters": count_parameters(model),
        "config": asdict(size),
        "resolved": {k: getattr(model.config, k) for k in ("mixer", "window_size", "intermediate_size")},
        "train_frames": train_frames,
        "train_seconds": log["train_seconds"],
        "steps": len(history),
        "final_loss": history[-1]["loss"] if history else None,
        "mean_step_seconds": log["train_seconds"] / max(len(history), 1),
        "this_call_seconds": time.time() - start,
        "peak_rss_increase_mib": memory.peak_mib - memory.start_mib,
        "threads": args.threads,
        "seed": args.seed,
        "tokens": str(data.folder),
    }
    (output / INFO).write_text(json.dumps(info, indent=1))
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    return info


def load_generator(folder) -> tuple[torch.nn.Module, dict]:
    """``(model in eval mode, generator.json)`` of a folder written by :func:`train_generator`."""
    folder = Path(folder)
    info = json.loads((folder / INFO).read_text())
    cls = LaCTAudioForCausalLM if info["kind"] == "lact" else BaselineAudioTransformer
    return cls.from_pretrained(str(folder)).eval(), info


def train_generator_job(kind: str, data: dict, tokens_root: str, size: dict, train_frames: int, args: dict) -> dict:
    """:func:`train_generator` from plain arguments (for a worker process): ``data`` as
    ``study_data.data_settings``, ``size`` as :class:`GeneratorSize`, ``args`` as ``LMTrainingArguments``."""
    generation_data = load_generation_data(data, tokens_root)
    return train_generator(kind, generation_data, GeneratorSize(**size), train_frames, LMTrainingArguments(**args))
