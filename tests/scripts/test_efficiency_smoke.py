"""Smoke test of the efficiency benchmark: ``--smoke`` writes a well-formed JSON, report and plots.

Runs the suite in this process (``--smoke`` runs its jobs inline); the worker processes are tested on
their own in ``test_benchmarks.py``. Speed is never asserted here (the benchmark measures it).
"""

import json

import pytest

from modeling_lact_audio.benchmarks import suite
from modeling_lact_audio.cpu_features import cpu_has_native_bf16, describe_cpu

MIXERS = {"lact", "sliding_window", "attention"}


@pytest.mark.slow
def test_efficiency_smoke_writes_json_report_and_plots(tmp_path):
    returned = suite.main(["--smoke", "--threads", "1", "--output-dir", str(tmp_path)])

    results = json.loads((tmp_path / "efficiency_smoke.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert results["mode"] == "smoke"
    machine = results["machine"]
    for key in ("cpu", "threads", "torch", "loadavg", "device"):
        assert key in machine
    assert machine["threads"] == 1
    assert machine["cpu_features"] == describe_cpu()
    for section in suite.SECTIONS:
        assert section in results, section

    op = results["op"]
    assert op["sgemm_gflops"] > 0 and op["records"]
    # bf16 rows run only where bf16 is native; elsewhere the reason is recorded and no bf16 GEMM is timed
    native = cpu_has_native_bf16()
    assert {r["dtype"] for r in op["records"]} == ({"fp32", "bf16"} if native else {"fp32"})
    assert (op["bf16_skipped"] is None) == native and (op["bf16_gemm_gflops"] is None) != native
    assert op["reference_vs_chunked"]["speedup"] > 0

    layer = results["layer"]
    assert {r["mixer"] for r in layer["records"]} == MIXERS
    for r in layer["records"]:
        assert r["mode"] in ("fwd", "fwd_bwd")
        # every point is either measured (median within its spread, a memory figure) or says why it stopped
        if "median_s" in r:
            assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
            assert r["peak_mem_bytes"] is not None and r["tokens_per_s"] > 0
        else:
            assert r["stopped"]
    assert set(layer["exponents"]) == {f"{m}/{mode}" for m in MIXERS for mode in ("fwd", "fwd_bwd")}

    model = results["model"]
    assert {(r["model"], r["mode"]) for r in model["records"]} == {
        (m, mode) for m in ("lact", "baseline") for mode in ("infer", "train")
    }
    decode = [r for r in model["decode"] if "median_s" in r]
    assert {r["model"] for r in decode} == {"lact", "baseline"}
    for r in decode:
        assert r["cache_bytes"] > 0 and r["mean_s"] > 0 and r["n"] == suite.SIZES["smoke"]["decode_steps"]

    stream = [r for r in results["stream"]["records"] if "median_s" in r]
    assert {r["chunk_ms"] for r in stream} == {80, 160}
    assert all(r["threads"] == 1 and r["rtf"] > 0 and r["algorithmic_latency_ms"] >= r["chunk_ms"] for r in stream)
    assert all(r["n"] == r["chunks"] > 0 for r in stream)

    flops = results["flops"]
    assert all(abs(c["ratio"] - 1) < 1e-6 for c in flops["check"]), flops["check"]

    bars = results["bars"]
    assert bars and all({"bar", "target", "measured", "pass"} <= set(b) for b in bars)

    report = (tmp_path / "REPORT_smoke.md").read_text()
    for heading in ("## Bars", "## Op", "## Layer", "## Model", "## Streaming", "## FLOPs"):
        assert heading in report
    assert f"CPU capability {machine['cpu_features']['capability']}" in report
    if not native:
        assert "bf16 rows skipped" in report
    for png in ("op", "layer", "decode", "stream"):
        data = (tmp_path / f"efficiency_smoke_{png}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert f"efficiency_smoke_{png}.png" in report
