"""The hostile-probe runner (issue 20): its classifier on synthetic probes, and a fast subset of the catalogue."""

import json
import time

import pytest
import torch

from modeling_lact_audio import LaCTAudioConfig
from modeling_lact_audio.hostile_probes import (
    PASSING,
    Probe,
    build_catalogue,
    main,
    run_probe,
    scan_unsafe_loads,
    select,
    wrong,
)


def _clear(tmp):
    LaCTAudioConfig(rope_theta=0)  # our config raises naming the field


def _handled(tmp):
    assert torch.isfinite(torch.ones(3)).all()


def _raw(tmp):
    torch.zeros(2) @ torch.zeros(3)  # raised inside torch, no message of ours


def _silent(tmp):
    wrong("all-zero codes")


def _hang(tmp):
    time.sleep(10)


@pytest.mark.parametrize(
    "fn, outcome",
    [
        (_clear, "clear_error"),
        (_handled, "handled"),
        (_raw, "raw_torch_error"),
        (_silent, "silent_wrong"),
        (_hang, "hang"),
    ],
)
def test_the_classifier_on_one_probe_of_each_outcome(tmp_path, fn, outcome):
    start = time.perf_counter()
    record = run_probe(Probe(f"synthetic/{outcome}", "synthetic", fn, timeout=0.2), tmp_path)
    assert record["outcome"] == outcome, record
    assert time.perf_counter() - start < 5
    if outcome == "clear_error":
        assert "rope_theta must be a real number > 0" in record["message"]
    if outcome == "silent_wrong":
        assert record["message"] == "all-zero codes"


def test_a_torch_error_inside_our_code_is_not_a_clear_error(tmp_path):
    from modeling_lact_audio import LaCTCache
    from modeling_lact_audio.hostile_probes import ctc_model, features

    def fn(tmp):  # a 1-layer cache for a 2-layer model: IndexError from a plain line of our code, not a raise
        ctc_model()(input_features=features()[0], past_key_values=LaCTCache(1), use_cache=True)

    record = run_probe(Probe("synthetic/index", "synthetic", fn), tmp_path)
    assert record["outcome"] in ("raw_torch_error", "clear_error")
    if record["message"].startswith("IndexError"):
        assert record["outcome"] == "raw_torch_error"


def test_the_catalogue_covers_every_area_with_unique_names():
    probes = build_catalogue()
    assert len({p.name for p in probes}) == len(probes) >= 60
    assert {p.area for p in probes} >= {
        "audio_input",
        "tokenizer",
        "audio_tokenizer",
        "config",
        "model_inputs",
        "weights",
        "op",
        "training",
        "export",
    }


SUBSET = [
    "audio_input/scaled_1e20",
    "audio_input/sampling_rate_16",
    "audio_input/global_norm_fitted_on_silence",
    "tokenizer/negative_id",
    "tokenizer/logits_instead_of_ids",
    "tokenizer/processor_2_audios_1_text",
    "config/rope_theta=0",
    "config/vocab_size='30'",
    "model_inputs/ctc_cache_of_batch_1_with_batch_2",
    "model_inputs/ctc_padded_batch_equals_single",
    "weights/nan_tail",
    "op/chunk/meta_state",
    "op/chunk/chunk_size_changes_mid_stream",
    "op/chunk/lr_dtype_differs_from_state",
    "training/checkpoint_holding_custom_checkpoint_0.pkl",
    "training/kill_between_the_two_renames_new_complete",
    "export/target_is_a_file",
]


def test_a_subset_of_the_real_catalogue_passes_and_is_reported(tmp_path):
    assert {p.name for p in select(build_catalogue(), names=SUBSET)} >= set(SUBSET)
    start = time.perf_counter()
    result = main(["--names", *SUBSET, "--output_dir", str(tmp_path), "--quiet"])
    assert time.perf_counter() - start < 30
    records = [r for r in result["records"] if r["name"] in SUBSET]
    assert len(records) == len(SUBSET)
    failing = {r["name"]: (r["outcome"], r.get("message")) for r in records if r["outcome"] not in PASSING}
    assert failing == {}
    saved = json.loads((tmp_path / "probes.json").read_text())
    assert {r["name"] for r in saved["probes"]} >= set(SUBSET)
    assert saved["counts"]["all"]["clear_error"] + saved["counts"]["all"]["handled"] >= len(SUBSET)
    assert "| **all** |" in (tmp_path / "REPORT.md").read_text()


def test_the_unsafe_load_scan_counts_calls_not_mentions(tmp_path):
    package = tmp_path / "modeling_lact_audio"
    package.mkdir()
    (package / "a.py").write_text(
        '"""Never call torch.load( here."""\n'
        "import pickle, torch\n"
        "x = torch.load('f', weights_only=False)\n"
        "y = pickle.loads(b'')\n"
        "z = torch.load('f', weights_only=True)\n"
    )
    scan = scan_unsafe_loads(tmp_path)
    assert scan["count"] == 4  # two torch.load, one pickle.loads, one weights_only=False
    assert {h["line"] for h in scan["hits"]} == {3, 4, 5}
    assert scan_unsafe_loads()["count"] == 0
