"""The ablation runner on tiny synthetic cached states: grid checks, a 2 x 2 study run and resumed through the
command line, statistics against hand-computed numbers, the report, and ``presets.recommend`` on its table."""

import importlib.util
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from modeling_lact_audio.ablations.boundaries import chunk_end_flags, with_flag_channel
from modeling_lact_audio.ablations.grid import GridError, load_grid, parse_grid
from modeling_lact_audio.ablations.pauses import load_pauses, pause_frames
from modeling_lact_audio.ablations.runner import select_runs
from modeling_lact_audio.ablations.statistics import paired_seed_difference, pooled_bootstrap, seed_interval
from modeling_lact_audio.ablations.study import ship_recommendations
from modeling_lact_audio.presets import recommend

ROOT = Path(__file__).resolve().parents[2]
D_MODEL = 16
TEXTS = ["a cat sat", "the dog ran", "hello there", "one more word"]


def _script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(n: int, prefix: str, rng, speakers: int = 3) -> datasets.Dataset:
    rows = []
    for i in range(n):
        frames = int(rng.integers(12, 30))
        rows.append(
            {
                "uid": f"{prefix}{i}",
                "text": TEXTS[i % len(TEXTS)],
                "speaker": f"spk{i % speakers}",
                "session_id": f"{prefix}/spk{i % speakers}",
                "utterance_index": i // speakers,
                "duration": frames / 50,
                "states": rng.standard_normal((frames, D_MODEL)).astype(np.float16),
            }
        )
    features = datasets.Features(
        {
            **{c: datasets.Value("string") for c in ("uid", "text", "speaker", "session_id")},
            "utterance_index": datasets.Value("int32"),
            "duration": datasets.Value("float64"),
            "states": datasets.Array2D(shape=(None, D_MODEL), dtype="float16"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("validation", 4), ("test_unseen_speakers", 6), ("sessions_test_unseen", 12)):
        _split(n, split, rng).save_to_disk(str(folder / split))
    return folder


def _grid(cache, **changes) -> dict:
    grid = {
        "name": "tiny",
        "task": "asr",
        "metric": "test_cer",
        "data": {
            "cache": str(cache),
            "train_rows": 12,
            "validation_rows": 4,
            "test_splits": ["test_unseen_speakers"],
            "test_rows": 6,
            "adaptation": {"split": "sessions_test_unseen", "k": 2, "max_streams": 2, "max_utterances": 4},
        },
        "budget": {"max_steps": 2, "batch_frames": 120, "max_utterances": 3, "warmup_steps": 1, "threads": 1},
        "seeds": [0, 1],
        "base": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_lact_heads": 1,
            "intermediate_size": 64,
            "lact_chunk_size": 8,
            "window_size": 4,
        },
        "reference": "full",
        "variants": [
            {"name": "full", "component": "reference"},
            {"name": "muon_0", "component": "Muon steps", "config": {"muon_steps": 0}},
        ],
    }
    grid.update(changes)
    return grid


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "speech"}, "task"),
        ({"seeds": [0]}, "at least 2"),
        ({"seeds": [0, 0]}, "distinct"),
        ({"reference": "nope"}, "reference"),
        ({"variants": [{"name": "full", "config": {"muon_stepz": 0}}]}, "muon_stepz"),
        ({"variants": [{"name": "full", "config": {"lact_order": "sideways"}}]}, "lact_order"),
        ({"variants": [{"name": "full", "model": "rnn"}]}, "model"),
        ({"variants": [{"name": "full"}, {"name": "full"}]}, "twice"),
        ({"variants": [{"name": "a/b"}]}, "name"),
        ({"budget": {"max_steps": 2, "learning_rat": 1.0}}, "learning_rat"),
        ({"budget": {"batch_frames": 100}}, "max_steps"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_grid_errors_name_the_field(tmp_path, change, message):
    with pytest.raises(GridError, match=message):
        parse_grid(_grid(tmp_path, **change), "g.yaml")


def test_shipped_grids_parse_or_wait_only_for_the_new_config_options():
    """Every shipped grid is well formed; a grid may fail only on the options another change is adding."""
    pending = ("lact_lr_mode", "lact_update_rule", "allow_unnormalised_fast_weights", "lact_chunk_ends")
    grids = sorted((ROOT / "eval" / "ablations" / "grids").glob("*.yaml"))
    assert {g.stem for g in grids} >= {"components", "chunk_window", "boundaries"}
    for path in grids:
        try:
            grid = load_grid(str(path))
        except GridError as error:
            assert any(p in str(error) for p in pending), error
            continue
        assert len(grid.seeds) >= 3 and grid.reference in {v.name for v in grid.variants}


def test_run_selection_by_pattern_and_shard(tmp_path):
    grid = parse_grid(_grid(tmp_path))
    assert select_runs(grid, only=["muon_0"]) == [("muon_0", 0), ("muon_0", 1)]
    assert select_runs(grid, only=["*/seed1"]) == [("full", 1), ("muon_0", 1)]
    both = select_runs(grid, shard=(0, 2)) + select_runs(grid, shard=(1, 2))
    assert sorted(both) == sorted(grid.runs())
    with pytest.raises(ValueError, match="matches no run"):
        select_runs(grid, only=["nothing"])


def test_statistics_match_hand_computed_numbers():
    # d = [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.302653 -> 2 -+ 4.302653 / sqrt(3)
    mean, low, high = seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    out = paired_seed_difference([0.30, 0.325, 0.35], [0.10, 0.10, 0.10])  # d = .2, .225, .25: sd .025
    half = 4.302653 * 0.025 / math.sqrt(3)
    assert out["diff"] == pytest.approx(0.225) and out["ci"] == pytest.approx([0.225 - half, 0.225 + half], abs=1e-6)
    assert out["matters"] is True and out["relative"] == pytest.approx(2.25) and out["p_value"] < 0.01
    # t = mean / (sd / sqrt 3) = 0.225 / 0.014434 = 15.588 with 2 degrees of freedom: p = 0.00409
    assert out["p_value"] == pytest.approx(0.00409, abs=5e-5)
    assert paired_seed_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])["matters"] is False
    assert paired_seed_difference([1.0], [0.0])["matters"] is None
    pooled = pooled_bootstrap([[2, 0, 1], [1, 1, 1]], [[1, 0, 0], [1, 0, 0]], [4, 2, 4])
    assert pooled["diff"] == pytest.approx((6 - 2) / 20) and pooled["ci"][0] <= pooled["diff"] <= pooled["ci"][1]


def test_chunk_end_flags_are_fixed_multiples_moved_to_nearby_pauses():
    assert np.flatnonzero(chunk_end_flags(20, 8)).tolist() == [7, 15]
    assert np.flatnonzero(chunk_end_flags(20, 8, pauses=[5, 17], tolerance=2)).tolist() == [5, 13]
    assert np.flatnonzero(chunk_end_flags(20, 8, pauses=[2], tolerance=8)).tolist() == [7, 15]  # too close to 0
    assert np.flatnonzero(chunk_end_flags(20, 8, pauses=[5], tolerance=0)).tolist() == [7, 15]
    states = np.ones((4, 3), np.float16)
    assert with_flag_channel(states, np.array([0, 1, 0, 1], bool))[:, -1].tolist() == [0, 1, 0, 1]
    # pauses of at least 0.2 s between speech segments, at the gap's middle, 50 frames per second
    assert pause_frames([(0.0, 1.0), (1.1, 2.0), (2.4, 3.0)], 150, 0.2) == [110]


def test_pause_column_is_computed_once_from_the_cached_rows_audio(tmp_path, monkeypatch):
    from modeling_lact_audio.ablations import pauses

    calls = []
    monkeypatch.setattr(
        pauses,
        "cached_rows_audio",
        lambda cache, split, wanted: iter([("u0", np.zeros(16000)), ("u1", np.zeros(8000))]),
    )

    def detector(audio):
        calls.append(len(audio))
        return [(0.0, 0.2), (0.5, 0.9)]

    settings = {"min_pause_ms": 150, "threshold": 0.5}
    got = load_pauses("c", "s", str(tmp_path), ["u0", "u1"], [50, 25], settings, detector)
    assert got == {"u0": [18], "u1": [18]} and len(calls) == 2
    again = load_pauses("c", "s", str(tmp_path), ["u1"], [25], settings, detector)
    assert again == {"u1": [18]} and len(calls) == 2  # read back from disk


def test_recommend_without_a_table_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_ablations.py --ship-recommendations"):
        recommend("low", 3.0, table=tmp_path / "missing.json")


@pytest.mark.slow
def test_a_two_by_two_study_runs_resumes_and_reports(cache, tmp_path):
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(yaml.safe_dump(_grid(cache)))
    out = tmp_path / "study"
    script = _script(ROOT / "eval" / "ablations" / "run_ablations.py")
    first = script.main(["--grid", str(grid_file), "--output", str(out), "--shard", "0/2"])
    assert len(first["status"]["done"]) == 2
    second = script.main(["--grid", str(grid_file), "--output", str(out)])
    assert len(second["status"]["done"]) == 2 and len(second["status"]["skipped"]) == 2
    third = script.main(["--grid", str(grid_file), "--output", str(out)])
    assert third["status"]["done"] == [] and len(third["status"]["skipped"]) == 4  # nothing trained again

    result = json.loads((out / "runs" / "muon_0" / "seed1" / "result.json").read_text())
    assert result["resolved_config"]["muon_steps"] == 0 and result["parameters"] > 0
    assert set(result["splits"]) == {"validation", "test_unseen_speakers"}
    assert result["adaptation"]["k"] == 2 and result["train_seconds"] > 0 and result["peak_rss_mib"] > 0
    assert not (out / "runs" / "muon_0" / "seed1" / "train" / "checkpoints").exists()

    summary = third["summary"]
    entry = summary["comparisons"]["muon_0"]["test_cer"]
    cers = {
        v: [json.loads((out / "runs" / v / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
        for v in ("full", "muon_0")
    }

    def rate(r):
        c = r["splits"]["test_unseen_speakers"]["counts"]
        return sum(c["char_errors"]) / sum(c["chars"])

    diffs = [rate(a) - rate(b) for a, b in zip(cers["muon_0"], cers["full"])]
    assert entry["diff"] == pytest.approx(np.mean(diffs)) and entry["n_seeds"] == 2
    report = (out / "REPORT.md").read_text()
    assert "python eval/ablations/run_ablations.py --grid" in report and "| Muon steps | `muon_0` | 2 |" in report
    assert (out / "accuracy_vs_cost.png").stat().st_size > 0 and (out / "components.png").stat().st_size > 0

    table_file = tmp_path / "recommendations.json"
    table = ship_recommendations([str(out)], "test", table_file)
    assert {c["name"] for c in table["candidates"]} == {"tiny/full", "tiny/muon_0"}
    pick = recommend("high", 0.3, streaming=False, table=table_file)
    best = min(table["candidates"], key=lambda c: (c["error_by_length"][0], c["cost"]))
    assert pick["name"] == best["name"] and pick["config"]["hidden_size"] == 32
    cheapest = min(table["candidates"], key=lambda c: c["cost"])
    assert recommend(cheapest["cost"], 0.3, table=table)["name"] == cheapest["name"]
    with pytest.raises(ValueError, match="costs <="):
        recommend(cheapest["cost"] / 2, 0.3, table=table)
    with pytest.raises(ValueError, match="can stream"):
        recommend("high", 0.3, streaming=True, table=table)  # both variants are offline (bidirectional)

    # a changed setting of a finished run is refused, not mixed in
    changed = _grid(cache)
    changed["budget"]["max_steps"] = 3
    grid_file.write_text(yaml.safe_dump(changed))
    with pytest.raises(ValueError, match="another setting"):
        script.main(["--grid", str(grid_file), "--output", str(out)])


def test_fixed_chunk_ends_given_per_frame_equal_the_op_s_own_chunks():
    """The boundary study's head reads its chunk ends from the extra channel; fixed multiples must reproduce
    the plain head (runs once ``CachedStatesCTC.forward`` takes ``lact_chunk_ends``)."""
    import torch

    from modeling_lact_audio.ablations.boundaries import ChunkEndsChannelCTC
    from modeling_lact_audio.ablations.grid import supports_chunk_ends
    from modeling_lact_audio.recogniser.heads import CachedStatesCTC, recogniser_config

    if not supports_chunk_ends():
        pytest.skip("CachedStatesCTC.forward does not take lact_chunk_ends yet")
    config = recogniser_config(
        8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_lact_heads=1,
        intermediate_size=64,
        lact_chunk_size=8,
        window_size=4,
        hidden_dropout=0.0,
        final_dropout=0.0,
    )
    plain = CachedStatesCTC(config, D_MODEL).eval()
    flagged = ChunkEndsChannelCTC(config, D_MODEL).eval()
    flagged.load_state_dict(plain.state_dict())
    states = np.random.default_rng(0).standard_normal((21, D_MODEL)).astype(np.float32)
    with_flags = with_flag_channel(states, chunk_end_flags(21, 8))
    mask = torch.ones(1, 21, dtype=torch.long)
    with torch.no_grad():
        expected = plain(torch.from_numpy(states)[None], mask).logits
        got = flagged(torch.from_numpy(with_flags)[None], mask).logits
    torch.testing.assert_close(got, expected)


@pytest.mark.slow
def test_boundary_variants_train_on_chunk_ends_at_pauses(cache, tmp_path, monkeypatch):
    from modeling_lact_audio.ablations import pauses
    from modeling_lact_audio.ablations.grid import supports_chunk_ends
    from modeling_lact_audio.ablations.study import run_study

    if not supports_chunk_ends():
        pytest.skip("CachedStatesCTC.forward does not take lact_chunk_ends yet")
    # every cached row's "audio": speech with one 0.2 s pause in the middle of a 0.5 s recording
    monkeypatch.setattr(
        pauses, "cached_rows_audio", lambda c, split, wanted: ((u, np.zeros(8000, np.float32)) for u in wanted)
    )
    variants = [
        {"name": "fixed", "boundaries": {"mode": "fixed"}},
        {"name": "pauses", "boundaries": {"mode": "pauses", "tolerance": 8}},
    ]
    grid_file = tmp_path / "b.yaml"
    grid = _grid(cache, name="b", reference="fixed", variants=variants)
    grid["data"]["adaptation"] = None
    grid_file.write_text(yaml.safe_dump(grid))
    out = run_study(
        str(grid_file), str(tmp_path / "b"), "cmd", only=["*/seed0"], detector=lambda a: [(0.0, 0.15), (0.35, 0.5)]
    )
    assert out["status"]["done"] == ["fixed/seed0", "pauses/seed0"]
    column = datasets.load_from_disk(str(tmp_path / "b" / "data" / "pauses" / "train")).to_dict()
    cached = datasets.load_from_disk(str(cache / "train"))
    frames = {uid: len(states) for uid, states in zip(cached["uid"], cached["states"])}
    # the gap's middle, 0.25 s at 50 frames per second, clipped to a row's last frame
    for uid, found in zip(column["uid"], column["pause_frames"]):
        assert found == [min(12, frames[uid] - 1)], (uid, found, frames[uid])
