"""Issue 17's report is computed from the committed JSON, and its bars follow the numbers."""

from pathlib import Path

from modeling_lact_audio.benchmarks import memory_quantisation_report as R

RESULTS = Path(__file__).resolve().parents[2] / "eval" / "results"


def test_committed_report_is_what_the_json_gives():
    assert R.report(RESULTS) == (RESULTS / "memory_quantisation" / "REPORT.md").read_text()


def test_memory_bar_uses_every_point_and_the_tolerance():
    cpu = [{"ratio": 0.9}, {"ratio": 1.1}, {"no_ratio": True}]
    assert R.memory_bar(cpu, [{"ratio": 1.0}]) == {
        "points": 3,
        "cpu_points": 2,
        "gpu_points": 1,
        "min_ratio": 0.9,
        "max_ratio": 1.1,
        "pass": True,
    }
    assert not R.memory_bar([{"ratio": 1.2}], None)["pass"]
    assert not R.memory_bar(None, None)["pass"]


def test_missing_files_are_reported_as_not_measured(tmp_path):
    text = R.report(tmp_path)
    assert text.count("not measured") == 2 and "Half precision" not in text


def test_a_mode_meets_the_bars_only_when_it_passes_on_every_model():
    row = lambda model, mode, wer, size, latency: {
        "model": model, "mode": mode, "wer_pass": wer, "file_pass": size < 1, "latency_pass": latency,
    }  # fmt: skip
    rows = [
        row("whisper", "a", True, 0.3, False),
        row("small", "a", True, 0.3, True),
        row("whisper", "b", True, 0.3, True),
        row("small", "b", True, 0.3, True),
        row("whisper", "c", True, 1.2, True),
    ]
    assert R.modes_meeting_every_bar(rows) == ["b"]
    assert R.modes_meeting_every_bar(rows[:1]) == []


def _quant_run(rows: int, wer_change: float, latency_s: float, capability="AVX2", int8_flags=()) -> dict:
    """A minimal ``quantization_eval`` results dict: one model, fp32 and one mode, one split, greedy."""
    return {
        "rows_per_split": rows,
        "threads": 1,
        "torchao": "0",
        "machine": {"cpu": "cpu", "cpu_features": {"capability": capability, "int8_flags": list(int8_flags)}},
        "models": {
            "whisper": {
                "decodings": ["greedy"],
                "systems": {"fp32": {"file_bytes": 100}, "int8_dynamic_fbgemm": {"file_bytes": 35}},
                "speed": {
                    "fp32": {"offline": {"median_s": 1.0}},
                    "int8_dynamic_fbgemm": {"offline": {"median_s": latency_s}},
                },
                "accuracy": {
                    "test_seen": {
                        "int8_dynamic_fbgemm": {
                            "greedy": {"wer_diff": [wer_change, wer_change - 0.01, wer_change + 0.01]}
                        }
                    }
                },
            }
        },
    }


def test_each_mode_is_judged_on_its_largest_sample(tmp_path):
    import json

    for name, run in {
        "quantization": _quant_run(100, 0.012, 0.9),
        "quantization_fbgemm_300_rows": _quant_run(300, 0.006, 0.95),
        "quantization_empty": None,
    }.items():
        (tmp_path / name).mkdir()
        if run is not None:
            (tmp_path / name / "results.json").write_text(json.dumps(run))
    runs = R.quantisation_runs(tmp_path)
    assert [name for name, _ in runs] == ["quantization", "quantization_fbgemm_300_rows"]
    (row,) = R.largest_sample_bars(runs)
    assert row["run"] == "quantization_fbgemm_300_rows" and row["rows_per_split"] == 300
    assert row["wer_pass"] and abs(row["worst_wer_change_points"] - 0.6) < 1e-9 and row["latency_ratio"] == 0.95
    (alone,) = R.largest_sample_bars(runs[:1])
    assert not alone["wer_pass"]  # 1.2 points on the smaller sample
    text = R.report(tmp_path)
    assert "300 utterances per split (`quantization_fbgemm_300_rows/`)" in text
    assert "one INT8 mode meets all three bars on every model | int8_dynamic_fbgemm | yes" in text


def test_each_cpu_kind_is_judged_on_its_own_runs(tmp_path):
    import json

    runs = {
        "quantization": _quant_run(100, 0.005, 0.8, "AVX512", ["avx512_vnni"]),
        "quantization_avx2": _quant_run(100, 0.005, 1.02),
        "quantization_avx2_300_rows": _quant_run(300, 0.004, 1.01),
    }
    for name, run in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(run))
    rows = R.largest_sample_bars(R.quantisation_runs(tmp_path))
    by_cpu = {row["cpu"]: row for row in rows}
    assert sorted(by_cpu) == ["AVX2", "AVX512+VNNI"]
    assert by_cpu["AVX512+VNNI"]["latency_pass"] and by_cpu["AVX512+VNNI"]["run"] == "quantization"
    assert not by_cpu["AVX2"]["latency_pass"] and by_cpu["AVX2"]["run"] == "quantization_avx2_300_rows"
    text = R.report(tmp_path)
    assert "every model on AVX512+VNNI CPUs | int8_dynamic_fbgemm | yes" in text
    assert "every model on AVX2 CPUs | no mode does | **no**" in text
    assert "(AVX512+VNNI), 1 thread(s)" in text


def test_cpu_kind_prefers_the_recorded_probe_to_the_flags():
    run = _quant_run(100, 0.0, 1.0, "AVX512")
    assert R.cpu_kind(run) == "AVX512"  # recorded before fast_int8 existed, no flags
    run["machine"]["cpu_features"]["int8_flags"] = ["avx512_vnni"]
    assert R.cpu_kind(run) == "AVX512+VNNI"
    run["machine"]["cpu_features"]["fast_int8"] = False  # PyTorch's probe said no
    assert R.cpu_kind(run) == "AVX512"


def test_bf16_is_reported_beside_the_int8_bars_never_as_one(tmp_path):
    import json

    run = _quant_run(300, 0.002, 0.9, "AVX512", ["avx512_vnni"])
    whisper = run["models"]["whisper"]
    whisper["systems"]["bf16"] = {"file_bytes": 52}
    whisper["speed"]["bf16"] = {"offline": {"median_s": 0.6}}
    whisper["accuracy"]["test_seen"]["bf16"] = {"greedy": {"wer_diff": [0.004, -0.001, 0.009]}}
    (tmp_path / "quantization_bf16").mkdir()
    (tmp_path / "quantization_bf16" / "results.json").write_text(json.dumps(run))
    (int8,) = R.mode_bars(run)
    assert int8["mode"] == "int8_dynamic_fbgemm"
    (half,) = R.mode_bars(run, ("bf16",))
    assert half["mode"] == "bf16" and abs(half["file_ratio"] - 0.52) < 1e-9 and abs(half["latency_ratio"] - 0.6) < 1e-9
    text = R.report(tmp_path)
    assert "meets all three bars on every model | int8_dynamic_fbgemm | yes" in text and "whisper bf16:" not in text
    assert "## Half precision on the CPU" in text
    assert "| whisper | bf16 | +0.40 pts at test_seen (greedy) [-0.10, +0.90] | 0.52x | 0.60x |" in text
    assert "## Half precision on the CPU" not in R.report(tmp_path / "none")
