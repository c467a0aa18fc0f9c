"""The generation side of the ablation runner (``task: lm``) on a tiny synthetic corpus of short "sessions":
grid checks, the token cache, NLL by position, a 2 x 2 study run and resumed through the command line, and
its report."""

import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml

from modeling_lact_audio.ablations.grid import GridError, load_grid, parse_grid
from modeling_lact_audio.ablations.lm_data import load_token_data
from modeling_lact_audio.ablations.lm_model import (
    LMTrainingArguments,
    build_lm,
    lm_config,
    train_lm,
    training_batch,
    window_nll,
)
from modeling_lact_audio.ablations.statistics import lm_metrics, utterance_counts
from tests.script_utils import load_script
from tests.session_corpus import session_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "corpus"
    datasets.DatasetDict(
        {
            "sessions_train": session_split("sessions_train", [3.0, 4.0, 2.5], seed=0),
            "sessions_test_unseen": session_split("t", [4.5, 2.2, 1.0], seed=100),
        }
    ).save_to_disk(str(folder))
    return folder


def _grid(corpus, **changes) -> dict:
    grid = {
        "name": "tiny_lm",
        "task": "lm",
        "metric": "test_nll_long",
        "data": {
            "corpus": str(corpus),
            "num_codebooks": 2,
            "codebook_size": 16,
            "fit_frames": 2000,
            "train_frames": 64,
            "eval_frames": 128,
            "bin_frames": 32,
            "long_from": 64,
        },
        "budget": {"max_steps": 3, "batch_size": 2, "warmup_steps": 1, "threads": 1},
        "seeds": [0, 1],
        "base": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_lact_heads": 1,
            "intermediate_size": 64,
            "lact_chunk_size": 16,
            "window_size": 8,
        },
        "reference": "full",
        "variants": [
            {"name": "full", "component": "reference"},
            {"name": "no_fast_weights", "component": "fast weights", "model": "baseline_sliding_window"},
        ],
    }
    grid.update(changes)
    return grid


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metric": "test_cer"}, "metric"),
        ({"variants": [{"name": "full", "model": "bilstm"}]}, "model"),
        ({"variants": [{"name": "full", "boundaries": {"mode": "fixed"}}]}, "boundaries"),
        ({"variants": [{"name": "full", "config": {"lact_order": "bidirectional"}}]}, "lact_order"),
        ({"budget": {"max_steps": 2, "batch_frames": 100}}, "batch_frames"),
        ({"data": {"cache": "x"}}, "cache"),
        ({"data": {"long_from": 50}}, "long_from"),
        ({"pauses": {"min_pause_ms": 100}}, "pauses"),
    ],
)
def test_lm_grid_errors_name_the_field(tmp_path, change, message):
    with pytest.raises(GridError, match=message):
        parse_grid(_grid(tmp_path, **change), "g.yaml")


def test_shipped_generation_grid_parses():
    grid = load_grid(str(ROOT / "eval" / "ablations" / "grids" / "generation.yaml"))
    assert grid.task == "lm" and grid.metric == "test_nll_long" and len(grid.seeds) >= 3
    assert len(grid.runs()) <= 39 and grid.variant("no_fast_weights").model == "baseline_sliding_window"
    chunks = {grid.config_overrides(v).get("lact_chunk_size") for v in grid.variants}
    assert {128, 256, 512, 1024, 2048} <= chunks  # the long-audio chunk sizes the seed names, within the windows


def _tiny_lm(seed: int = 0):
    torch.manual_seed(seed)
    config = lm_config(
        2,
        16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_lact_heads=1,
        intermediate_size=64,
        lact_chunk_size=16,
        window_size=8,
    )
    return build_lm("lact", config)


def test_an_interrupted_training_resumes_exactly(tmp_path):
    sequences = [np.random.default_rng(i).integers(0, 16, size=(2, 100)).astype(np.int16) for i in range(2)]

    def run(folder):
        args = LMTrainingArguments(str(folder), max_steps=3, batch_size=2, warmup_steps=1, save_every=1)
        model = _tiny_lm()
        return model, train_lm(model, sequences, 32, args)

    straight, log = run(tmp_path / "straight")
    run(tmp_path / "cut")
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["checkpoint_1", "checkpoint_2"]
    (checkpoints[1] / "progress.json").unlink()  # killed while saving step 3: resumes after step 2
    resumed, again = run(tmp_path / "cut")
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in log["history"]]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_window_nll_bins_every_predicted_code_once():
    model = _tiny_lm().eval()
    codes = np.random.default_rng(0).integers(0, 16, size=(2, 70)).astype(np.int16)
    nll, tokens = window_nll(model, codes, 32)
    assert tokens.tolist() == [31 * 2, 32 * 2, 6 * 2]  # targets 1..31, 32..63, 64..69, K = 2
    with torch.no_grad():
        ids = torch.from_numpy(codes.astype(np.int64))
        loss = model(input_ids=ids, labels=ids).loss
    assert nll.sum() / tokens.sum() == pytest.approx(float(loss), rel=1e-5)
    batch = training_batch([codes, codes[:, :10]], 64, 3, np.random.default_rng(0))
    assert batch.shape == (6, 64) and batch.dtype == torch.int64  # the short sequence is never drawn


def test_lm_metrics_from_window_sums():
    result = {
        "task": "lm",
        "bin_frames": 2,
        "long_from": 2,
        "nll": {"window_ids": ["a@0", "b@0"], "sums": [[2.0, 6.0], [4.0, 2.0]], "tokens": [[2, 4], [2, 4]]},
        **dict.fromkeys(
            (
                "train_seconds",
                "inference_seconds_per_audio_second",
                "peak_rss_mib",
                "peak_rss_increase_mib",
                "parameters",
            ),
            1.0,
        ),
    }
    m = lm_metrics(result)
    assert m["test_nll"] == pytest.approx(14 / 12) and m["test_nll_long"] == pytest.approx(8 / 8)
    assert m["test_nll_last_minus_first"] == pytest.approx(1.0 - 1.5)
    nll, codes = utterance_counts(result, "test_nll_long", [])
    assert nll.tolist() == [6.0, 2.0] and codes.tolist() == [4.0, 4.0]


@pytest.mark.slow
def test_a_two_by_two_lm_study_runs_resumes_and_reports(corpus, tmp_path):
    grid_file = tmp_path / "tiny_lm.yaml"
    grid_file.write_text(yaml.safe_dump(_grid(corpus)))
    out = tmp_path / "study"
    script = load_script(ROOT / "eval" / "ablations" / "run_ablations.py")
    first = script.main(["--grid", str(grid_file), "--output", str(out), "--shard", "0/2"])
    assert first["status"]["done"] == ["full/seed0", "full/seed1"]
    second = script.main(["--grid", str(grid_file), "--output", str(out)])
    assert len(second["status"]["done"]) == 2 and len(second["status"]["skipped"]) == 2
    third = script.main(["--grid", str(grid_file), "--output", str(out), "--max-runs", "1"])
    assert third["status"]["done"] == [] and len(third["status"]["skipped"]) == 4  # nothing trained again

    tokens = list((out / "data" / "tokens").iterdir())
    assert len([t for t in tokens if t.is_dir() and not t.name.endswith(".lock")]) == 1  # built once
    data = load_token_data(load_grid(str(grid_file)).data, str(out / "data" / "tokens"))
    # 62.5 frames per second: 4.5 s holds 2 windows of 128 frames, 2.2 s one, 1.0 s none
    assert data.frame_rate == 62.5 and data.window_ids == ["t-0000@0", "t-0000@128", "t-0001@0"]

    result = json.loads((out / "runs" / "no_fast_weights" / "seed1" / "result.json").read_text())
    assert result["resolved_config"]["mixer"] == "sliding_window" and result["parameters"] > 0
    assert result["steps"] == 3 and result["train_seconds"] > 0 and result["peak_rss_mib"] > 0
    assert result["inference_seconds_per_audio_second"] > 0
    assert np.asarray(result["nll"]["tokens"]).shape == (3, 4)
    assert not (out / "runs" / "no_fast_weights" / "seed1" / "train" / "checkpoints").exists()

    summary = third["summary"]
    curves = summary["nll_by_position"]
    assert set(curves) == {"full", "no_fast_weights"} and curves["full"]["bin_starts"] == [0, 32, 64, 96]
    assert all(math.isfinite(x) and x > 0 for c in curves.values() for x in c["mean"])
    entry = summary["comparisons"]["no_fast_weights"]["test_nll_long"]
    longs = {
        v: [lm_metrics(json.loads((out / "runs" / v / f"seed{s}" / "result.json").read_text())) for s in (0, 1)]
        for v in ("full", "no_fast_weights")
    }
    diffs = [a["test_nll_long"] - b["test_nll_long"] for a, b in zip(longs["no_fast_weights"], longs["full"])]
    assert entry["diff"] == pytest.approx(np.mean(diffs)) and entry["n_seeds"] == 2
    assert entry["pooled"]["utterances"] == 3 and entry["matters"] in (True, False)

    report = (out / "REPORT.md").read_text()
    assert "| fast weights | `no_fast_weights` | 2 |" in report and "## NLL by position" in report
    assert "62.5 frames per second" in report and "task lm" in report
    for plot in ("accuracy_vs_cost.png", "components.png", "nll_by_position.png"):
        assert (out / plot).stat().st_size > 0
    assert not (out / "recommendations.json").exists()
    with pytest.raises(ValueError, match="task 'lm' study"):
        script.main(["--ship-recommendations", str(out)])
