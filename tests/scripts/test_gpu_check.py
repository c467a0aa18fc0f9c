"""The GPU check and its parts, on the CPU: the op's FLOP count, the peak table, the result writer, the
comparison and the training step on tiny shapes, and ``eval/gpu_check.sh --dry-run`` end to end."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState

from modeling_lact_audio.benchmarks import op_gpu, train_step_gpu
from tests.scripts.test_bench_lact_op import FAKE_OFFICIAL as OFFICIAL_STAND_IN

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "eval" / "bench_lact_op.py"
FAKE_OFFICIAL = OFFICIAL_STAND_IN.replace("SCALE", "1.0")  # the official function's signature, our reference loop


def test_flops_match_a_hand_count():
    # T=2048, H=2, D=Dh=128, chunk 512, 5 Newton-Schulz steps. Read + gradient: 18·T·H·D·Dh = 1,207,959,552.
    # A 512-token chunk is wider than the head: dense Newton-Schulz on 128 x 128, 5 (4·128³ + 2·128³)
    # = 62,914,560 per matrix, for 4 chunks x 2 heads x 3 matrices = 1,509,949,440.
    assert op_gpu.lact_op_flops(2048, 2, 128, 128, 512, 5) == 1_207_959_552 + 1_509_949_440
    assert op_gpu.lact_op_flops(2048, 2, 128, 128, 512, 5, "fwd_bwd", batch=2) == 6 * 2_717_908_992
    assert op_gpu.lact_op_flops(2048, 2, 128, 128, 512, 0) == 1_207_959_552
    # A 16-token chunk: factored Newton-Schulz in the 16 x 16 space, per matrix
    # 2·16²·256 + 10·5·16³ + 2·128·16² + 2·128·128·16 = 925,696, for 4 chunks x 1 head x 3 matrices;
    # plus 18·64·128·128 = 18,874,368.
    assert op_gpu.lact_op_flops(64, 1, 128, 128, 16, 5) == 18_874_368 + 12 * 925_696
    with pytest.raises(ValueError, match="mode"):
        op_gpu.lact_op_flops(64, 1, 128, 128, 16, 5, "bwd")


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A40", 149.7),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", None),
        ("Tesla T4", None),
        (None, None),
    ],
)
def test_spec_peak_by_device_name(name, tflops):
    assert op_gpu.spec_peak_tflops(name) == tflops


def _result(records, mixer=()):
    return {
        "grid": "quick",
        "device": "cuda",
        "machine": {"gpu": "NVIDIA H200", "cpu": "x"},
        "versions": {"torch": "2.11", "cuda": "13.0", "triton": "3.6.0"},
        "float32_matmul_precision": "highest",
        "muon_steps": 5,
        "peak": {"spec_bf16_tflops": 989.0, "measured_bf16_tflops": 700.0, "matmul_n": 8192},
        "mixer": list(mixer),
        "records": records,
        "elapsed_s": 12.0,
        "complete": False,
        "stopped": "total budget spent",
    }


def test_writer_puts_timings_errors_and_skips_in_json_and_markdown(tmp_path):
    shape = {"T": 8192, "H": 1, "D": 512, "Dh": 512, "chunk": 2048, "muon_steps": 5, "dtype": "bf16", "mode": "fwd"}
    timed = {"median_s": 2e-3, "min_s": 1e-3, "max_s": 3e-3, "n": 5, "first_call_s": 4.0, "peak_mem_bytes": 2**30}
    records = [
        {"variant": "torch", **shape, **timed, "tflops": 98.9, **op_gpu.peak_shares(98.9, _result([])["peak"])},
        {
            "variant": "triton",
            **shape,
            **timed,
            "tflops": 197.8,
            "share_of_spec_peak": 0.2,
            "share_of_measured_peak": None,
            "max_rel_diff_vs_torch": 3e-3,
        },
        {"variant": "triton", **shape, "mode": "fwd_bwd", "error": "CompilationError: out of resources"},
        {"variant": "torch_compile", **shape, "skipped": "total budget spent"},
    ]
    mixer = [
        {
            "kind": "mixer",
            "preset": "base",
            "T": 16384,
            "hidden": 768,
            "lact_heads": 4,
            "lact_head_dim": 192,
            "chunk": 512,
            "window": 128,
            "attention": "sdpa",
            "dtype": "bf16",
            "mode": "fwd_bwd",
            **timed,
            "tflops": 50.0,
            "share_of_spec_peak": 0.05,
            "share_of_measured_peak": 50 / 700,
        }
    ]
    result = _result(records, mixer)
    op_gpu.write_results(result, tmp_path / "out", "bench")
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == result
    table = (tmp_path / "out" / "bench.md").read_text()
    assert "# LaCT op on NVIDIA H200 (quick grid)" in table and "spec 989.0 TFLOP/s, measured 700 TFLOP/s" in table
    assert "| 8192 x 1 x 512, 2048 | bf16 | fwd | torch | 2.00 | 98.9 | 10.0 | 14.1 | 1.00 | 4.0 |  |" in table
    assert "| triton | 2.00 | 197.8 | 20.0 |  | 1.00 | 4.0 | 3.0e-03 |" in table
    assert "| fwd_bwd | triton |  |  |  |  |  |  | CompilationError: out of resources |" in table
    assert "| torch_compile |  |  |  |  |  |  | total budget spent |" in table
    assert "| base, 16384, 768 | 4 x 192, 512 | 128, sdpa | bf16 | fwd_bwd | 2.00 | 50 | 5.0 | 7.1 |" in table
    assert "INCOMPLETE (total budget spent)" in table
    for line in table.splitlines():
        if line.startswith("| 8192"):
            assert line.count("|") == 12  # 11 columns, whatever the record holds


def _script():
    spec = importlib.util.spec_from_file_location("bench_lact_op_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_script_runs_every_variant_on_the_tiny_grid_on_cpu(tmp_path):
    official = tmp_path / "ttt_operation.py"
    official.write_text(FAKE_OFFICIAL)
    argv = ["--grid", "tiny", "--compile-backend", "eager", "--budget", "0.01", "--matmul-size", "64"]
    argv += ["--muon-steps", "0", "--compare", str(official), "--output-dir", str(tmp_path)]
    result = _script().main(argv)
    saved = json.loads((tmp_path / "lact_op_gpu_tiny.json").read_text())
    assert saved["complete"] and saved["peak"]["measured_bf16_tflops"] > 0 and saved["peak"]["spec_bf16_tflops"] is None
    by = {}
    for r in result["records"]:
        by.setdefault(r["variant"], []).append(r)
    assert set(by) == set(op_gpu.VARIANTS)
    for variant in ("torch", "torch_compile", "reference", "official"):
        assert all(r["tflops"] > 0 and r["median_s"] > 0 and "error" not in r for r in by[variant]), variant
    assert {r["mode"] for r in by["reference"]} == {"fwd"} and {r["dtype"] for r in by["torch_compile"]} == {"bf16"}
    # the reference and the official stand-in (our reference loop) compute what the op computes
    for r in by["reference"] + by["official"]:
        if r["dtype"] == "fp32" and r["mode"] == "fwd":
            assert r["max_rel_diff_vs_torch"] < 1e-4
    # Triton on CPU tensors is an error, recorded per point and mode; the run went on
    assert all("error" in r or r["tflops"] > 0 for r in by["triton"])
    assert [r["mode"] for r in saved["mixer"]] == ["fwd", "fwd_bwd"] and all(r["tflops"] > 0 for r in saved["mixer"])
    assert (tmp_path / "lact_op_gpu_tiny.md").read_text().count("| torch |") == 8
    assert (tmp_path / "lact_op_gpu_tiny.png").stat().st_size > 0


def test_op_points_past_the_total_budget_are_recorded_as_skipped(tmp_path):
    result = op_gpu.benchmark("tiny", "cpu", tmp_path, "t", total_budget_s=0, matmul_n=32)
    assert not result["complete"] and result["stopped"] == "total budget spent"
    assert result["records"] and all(r["skipped"] == "total budget spent" for r in result["records"])
    assert [r["mode"] for r in result["mixer"]] == ["fwd", "fwd_bwd"]  # one point: it runs anyway
    assert "INCOMPLETE (total budget spent)" in (tmp_path / "t.md").read_text()


def test_train_step_times_a_config_on_synthetic_batches(tmp_path):
    argv = [str(ROOT / "run_scripts" / "configs" / "a40_base.yaml"), "--output", str(tmp_path / "step.json")]
    argv += ["--device", "cpu", "--steps", "2", "--warmup", "1", "--preset", "tiny", "--max_frames_per_batch", "500"]
    argv += ["--max_seconds", "2", "--max_batch_size", "4", "--mixed_precision", "no"]
    try:
        record = train_step_gpu.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert json.loads((tmp_path / "step.json").read_text()) == json.loads(json.dumps(record))
    # 500 frames hold two 200-frame (2 s) rows; a40_base accumulates two micro-batches per step
    assert record["micro_batch"] == {"rows": 2, "input_frames": 200, "labels": 20}
    assert record["gradient_accumulation_steps"] == 2 and len(record["step_s"]) == 2 and len(record["losses"]) == 3
    assert record["model"] == "lact" and record["preset"] == "tiny" and record["mixed_precision"] == "no"
    assert record["attention"]["attn_implementation"] == "sdpa" and not record["attention"]["flash_attn_available"]
    assert record["audio_seconds_per_step"] == 8.0 and record["median_step_s"] > 0
    assert record["estimated_bytes"]["states"] > 0 and record["peak_mem_bytes"] is None


def test_train_step_records_a_failure_and_exits_nonzero(tmp_path):
    argv = [str(ROOT / "run_scripts" / "configs" / "a40_base.yaml"), "--output", str(tmp_path / "step.json")]
    with pytest.raises(SystemExit, match="train step failed"):
        train_step_gpu.main([*argv, "--device", "cpu", "--model", "wav2vec2"])
    assert "log-mel" in json.loads((tmp_path / "step.json").read_text())["error"]


def test_gpu_steps_import_without_the_packages_the_gpu_image_lacks():
    blocked = ("datasets", "evaluate", "jiwer", "soundfile", "torchcodec", "flash_attn", "torchao", "mlflow")
    code = (
        f"import sys, importlib.util, torch\nfor name in {blocked!r}: sys.modules[name] = None\n"
        "import modeling_lact_audio.benchmarks.op_gpu, modeling_lact_audio.benchmarks.train_step_gpu\n"
        "import modeling_lact_audio.benchmarks.memory_gpu, modeling_lact_audio.benchmarks.inference_gpu\n"
        "from modeling_lact_audio import quantization\n"
        "assert quantization.quantization_mode(torch.nn.Linear(2, 2)) is None\n"
        f"spec = importlib.util.spec_from_file_location('script', {str(SCRIPT)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.slow
def test_dry_run_of_the_gpu_check_runs_every_step_on_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"))
    env.pop("TRITON_INTERPRET", None)  # set by tests/ops/conftest.py; a CPU box without it records Triton's error
    done = subprocess.run(
        ["bash", str(ROOT / "eval" / "gpu_check.sh"), "--dry-run", "--results", str(tmp_path / "results")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert list(steps) == [
        "install",
        "nvidia_smi",
        "environment",
        "triton_tests",
        "ablation_options",
        "bench_quick",
        "train_step",
        "memory",
        "inference",
        "bench_default",
    ]
    assert summary["all_passed"] and steps["install"] == steps["bench_quick"] == steps["train_step"] == "passed"
    assert steps["memory"] == steps["inference"] == steps["ablation_options"] == "passed"
    assert all("error" not in r for r in summary["ablation_cost"]["checks"] + summary["ablation_cost"]["cost"])
    assert len(summary["memory_gpu"]) == 2 and set(summary["inference_gpu"]["precisions"]) == {"fp32", "bf16", "fp16"}
    assert summary["bench_op_quick"]["complete"] and summary["bench_op"]["stopped"] == "total budget spent"
    assert summary["train_step"]["median_step_s"] > 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(
        [
            "gpu_check.json",
            "gpu_check.log",
            "pytest.log",
            "bench_op_quick.json",
            "bench_op.json",
            "train_step.json",
            "memory_gpu.json",
            "inference_gpu.json",
        ]
    )
    assert all((tmp_path / "out" / f).stat().st_size < 16 * 2**20 for f in files)
