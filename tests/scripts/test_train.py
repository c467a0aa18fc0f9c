"""Training (``modeling_lact_audio.training``; run_scripts/train.py): the length-bucket sampler, the data
loader, and whole runs on the tiny config and corpus: learning, exact resume, 2 processes, every model."""

import io
import json
import os
import pickle
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
from accelerate import skip_first_batches
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from modeling_lact_audio.corpus.build import build
from modeling_lact_audio.cpu_features import cpu_has_native_bf16
from modeling_lact_audio.training.arguments import parse_args
from modeling_lact_audio.training.data import LengthBucketBatchSampler, make_loader, plan_batches
from modeling_lact_audio.training.trainer import main, mixed_precision

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "run_scripts" / "configs" / "tiny_cpu.yaml"
LENGTHS = np.random.default_rng(0).integers(50, 1500, size=300)


def test_sampler_plan_is_deterministic_and_set_epoch_replans():
    a = LengthBucketBatchSampler(LENGTHS, max_frames=4000, max_batch=8, seed=3)
    b = LengthBucketBatchSampler(LENGTHS, max_frames=4000, max_batch=8, seed=3)
    first = list(a)
    assert first == list(b) == list(a)  # a plan depends only on seed, epoch and lengths
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(LengthBucketBatchSampler(LENGTHS, max_frames=4000, max_batch=8, seed=4)) != first


def test_sampler_batches_respect_the_budget_and_cover_the_epoch():
    sampler = LengthBucketBatchSampler(LENGTHS, max_frames=4000, max_batch=8, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(plan_batches(LENGTHS, 4000, 8, 0, 0))
    assert all(len(b) <= 8 and len(b) * LENGTHS[b].max() <= 4000 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))


@pytest.mark.parametrize("accumulation", [1, 3])
def test_sampler_ranks_are_disjoint_and_share_each_optimizer_step(accumulation):
    kwargs = dict(max_frames=4000, max_batch=8, seed=0, accumulation=accumulation, num_replicas=2)
    ranks = [LengthBucketBatchSampler(LENGTHS, rank=r, **kwargs) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == ranks[0].steps_per_epoch * accumulation
    rows = [{i for b in batches for i in b} for batches in per_rank]
    assert not rows[0] & rows[1]
    # Optimizer step s takes plan batches [s*A*W, (s+1)*A*W): the same ones a single process would take.
    plan = ranks[0].plan
    for step in range(ranks[0].steps_per_epoch):
        together = per_rank[0][step * accumulation : (step + 1) * accumulation]
        together += per_rank[1][step * accumulation : (step + 1) * accumulation]
        expected = plan[step * accumulation * 2 : (step + 1) * accumulation * 2]
        assert sorted(map(tuple, together)) == sorted(map(tuple, expected))
    with pytest.raises(ValueError, match="rank 2"):
        LengthBucketBatchSampler(LENGTHS, max_frames=4000, max_batch=8, num_replicas=2, rank=2)


def _wav(samples: int) -> dict:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(samples, dtype=np.float32), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


def test_loader_resumes_with_skip_first_batches_and_leaves_the_global_rng_alone():
    rows = datasets.Dataset.from_dict(
        {"audio": [_wav(160 * (10 + i)) for i in range(40)], "text": [str(i) for i in range(40)], "extra": [0] * 40}
    )
    sampler = LengthBucketBatchSampler(np.arange(10, 50), max_frames=150, max_batch=4, seed=0)
    loader = make_loader(rows, sampler, lambda batch: [int(r["text"]) for r in batch], num_workers=0)
    state = torch.random.get_rng_state()
    full = list(loader)
    assert torch.equal(torch.random.get_rng_state(), state)  # dropout after a resume draws what it would have
    assert full == list(sampler)
    assert list(skip_first_batches(loader, 3)) == full[3:]


def test_configs_parse_and_small_cpu_trains_in_fp32_where_bf16_is_emulated(tmp_path):
    for config in sorted((ROOT / "run_scripts" / "configs").glob("*.yaml")):
        parse_args([str(config)])
    _, _, train_args = parse_args([str(ROOT / "run_scripts" / "configs" / "small_cpu.yaml")])
    assert train_args.mixed_precision == "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolved = mixed_precision(train_args.mixed_precision, "cpu")
    assert resolved == ("bf16" if cpu_has_native_bf16() else "no")
    assert len(caught) == (0 if cpu_has_native_bf16() else 1)
    assert mixed_precision("auto", "cpu") == resolved
    with pytest.raises(ValueError, match="fp16 is not supported"):
        mixed_precision("fp16", "cpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lact\nnot_a_field: 1\n")
    with pytest.raises(ValueError, match="unknown fields \\['not_a_field'\\]"):
        parse_args([str(bad)])


def test_module_entry_point_prints_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["modeling_lact_audio.training", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("modeling_lact_audio.training", run_name="__main__")
    assert exit_info.value.code == 0
    assert "--max_frames_per_batch" in capsys.readouterr().out


# -----------------------------------------------------------------------------
# Whole runs (slow): in-process through main(), except the 2-process launch.


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "corpus"
    build(str(folder), seed=0, tiny=True, workers=1, progress=False)
    return folder


def run(corpus, out, *flags) -> dict:
    """``main`` on the tiny config; Accelerate's process-wide state is reset so the next run starts fresh."""
    argv = [str(CONFIG), "--corpus", str(corpus), "--output_dir", str(out), "--report_to", "none"]
    argv += ["--progress_bar", "false", "--max_eval_examples", "4", *flags]
    try:
        return main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def losses(out):
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "lact"
    run(corpus, out, "--max_steps", "24", "--eval_steps", "12", "--save_steps", "12", "--warmup_steps", "4")
    return out


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss(trained):
    values = losses(trained)
    assert len(values) == 24
    assert np.mean(values[-4:]) < np.mean(values[:4]) - 0.3, values
    assert (trained / "best" / "model.safetensors").exists() and (trained / "last" / "vocab.json").exists()
    # Accelerate rotates the checkpoints (keep_checkpoints = total_limit = 2).
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["checkpoint_12", "checkpoint_24"]
    evals = [json.loads(line)["eval"] for line in (trained / "log.jsonl").read_text().splitlines() if "eval" in line]
    assert len(evals) == 2 and all(0 <= e["cer"] and np.isfinite(e["loss"]) for e in evals)


@pytest.mark.slow
def test_saved_model_loads_with_auto_classes_and_pipeline(trained):
    from transformers import AutoModelForCTC, AutoProcessor, pipeline

    folder = str(trained / "last")
    model = AutoModelForCTC.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    inputs = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model(**inputs).logits.argmax(-1)
    expected = processor.batch_decode(ids)[0]
    asr = pipeline("automatic-speech-recognition", model=folder)
    assert asr(audio)["text"] == expected
    assert isinstance(asr({"raw": audio[::2].copy(), "sampling_rate": 8000})["text"], str)


@pytest.mark.slow
def test_resume_is_exact(corpus, tmp_path):
    # Batches of 2 rows make several optimizer steps per epoch, so the resume lands inside an epoch.
    flags = ("--max_steps", "6", "--eval_steps", "100", "--save_steps", "100", "--warmup_steps", "2")
    flags += ("--max_batch_size", "2", "--dataloader_num_workers", "1")
    run(corpus, tmp_path / "straight", *flags)
    run(corpus, tmp_path / "resumed", *flags, "--stop_after_steps", "3")
    # A checkpoint whose save was killed midway has no completion mark: it is deleted, never loaded.
    broken = tmp_path / "resumed" / "checkpoints" / "checkpoint_5"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"truncated")
    summary = run(corpus, tmp_path / "resumed", *flags)
    assert summary["steps"] == 6
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["checkpoint_3", "checkpoint_6"]


@pytest.mark.slow
def test_two_processes(corpus, tmp_path):
    """A subprocess on purpose: ``accelerate launch --multi_gpu`` starts two CPU processes in one gloo group."""
    out = tmp_path / "ddp"
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += [str(ROOT / "run_scripts" / "train.py"), str(CONFIG), "--corpus", str(corpus), "--output_dir", str(out)]
    command += ["--report_to", "none", "--progress_bar", "false", "--max_eval_examples", "4"]
    command += ["--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--dataloader_num_workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((out / "run_config.json").read_text())["num_processes"] == 2
    assert len(losses(out)) == 2
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint_2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags",
    [
        ("--model", "baseline_transformer"),
        ("--model", "baseline_sliding_window"),
        ("--model", "wav2vec2"),
        ("--model", "whisper", "--whisper_max_source_positions", "400", "--max_seconds", "8"),
        ("--task", "lm", "--model", "lact", "--lm_codebook_size", "16"),
    ],
    ids=["transformer", "sliding_window", "wav2vec2", "whisper", "lm_lact"],
)
def test_every_model_runs(corpus, tmp_path, flags):
    out = tmp_path / "run"
    run(corpus, out, *flags, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--max_eval_examples", "2")
    assert len(losses(out)) == 2 and all(np.isfinite(losses(out)))
    assert (out / "last" / "config.json").exists() and (out / "best" / "config.json").exists()


@pytest.mark.slow
def test_bf16_request_on_this_cpu(corpus, tmp_path):
    out = tmp_path / "bf16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(corpus, out, "--mixed_precision", "bf16", "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1")
    ran = json.loads((out / "run_config.json").read_text())["mixed_precision"]
    assert ran == ("bf16" if cpu_has_native_bf16() else "no")
    emulated = [w for w in caught if "without native bf16" in str(w.message)]
    assert len(emulated) == (0 if cpu_has_native_bf16() else 1)


PRETRAINED_WHISPER = Path(os.environ.get("LACT_WHISPER_HF", Path.home() / ".cache/lact-audio/whisper-tiny.en-hf"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (PRETRAINED_WHISPER / "config.json").exists(),
    reason="no converted Whisper folder (run_scripts/convert_ct2_whisper.py writes one; or set LACT_WHISPER_HF)",
)
def test_pretrained_whisper_fine_tunes(corpus, tmp_path):
    out = tmp_path / "whisper_pretrained"
    flags = ("--model", "whisper_pretrained", "--pretrained_path", str(PRETRAINED_WHISPER), "--learning_rate", "1e-5")
    run(corpus, out, *flags, "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1", "--max_eval_examples", "1")
    assert len(losses(out)) == 1 and np.isfinite(losses(out)[0])
    assert (out / "last" / "tokenizer.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (("--model", "conformer"), "--model 'conformer' is unknown"),
        (("--eval_split", "dev"), "split 'dev' is not in"),
        (("--max_frames_per_batch", "50"), "raise max_frames_per_batch"),
        (("--max_frames_per_batch", "90000000"), "lower max_frames_per_batch"),
    ],
    ids=["unknown_model", "missing_split", "utterance_longer_than_batch", "batch_beyond_memory"],
)
def test_bad_configuration_fails_early(corpus, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(corpus, tmp_path / "bad", *flags)
    assert not (tmp_path / "bad" / "log.jsonl").exists()


@pytest.mark.slow
def test_resume_refuses_a_planted_pickle_and_a_rerun_logs_each_step_once(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # A run killed before its first checkpoint left log lines behind: the rerun starts over and drops them.
    (out / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)))
    flags = ("--max_steps", "4", "--eval_steps", "100", "--save_steps", "100", "--warmup_steps", "1")
    run(corpus, out, *flags, "--stop_after_steps", "2")
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and 9.0 not in losses(out)
    checkpoint = out / "checkpoints" / "checkpoint_2"
    assert (checkpoint / "training_state.json").exists() and not list(checkpoint.glob("custom_checkpoint*"))

    class Planted:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(ValueError, match="a pickle that resuming would execute"):
        run(corpus, out, *flags)
    assert not (tmp_path / "ran").exists()
