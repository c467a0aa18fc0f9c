"""The efficiency benchmark's parts: exponent fits, timing, peak memory, the bf16 gate, the report, the worker."""

import json
import mmap
import runpy
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_lact_audio.benchmarks import suite
from modeling_lact_audio.benchmarks.jobs import run_job
from modeling_lact_audio.benchmarks.measure import PeakMemory, fit_exponent, measure, predicted_next, summarize
from modeling_lact_audio.benchmarks.report import render, render_companions, write_report

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "eval" / "results" / "efficiency"
MiB = 1024**2

# What ``suite.bf16_skip_reason`` says on an AVX2 CPU (a literal, so the report tests do not depend on this CPU).
_AVX2_BF16_SKIP = (
    "CPU capability AVX2 without avx512_bf16/amx_bf16: PyTorch emulates bf16 here, orders of magnitude slower "
    "than fp32, so bf16 rows are not run"
)


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_fit_exponent_recovers_a_power_law(exponent):
    Ts = [1024, 2048, 4096, 8192, 16384]
    assert fit_exponent(Ts, [3e-6 * T**exponent for T in Ts]) == pytest.approx(exponent, abs=1e-9)


def test_fit_exponent_is_least_squares_through_noise():
    rng = np.random.default_rng(0)
    Ts = np.array([1e3, 2e3, 4e3, 8e3, 16e3, 32e3])
    times = 1e-5 * Ts**1.1 * np.exp(rng.normal(0, 0.05, len(Ts)))
    expected = np.linalg.lstsq(np.stack([np.log(Ts), np.ones(len(Ts))], 1), np.log(times), rcond=None)[0][0]
    assert fit_exponent(Ts, times) == pytest.approx(expected, rel=1e-9)
    assert abs(fit_exponent(Ts, times) - 1.1) < 0.1


def test_fit_exponent_needs_two_sizes_with_times():
    assert fit_exponent([1024], [0.1]) is None
    assert fit_exponent([1024, 1024], [0.1, 0.2]) is None
    assert fit_exponent([1024, 2048, 4096], [0.1, None, 0.0]) is None  # unmeasured points are left out
    assert fit_exponent([1024, 2048, 4096], [0.1, None, 0.4]) == pytest.approx(1.0)


def test_predicted_next_extrapolates_the_local_exponent():
    assert predicted_next([1024, 2048], [1.0, 4.0], 4096) == pytest.approx(16.0)  # exponent 2
    assert predicted_next([1024, 2048], [1.0, 1.0], 4096) == pytest.approx(2.0)  # floor 1: never cheaper than linear
    assert predicted_next([1024], [1.0], 2048) == pytest.approx(4.0)  # one point: assume attention's 2


def test_summarize_orders_its_statistics():
    s = summarize([0.01 * (i + 1) for i in range(10)])
    assert s["n"] == 10 and s["min_s"] == 0.01 and s["max_s"] == 0.1
    assert s["min_s"] <= s["median_s"] <= s["p90_s"] <= s["max_s"]
    assert s["median_s"] == pytest.approx(0.055) and s["mean_s"] == pytest.approx(0.055)


def test_measure_times_within_the_budget():
    t = measure(lambda: time.sleep(0.002), "cpu", budget_s=0.1)
    assert 0.002 <= t["min_s"] <= t["median_s"] <= t["max_s"]
    assert t["n"] >= 1 and not t.get("warmup_only") and t["peak_mem_bytes"] is not None


def test_measure_keeps_a_warmup_over_the_budget_as_the_only_sample():
    calls = []
    t = measure(lambda: (calls.append(1), time.sleep(0.02)), "cpu", budget_s=0.005)
    assert t["warmup_only"] and t["n"] == 1 and len(calls) == 1
    assert t["median_s"] == t["warmup_s"] >= 0.02


def test_peak_memory_sees_a_freed_allocation():
    # An anonymous mapping, not a tensor: its pages are new to the process whatever the allocator holds
    # (a heap block freed by an earlier test can come back already resident), and unmapping returns
    # them at once, so only the sampler can have seen them.
    with PeakMemory("cpu") as mem:
        block = mmap.mmap(-1, 64 * MiB)
        block.write(b"\1" * (64 * MiB))  # touch every page
        time.sleep(0.2)  # many sampling periods, even on a loaded machine
        block.close()
    assert 48 * MiB <= mem.peak_bytes < 1024 * MiB


def test_bf16_rows_only_on_native_bf16(monkeypatch):
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: False)
    reason = suite.bf16_skip_reason("cpu")
    assert "emulates bf16" in reason and suite.cpu_capability() in reason
    assert suite.bf16_skip_reason("cuda") is None
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: True)
    assert suite.bf16_skip_reason("cpu") is None


def test_op_section_skips_bf16_without_native_support(monkeypatch):
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: False)
    size = {"budget_s": 0.05, "op": {"gemm_n": 64, "configs": [(64, 1, 16, 16)], "reference": (16, 1, 8, 8)}}
    args = type("Args", (), {"device": "cpu"})
    op = suite.section_op(args, size)
    assert [r["dtype"] for r in op["records"]] == ["fp32"]
    assert op["bf16_gemm_gflops"] is None and "emulates bf16" in op["bf16_skipped"]
    # the bars look at chunk >= 512, head dim >= 256 only: relabel the one row
    big = dict(op, records=[dict(op["records"][0], D=256, chunk=512)])
    bar = next(b for b in suite.evaluate_bars({"op": big}) if "bf16" in b["bar"])
    assert bar["pass"] is None and bar["measured"].startswith("skipped")


def _synthetic_results(bf16_skipped):
    """A small results JSON of every section, as the suite writes it."""
    layer = [
        {
            "section": "layer",
            "mixer": m,
            "mode": mode,
            "T": T,
            "hidden": 64,
            "median_s": s * T,
            "min_s": s * T,
            "max_s": s * T,
            "n": 3,
            "tokens_per_s": 1 / s,
            "peak_mem_bytes": 1000 * T,
        }
        for m, s in (("lact", 1e-5), ("attention", 2e-5))
        for mode in ("fwd", "fwd_bwd")
        for T in (1024, 2048)
    ] + [{"section": "layer", "mixer": "attention", "mode": "fwd_bwd", "T": 4096, "stopped": "oom"}]
    op_records = [
        {
            "T": 2048,
            "H": 1,
            "D": 256,
            "Dh": 256,
            "chunk": 512,
            "dtype": "fp32",
            "median_s": 0.1,
            "min_s": 0.1,
            "max_s": 0.1,
            "n": 2,
            "gflops": 90.0,
            "fraction_of_sgemm": 0.9,
        }
    ]
    if not bf16_skipped:
        op_records.append(
            dict(op_records[0], dtype="bf16", median_s=0.05, gflops=180.0, fraction_of_sgemm=1.8, speedup_vs_fp32=2.0)
        )
    results = {
        "mode": "smoke",
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "threads": 1,
            "torch": torch.__version__,
            "python": "3.11",
            "device": "cpu",
            "loadavg": [1.0, 1.0, 1.0],
            "loadavg_end": [1.0, 1.0, 1.0],
            "cpu_features": {"capability": "AVX2", "native_bf16": not bf16_skipped, "bf16_flags": []},
        },
        "sizes": {"preset": "tiny"},
        "timing": suite.TIMING,
        "op": {
            "sgemm_gflops": 100.0,
            "bf16_gemm_gflops": None if bf16_skipped else 400.0,
            "bf16_skipped": _AVX2_BF16_SKIP if bf16_skipped else None,
            "records": op_records,
            "reference_vs_chunked": {
                "T": 64,
                "H": 1,
                "D": 16,
                "chunk": 16,
                "reference_s": 1.0,
                "chunked_s": 0.01,
                "speedup": 100.0,
            },
        },
        "layer": {
            "records": layer,
            "exponents": {"lact/fwd": {"all": 1.0, "8k_64k": None}},
            "jobs": {"lact": {"status": "ok", "wall_s": 1.0}},
        },
        "model": {
            "records": [
                {
                    "model": "lact",
                    "mode": "train",
                    "T": 512,
                    "audio_s": 20.0,
                    "median_s": 1.0,
                    "min_s": 1.0,
                    "max_s": 1.0,
                    "n": 1,
                    "tokens_per_s": 512.0,
                    "rtf": 0.05,
                    "peak_mem_bytes": 2**30,
                }
            ],
            "decode": [
                {
                    "model": m,
                    "context": c,
                    "median_s": 0.01,
                    "mean_s": 0.01,
                    "p90_s": 0.012,
                    "max_s": 0.02,
                    "cache_bytes": 2**20 * c,
                    "cache_growth_bytes_per_token": 0.0,
                    "peak_mem_bytes": 0,
                }
                for m in ("lact", "baseline")
                for c in (64, 128)
            ],
            "jobs": {"decode/lact": {"status": "ok", "wall_s": 1.0}},
        },
        "stream": {
            "records": [
                {
                    "chunk_ms": 160,
                    "model_frames_per_chunk": 4,
                    "median_s": 0.01,
                    "min_s": 0.008,
                    "p90_s": 0.012,
                    "max_s": 0.02,
                    "chunks": 6,
                    "rtf": 0.06,
                    "algorithmic_latency_ms": 175.0,
                }
            ],
            "threads": 1,
        },
        "flops": {
            "check": [{"mixer": "lact", "T": 64, "mode": "fwd", "analytic": 1e9, "counted": 1e9, "ratio": 1.0}],
            "achieved": [],
            "executed_fwd_flops_per_token": {"lact": {"1024": 1e6}},
        },
    }
    results["bars"] = suite.evaluate_bars(results)
    return results


@pytest.mark.parametrize("native", [True, False])
def test_bf16_skip_reason_follows_the_cpu(native, monkeypatch):
    monkeypatch.setattr(suite, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(suite, "cpu_capability", lambda: "AVX2")
    assert suite.bf16_skip_reason("cuda") is None
    assert suite.bf16_skip_reason("cpu") == (None if native else _AVX2_BF16_SKIP)


@pytest.mark.parametrize("bf16_skipped", [True, False])
def test_report_of_a_synthetic_run(tmp_path, bf16_skipped):
    results = _synthetic_results(bf16_skipped)
    path = write_report(results, tmp_path, "efficiency_smoke")
    report = path.read_text()
    assert path.name == "REPORT_smoke.md"
    assert "- machine: Test CPU, 2 cores, 1 torch threads" in report
    assert "| 2048 | 1 | 256 | 512 | fp32 | 100.0 [100.0, 100.0] n=2 | 90.0 | 90% |  |" in report
    assert "| attention | fwd_bwd | 4096 | stopped: oom |" in report
    assert "| lact/fwd | 1.00 |  |" in report
    assert "| lact | 128 | 10.0 | 10.0 | 12.0 | 20.0 | 128.00 | 0 | 0.0 |" in report
    if bf16_skipped:
        assert "CPU capability AVX2, no native bf16 (bf16 is emulated)" in report
        assert "bf16 rows skipped: CPU capability" in report and "| bf16 |" not in report
        assert "| skipped: no native bf16 | n/a |" in report
    else:
        assert "bf16 GEMM 400 GFLOP/s" in report and "| 2.00x |" in report and "**no**" in report
    for png in ("op", "layer", "decode", "stream"):
        assert (tmp_path / f"efficiency_smoke_{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_committed_report_renders_from_its_json():
    """The committed run (older fields only: no CPU features, per-run timing) still renders to its report."""
    results = json.loads((COMMITTED / "efficiency.json").read_text())
    plots = {
        "op": "efficiency_op.png",
        "layer": "efficiency_layer.png",
        "decode": "efficiency_decode.png",
        "stream": "efficiency_stream.png",
    }
    # the op's side-by-side runs saved beside it (the official loop, torch.compile) follow the suite's sections
    assert render(results, plots) + render_companions(COMMITTED) == (COMMITTED / "REPORT.md").read_text()
    companions = render_companions(COMMITTED)
    assert "## The op against the official LaCT loop" in companions
    # one section per saved run of each kind (several CPU kinds)
    for path in [*COMMITTED.glob("lact_op_compare*.json"), *COMMITTED.glob("lact_op_compile_cpu*.json")]:
        assert f"(`{path.name}`)" in companions
    assert companions.count("## `torch.compile` of the op on the CPU") == len(
        list(COMMITTED.glob("lact_op_compile_cpu*.json"))
    )


def test_report_script_regenerates_next_to_the_json(tmp_path):
    (tmp_path / "efficiency_quick.json").write_text(json.dumps(_synthetic_results(bf16_skipped=True)))
    script = runpy.run_path(str(ROOT / "eval" / "efficiency" / "report.py"))  # a script, not a module
    assert script["main"]([str(tmp_path / "efficiency_quick.json")]) == tmp_path / "REPORT_quick.md"
    assert (tmp_path / "efficiency_quick_layer.png").exists()


@pytest.mark.slow
def test_worker_process_records_out_of_memory_and_keeps_earlier_points():
    # A subprocess is the point: the worker runs under an address-space cap, so an allocation too large
    # for it fails inside the worker and is recorded, while the parent and the smaller points survive.
    # At T = 2**20 the inputs (x and its grad-tracking copy, 256 MiB each) fit under the 0.75 GiB cap and
    # the mixer's first projection (q, k, v: 768 MiB) does not.
    job = {
        "kind": "layer",
        "device": "cpu",
        "threads": 1,
        "preset": "tiny",
        "mixer": "sliding_window",
        "Ts": [128, 2**20],
        "modes": ["fwd"],
        "budget_s": 0.05,
        "point_cap_s": 1e9,
        "mem_cap_gb": 0.75,
    }
    res = run_job(job, timeout_s=300)
    assert res["status"] == "ok", res["status"]
    small, big = res["records"]
    assert small["T"] == 128 and small["median_s"] > 0
    assert big["T"] == 2**20 and big["stopped"] == "oom", big
