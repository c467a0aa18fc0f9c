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
