"""run_scripts/train.py on the tiny config and the tiny corpus: learning, exact resume, 2 processes, export."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "run_scripts" / "train.py"
CONFIG = ROOT / "run_scripts" / "configs" / "tiny_cpu.yaml"
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train") / "corpus"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_scripts" / "make_corpus.py"),
            "--output",
            str(folder),
            "--tiny",
            "--workers",
            "1",
        ],
        check=True,
        env=ENV,
        capture_output=True,
    )
    return folder


def train(corpus, out, *flags, launcher=(sys.executable,), check=True):
    command = [
        *launcher,
        str(TRAIN),
        str(CONFIG),
        "--corpus",
        str(corpus),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--progress_bar",
        "false",
        "--max_eval_examples",
        "4",
        *flags,
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def losses(out):
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "lact"
    train(corpus, out, "--max_steps", "24", "--eval_steps", "12", "--save_steps", "12", "--warmup_steps", "4")
    return out


def test_a_few_steps_reduce_the_loss(trained):
    values = losses(trained)
    assert len(values) == 24
    assert np.mean(values[-4:]) < np.mean(values[:4]) - 0.3, values
    assert (trained / "best" / "model.safetensors").exists() and (trained / "last" / "vocab.json").exists()
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["step-12", "step-24"]


def test_saved_model_loads_with_auto_classes_and_pipeline(trained):
    from transformers import AutoModelForCTC, AutoProcessor, pipeline

    import modeling_lact_audio  # noqa: F401  (registers the Auto classes)

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


def test_resume_is_exact(corpus, tmp_path):
    flags = ("--max_steps", "6", "--eval_steps", "100", "--save_steps", "100", "--warmup_steps", "2")
    train(corpus, tmp_path / "straight", *flags)
    train(corpus, tmp_path / "resumed", *flags, "--stop_after_steps", "3")
    # A checkpoint killed mid-write is never renamed into place: it must be ignored.
    broken = tmp_path / "resumed" / "checkpoints" / "step-5.tmp"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"truncated")
    result = train(corpus, tmp_path / "resumed", *flags)
    assert "resumed from" in result.stdout + result.stderr and "step-3" in result.stdout + result.stderr
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    a = load_file(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes(corpus, tmp_path):
    launcher = (str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1")
    launcher += ("--mixed_precision", "no", "--dynamo_backend", "no")
    out = tmp_path / "ddp"
    train(corpus, out, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", launcher=launcher)
    assert json.loads((out / "run_config.json").read_text())["num_processes"] == 2
    assert len(losses(out)) == 2
    assert sorted(p.name for p in (out / "checkpoints" / "step-2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


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
    train(corpus, out, *flags, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--max_eval_examples", "2")
    assert len(losses(out)) == 2 and all(np.isfinite(losses(out)))
    assert (out / "last" / "config.json").exists() and (out / "best" / "config.json").exists()
    shutil.rmtree(out)


PRETRAINED_WHISPER = Path(os.environ.get("LACT_WHISPER_HF", Path.home() / ".cache/lact-audio/whisper-tiny.en-hf"))


@pytest.mark.skipif(
    not (PRETRAINED_WHISPER / "config.json").exists(),
    reason="no converted Whisper folder (run_scripts/convert_ct2_whisper.py writes one; or set LACT_WHISPER_HF)",
)
def test_pretrained_whisper_fine_tunes(corpus, tmp_path):
    out = tmp_path / "whisper_pretrained"
    flags = ("--model", "whisper_pretrained", "--pretrained_path", str(PRETRAINED_WHISPER), "--learning_rate", "1e-5")
    train(corpus, out, *flags, "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1", "--max_eval_examples", "1")
    assert len(losses(out)) == 1 and np.isfinite(losses(out)[0])
    assert (out / "last" / "tokenizer.json").exists()


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
    result = train(corpus, tmp_path / "bad", *flags, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "bad" / "log.jsonl").exists()
