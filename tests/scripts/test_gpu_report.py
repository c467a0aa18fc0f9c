"""The GPU report is generated from the committed results of the GPU check."""

import shutil
from pathlib import Path

from modeling_lact_audio.benchmarks import gpu_report

RESULTS = Path(__file__).resolve().parents[2] / "eval" / "results" / "gpu"


def _record(variant, D, chunk, median_s, share, dtype="bf16"):
    return dict(
        variant=variant,
        dtype=dtype,
        mode="fwd",
        T=8192,
        H=2,
        D=D,
        chunk=chunk,
        median_s=median_s,
        tflops=1.0,
        share_of_spec_peak=share,
    )


def test_op_bar_takes_only_the_goal_points_and_compares_triton_with_torch():
    records = [
        _record("torch", 256, 2048, 2.0, 0.10),
        _record("triton", 256, 2048, 1.0, 0.20),
        _record("torch", 128, 2048, 1.0, 0.90),  # D < 256: not a goal point
        _record("torch", 256, 512, 1.0, 0.90),  # chunk < 2048
        _record("torch", 256, 2048, 1.0, 0.90, dtype="fp32"),
        {"variant": "triton", "dtype": "bf16", "chunk": 4096, "D": 512, "error": "compile failed"},
    ]
    bar = gpu_report.op_bar(records)
    assert bar["torch"] == {"best": 0.10, "worst": 0.10, "points": 1}
    assert bar["triton"]["best"] == 0.20
    assert bar["triton_speedup_over_torch"] == {"min": 2.0, "max": 2.0, "points": 1}


def test_report_of_the_committed_results(tmp_path):
    folder = tmp_path / "gpu"
    shutil.copytree(RESULTS, folder)
    (folder / "REPORT.md").unlink()
    text = gpu_report.main(["--results", str(folder)]).read_text()
    assert text == (RESULTS / "REPORT.md").read_text()  # the committed report is what the JSON gives now
    assert "NVIDIA H200" in text and "51 passed" in text
    assert (folder / "bench_op_occupancy.md").is_file() and (folder / "MEMORY_GPU.md").is_file()
