"""The memory plan (``modeling_lact_audio.memory``): parameter counts, sharding, checkpointing, the activation
formula against what autograd saves, the fast-weight state against a real cache, the CLI, and
``eval/memory_check.py`` on the tiny preset."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from modeling_lact_audio.cache_lact_audio import LaCTCache
from modeling_lact_audio.memory import (
    GiB,
    activation_bytes,
    block_parameter_count,
    estimate,
    fast_weight_state_bytes,
    frames_per_second,
    main,
    model_state_bytes,
    parameter_count,
    parse_bytes,
    plan,
    training_memory_bytes,
    usable_bytes,
)
from modeling_lact_audio.memory_measure import saved_tensor_bytes, training_batch
from modeling_lact_audio.modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters
from modeling_lact_audio.presets import PRESETS, preset_config
from modeling_lact_audio.presets import main as presets_main

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"ctc": LaCTAudioForCTC, "lm": LaCTAudioForCausalLM}


def _script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("task", ["ctc", "lm"])
@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_count_equals_the_built_model(preset, task):
    config = preset_config(preset, task)
    with torch.device("meta"):
        model = MODELS[task](config)
    assert parameter_count(config) == count_parameters(model)


def test_new_presets_have_their_sizes():
    for name, low, high in (("1p3b", 1.25e9, 1.45e9), ("3b", 2.9e9, 3.1e9)):
        config = preset_config(name)
        assert low < parameter_count(config) < high
        assert (config.lact_chunk_size, config.window_size, config.use_momentum) == (2048, 512, True)


def test_sharding_divides_the_right_terms():
    """Hand-computed for the tiny preset on 4 GPUs in bf16: DDP replicates everything and adds a bucket copy
    of the gradients; ZeRO-2 and FSDP divide the fp32 weights, gradients, moments and step temporaries, and
    differ in the gathered bf16 weights they hold (all of them, or two blocks)."""
    config = preset_config("tiny")
    P, block, n = parameter_count(config), block_parameter_count(config), 4
    shard = math.ceil(P / n)
    in_flight = 2 * block * 2  # two gathered blocks in bf16
    want = {
        "ddp": dict(weights=4 * P, working_copy=2 * P, gradients=4 * P, buckets=4 * P, optimizer=8 * P, step=4 * P),
        "zero2": dict(
            weights=4 * shard,
            working_copy=2 * P,  # every gathered block in bf16, forward to backward
            gradients=4 * shard + in_flight,
            buckets=0,
            optimizer=8 * shard,
            step=4 * shard,
        ),
        "fsdp": dict(
            weights=4 * shard,
            working_copy=in_flight,
            gradients=4 * shard + in_flight,
            buckets=0,
            optimizer=8 * shard,
            step=4 * shard,
        ),
    }
    for strategy, terms in want.items():
        states = model_state_bytes(config, "bf16", strategy, n)
        assert vars(states) == terms, strategy
    assert vars(model_state_bytes(config, "bf16", "zero3", n)) == want["fsdp"]
    # one GPU: no DDP buckets; activations never depend on the strategy or the GPU count
    assert model_state_bytes(config, "bf16", "ddp", 1).buckets == 0
    acts = {estimate(config, 100, 2, "bf16", s, g).activation_peak for s in ("ddp", "zero2", "fsdp") for g in (1, 4)}
    assert len(acts) == 1


@pytest.mark.parametrize("preset", ["tiny", "small", "large", "3b"])
def test_checkpointing_lowers_activations(preset):
    config = preset_config(preset)
    for frames in (100, 1500):
        acts = activation_bytes(config, frames, 2)
        assert acts.peak(True) < acts.peak(False)
        assert acts.saved(True) < acts.saved(False)
        assert estimate(config, frames, 2, gradient_checkpointing=True).peak < estimate(config, frames, 2).peak * 2
        assert (
            estimate(config, frames, 2, gradient_checkpointing=True).peak
            < estimate(config, frames, 2, gradient_checkpointing=False).peak
        )


@pytest.mark.parametrize(
    "task, overrides",
    [("ctc", {}), ("lm", {}), ("ctc", {"use_momentum": False, "lact_chunk_size": 8}), ("ctc", {"muon_steps": 0})],
)
def test_activation_formula_matches_what_autograd_saves(task, overrides):
    """fp32 on the CPU, no checkpointing: the saved set of a whole forward equals the formula (within 2%)."""
    config = preset_config("tiny", task, **overrides)
    model = MODELS[task](config)
    frames, batch = 50, 2
    inputs = training_batch(config, frames, batch)
    got, _ = saved_tensor_bytes(lambda: model(**inputs), list(model.parameters()))
    want = activation_bytes(config, frames, batch, "fp32", "cpu").saved(False)
    assert want == pytest.approx(got, rel=0.02)


def _fast_state_bytes(cache: LaCTCache) -> int:
    total = 0
    for layer in cache.layer_caches:
        fast = layer.fast
        tensors = [fast.w0, fast.w1, fast.w2, fast.w0_norm, fast.w1_norm, fast.w2_norm, fast.m0, fast.m1, fast.m2]
        if fast.pending is not None:
            p = fast.pending
            tensors += [p.k, p.v, p.lr, p.momentum, p.mask]
        total += sum(t.nbytes for t in tensors if t is not None)
    return total


def test_fast_weight_state_bytes_equal_a_real_cache():
    """The tiny CTC model streamed over two chunks, and the tiny LM stopped 5 frames into a chunk."""
    config = preset_config("tiny", "ctc")
    model = LaCTAudioForCTC(config).eval()
    frames = 2 * config.lact_chunk_size
    inputs = training_batch(config, frames, 2)
    inputs.pop("labels")
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    assert _fast_state_bytes(out.past_key_values) == fast_weight_state_bytes(config, 2)

    config = preset_config("tiny", "lm")
    model = LaCTAudioForCausalLM(config).eval()
    frames = config.lact_chunk_size + 5
    inputs = training_batch(config, frames, 2)
    inputs.pop("labels")
    with torch.no_grad():
        out = model(**inputs, use_cache=True)
    assert out.past_key_values.layer_caches[0].fast.pending.length == 5
    assert _fast_state_bytes(out.past_key_values) == fast_weight_state_bytes(config, 2, pending_frames=5)


def test_frames_per_second_and_sizes():
    assert frames_per_second(preset_config("large")) == 25.0  # 16 kHz, hop 160, strides 2 x 2
    assert frames_per_second(preset_config("large", "lm")) == 62.5  # 16 kHz / 256
    assert parse_bytes("48GB") == 48 * 10**9
    assert parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes("512MiB") == 2**29
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")


def test_plan_recommends_a_setting_that_fits_the_target():
    result = plan(preset_config("large"), seconds=60, gpus=2, gpu_memory="48GB", target_batch_seconds=1200)
    choice = result.choice
    assert result.fits and choice.estimate.peak <= usable_bytes(48 * 10**9)
    assert choice.micro_batch * choice.accumulation * 60 * 2 >= 1200
    assert (
        choice.estimate.peak
        == estimate(
            preset_config("large"), 1500, choice.micro_batch, "bf16", choice.strategy, 2, choice.gradient_checkpointing
        ).peak
    )


def test_cli_prints_a_plan(capsys):
    assert main(["--preset", "large", "--gpus", "2", "--gpu-memory", "48GB", "--seconds", "60"]) == 0
    out = capsys.readouterr().out
    for text in (
        "DDP",
        "FSDP (FULL_SHARD)",
        "AdamW moments",
        "checkpointing on",
        "fast-weight state",
        "Recommendation",
    ):
        assert text in out


def test_cli_says_when_a_target_cannot_fit(capsys):
    assert main(["--preset", "3b", "--gpus", "1", "--gpu-memory", "8GB", "--seconds", "20"]) == 1
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out
    assert "model states" in out and "GiB of each 8 GB GPU are usable" in out
    assert "It would fit with:" in out and "GPUs of this size" in out


def test_training_memory_bytes_keeps_its_contract(capsys):
    config = preset_config("small")
    n = parameter_count(config)
    bf16 = training_memory_bytes(config, n, 4000, True, 2)
    fp32 = training_memory_bytes(config, n, 4000, True, 4)
    assert set(bf16) == {"states", "activations"}
    assert bf16["states"] == 18 * n and fp32["states"] == 16 * n
    assert 0 < bf16["activations"] < fp32["activations"]
    assert training_memory_bytes(config, n, 4000, False, 2)["activations"] > bf16["activations"]
    presets_main([])
    table = capsys.readouterr().out
    assert "| 1p3b |" in table and "| 3b |" in table


def test_memory_check_script_writes_json_and_markdown(tmp_path, capsys):
    script = _script(ROOT / "eval" / "memory_check.py")
    argv = ["--point", "tiny:2", "--checkpointing", "on", "--output", str(tmp_path)]
    assert script.main(argv) == 0
    records = json.loads((tmp_path / "memory.json").read_text())["points"]
    assert len(records) == 1
    record = records[0]
    assert (record["preset"], record["frames"], record["gradient_checkpointing"]) == ("tiny", 50, True)
    # measured 0.99-1.04 on the tiny and small presets (eval/results/memory_quantisation/MEMORY.md)
    assert 0.85 < record["ratio"] < 1.15
    table = (tmp_path / "MEMORY.md").read_text()
    assert "| tiny | ctc | 2 | 50 | 1 | on |" in table
    capsys.readouterr()
    assert script.main(argv) == 0  # resumes: the point is not measured again
    assert "already measured" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "memory.json").read_text())["points"]) == 1
    assert script.main(["--point", "3b:60", "--max-gib", "1", "--output", str(tmp_path)]) == 0
    assert "refused" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "memory.json").read_text())["points"]) == 1


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="strategy must be one of"):
        model_state_bytes(preset_config("tiny"), strategy="zero1")
    with pytest.raises(ValueError, match="precision must be one of"):
        activation_bytes(preset_config("tiny"), 10, precision="fp16")
    with pytest.raises(ValueError, match="frames and batch_size must be >= 1"):
        activation_bytes(preset_config("tiny"), 0)
    assert GiB == 2**30
