"""The generation study (issue 15) on a tiny synthetic corpus of "sessions": voice sequences and their cache,
conditioned training and its exact resume, the three generators trained by the command, the evaluation end to
end (NLL by position, continuations, cost, streaming, samples, report) and the report's statistics."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from modeling_lact_audio.ablations.lm_model import (
    LMTrainingArguments,
    build_lm,
    conditioned_training_batch,
    lm_config,
    train_lm,
    training_batch,
)
from modeling_lact_audio.generation.report import nll_matrix, paired_difference, plateau_bin, tokenizer_round_trip
from modeling_lact_audio.generation.study import StudySettings, generation_items, select_prompts
from modeling_lact_audio.generation.study_data import data_settings, load_generation_data, voice_of
from modeling_lact_audio.generation.training import GENERATORS, load_generator
from tests.script_utils import load_script
from tests.session_corpus import session_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "corpus"
    datasets.DatasetDict(
        {
            "sessions_train": session_split(
                "sessions_train", [3.0, 2.5, 3.0], 0, ["e:a@r1.00", "e:b@r1.00", "e:a@r1.12"]
            ),
            "sessions_test_unseen": session_split(
                "sessions_test_unseen", [3.0, 2.5, 2.6], 100, ["f:x@r1.00p1.00", "f:y@r1.00", "f:x@r0.88p0.90"]
            ),
        }
    ).save_to_disk(str(folder))
    return folder


TINY = [
    "--num-codebooks", "2", "--codebook-size", "16", "--fit-frames", "2000", "--train-frames", "64",
    "--hidden-size", "32", "--layers", "1", "--heads", "2", "--lact-heads", "1", "--intermediate-size", "64",
    "--lact-chunk-size", "16", "--window-size", "8", "--batch-size", "2", "--warmup-steps", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """The three tiny generators, 2 steps each, through the training command."""
    root = tmp_path_factory.mktemp("generation")
    train = load_script(ROOT / "run_scripts" / "train_generators.py")
    argv = ["--corpus", str(corpus), "--tokens", str(root / "tokens"), "--output", str(root / "models")]
    infos = train.main(argv + TINY + ["--max-steps", "2", "--save-every", "1"])
    return root, infos, train, argv


def test_voices_group_sessions_in_uid_order(corpus, tmp_path):
    assert voice_of("piper:joe@r1.12p1.10") == "piper:joe" and voice_of("flite:rms") == "flite:rms"
    data = load_generation_data(data_settings(str(corpus), 2, 16, 2000), str(tmp_path / "tokens"))
    assert [s.voice for s in data.train] == ["e:a", "e:b"] and [s.voice for s in data.heldout] == ["f:x", "f:y"]
    x = data.heldout[0]
    assert x.uids == ["sessions_test_unseen-0000", "sessions_test_unseen-0002"]
    assert x.codes.shape == (2, sum(x.frames)) and x.codes.dtype == np.int16
    assert x.condition.shape == (256,) and np.isclose(np.linalg.norm(x.condition), 1.0, atol=1e-5)
    audio = data.audio(x, x.frames[0] - 10, x.frames[0] + 20)  # across the session boundary
    assert audio.shape == (30 * data.hop_length,) and audio.dtype == np.float32
    assert (data.folder / "speaker_embeddings.safetensors").exists()


def test_conditioned_batches_draw_the_same_windows():
    sequences = [np.random.default_rng(i).integers(0, 16, size=(2, 50 + 30 * i)).astype(np.int16) for i in range(3)]
    conditions = np.eye(3, 4, dtype=np.float32)
    ids, embeds = conditioned_training_batch(sequences, conditions, 20, 4, np.random.default_rng(7))
    assert torch.equal(ids, training_batch(sequences, 20, 4, np.random.default_rng(7)))
    assert embeds.shape == (4, 4) and embeds.dtype == torch.float32 and torch.all(embeds.sum(1) == 1)


def test_conditioned_training_resumes_exactly(tmp_path):
    sequences = [np.random.default_rng(i).integers(0, 16, size=(2, 100)).astype(np.int16) for i in range(2)]
    conditions = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)

    def model():
        torch.manual_seed(0)
        config = lm_config(2, 16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_lact_heads=1,
                           intermediate_size=64, lact_chunk_size=16, window_size=8, condition_dim=8)  # fmt: skip
        return build_lm("lact", config)

    def args(folder):
        return LMTrainingArguments(str(folder), max_steps=3, batch_size=2, warmup_steps=1, save_every=1)

    straight = model()
    train_lm(straight, sequences, 32, args(tmp_path / "straight"), conditions=conditions)
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    first = sorted((tmp_path / "straight" / "checkpoints").iterdir())[0]  # after step 2 (two are kept)
    shutil.copytree(first, tmp_path / "cut" / "checkpoints" / first.name)
    resumed = model()
    log = train_lm(resumed, sequences, 32, args(tmp_path / "cut"), conditions=conditions)
    assert len(log["history"]) == 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_the_command_trains_three_matched_generators(trained):
    root, infos, train, argv = trained
    assert set(infos) == set(GENERATORS)
    params = {k: v["parameters"] for k, v in infos.items()}
    assert max(params.values()) - min(params.values()) < 0.02 * params["lact"]
    for kind in GENERATORS:
        model, info = load_generator(root / "models" / kind)
        assert info["steps"] == 2 and model.config.condition_dim == 256
        assert not (root / "models" / kind / "checkpoints").exists()
    assert load_generator(root / "models" / "baseline_sliding_window")[0].config.mixer == "sliding_window"
    again = train.main(argv + TINY + ["--max-steps", "2", "--models", "lact"])  # finished: skipped
    assert again["lact"]["this_call_seconds"] == infos["lact"]["this_call_seconds"]


def test_evaluation_end_to_end_and_report(trained, tmp_path):
    root, _, _, _ = trained
    run = load_script(ROOT / "eval" / "generation" / "run_generation.py")
    results = tmp_path / "results"
    argv = [
        "--models-dir", str(root / "models"), "--results", str(results), "--threads", "1",
        "--bin-seconds", "0.5", "--max-context-seconds", "3", "--prompt-seconds", "1,2",
        "--prompts-per-length", "2,1", "--continuation-seconds", "1.2", "--subset-prompts", "1",
        "--window-seconds", "0.5", "--no-dnsmos", "--cost-context-seconds", "0.2,1", "--cost-new-frames", "4",
        "--stream-seconds", "0.5", "--stream-chunk-frames", "8", "--sample-seconds", "0.5",
    ]  # fmt: skip
    report = run.main(argv)
    for kind in GENERATORS:
        nll = json.loads((results / "nll" / f"{kind}.json").read_text())
        assert len(nll["sequences"]) == 2 and all(len(s["sums"]) == len(s["frames_per_bin"]) for s in nll["sequences"])
        cost = json.loads((results / "cost" / f"{kind}.json").read_text())
        assert [p["context_frames"] for p in cost["points"]] == [12, 62]
        stream = json.loads((results / "stream" / f"{kind}.json").read_text())
        assert stream["chunks"] == 4 and stream["time_to_first_audio_s"] > 0
    prompts = json.loads((results / "prompts.json").read_text())
    assert [p["prompt_seconds"] for p in prompts] == [1.0, 1.0, 2.0]
    items = sorted((results / "generate").glob("*.json"))
    assert len(items) == 3 * (2 + 3) + 1 * 3 * 3  # reals + models per prompt, 3 more settings on 1 prompt
    item = json.loads((results / "generate" / f"{prompts[0]['id']}__lact__nucleus.json").read_text())
    assert item["metrics"]["num_windows"] == 2 and "sample" in item
    assert (results / item["sample"]["wav"]).exists() and (results / item["sample"]["png"]).exists()
    text = report.read_text()
    sections = ["## Use of context", "## Continuations", "lact - baseline_transformer", "## Cost", "## Streaming"]
    for needle in sections + ["## Listening samples", "## The goal, as measured", "run_generation.py"]:
        assert needle in text, needle
    assert (results / "nll_by_position.png").exists() and (results / "cost.png").exists()
    stamp = (results / "generate" / items[0].name).stat().st_mtime
    run.main(argv + ["--only", "generate"])  # resumes: nothing left to do
    assert (results / "generate" / items[0].name).stat().st_mtime == stamp
    assert run.main(["--results", str(results), "--report-only"]) == report


def test_prompts_share_their_end_per_voice(corpus, tmp_path):
    data = load_generation_data(data_settings(str(corpus), 2, 16, 2000), str(tmp_path / "tokens"))
    settings = StudySettings(prompt_seconds=(1.0, 2.0, 4.0), prompts_per_length=(5, 5, 5), continuation_seconds=1.0)
    prompts = select_prompts(data.heldout, data.frame_rate, settings)
    x = [p for p in prompts if p.voice == "f:x"]
    assert [p.prompt_seconds for p in x] == [1.0, 2.0, 4.0] and len({p.end for p in x}) == 1
    assert all(
        p.start >= 0 and p.end + p.continuation_frames <= data.heldout[p.sequence].codes.shape[1] for p in prompts
    )
    items = generation_items(prompts, StudySettings(subset_prompts=1))
    assert sum(s == "greedy" for _, _, s in items) == 3 and sum(k == "real_original" for _, k, _ in items) == len(
        prompts
    )


def test_report_statistics_on_constructed_numbers():
    base = {f"p{i}": float(i) for i in range(6)}
    d = paired_difference({k: v + 0.5 for k, v in base.items()}, base)
    assert d["diff"] == pytest.approx(0.5) and d["ci"] == pytest.approx([0.5, 0.5]) and d["n"] == 6
    assert paired_difference({"a": 1.0, "b": float("nan")}, {"a": 0.0, "b": 0.0})["n"] == 1
    rng = np.random.default_rng(0)
    curve = np.array([5.0, 4.0, 3.0, 3.0, 3.0, 3.0])  # falls until bin 2, then flat
    matrix = curve + 0.01 * rng.standard_normal((8, 6)) + rng.standard_normal((8, 1))
    assert plateau_bin(matrix) == 2
    assert plateau_bin(np.tile(np.linspace(5, 3, 6), (8, 1)) + 0.01 * rng.standard_normal((8, 6))) == 5
    entry = {"num_codebooks": 2, "sequences": [
        {"sums": [4.0, 2.0], "sums_codebook0": [3.0, 1.0], "frames_per_bin": [1, 2]},
        {"sums": [8.0], "sums_codebook0": [4.0], "frames_per_bin": [2]},
        {"voice": "v", "frames": 9, "error": "RuntimeError: out of memory"},
    ]}  # fmt: skip
    m = nll_matrix(entry)
    assert m.shape == (2, 2) and m[0].tolist() == [2.0, 0.5] and m[1, 0] == 2.0 and np.isnan(m[1, 1])
    assert nll_matrix(entry, codebook0=True)[0].tolist() == [3.0, 0.5]
    trip = tokenizer_round_trip(ROOT / "eval" / "results" / "audio_tokenizer" / "results.json")
    assert trip["wer_ratio_excess"] > 1 and trip["similarity_shortfall"] > 0
    assert not trip["met"] and trip["unquantised"]["wer_ratio"] < trip["wer_ratio"]  # the quantisation loses most
