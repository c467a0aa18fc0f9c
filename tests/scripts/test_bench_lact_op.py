"""``eval/bench_lact_op.py`` runs in-process on the smallest grid and writes a well-formed record."""

import importlib.util
import json
from pathlib import Path

import pytest

from modeling_lact_audio.cpu_features import cpu_has_native_bf16

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "bench_lact_op.py"


@pytest.mark.slow
def test_quick_run_writes_records_and_skips_bf16_without_native_support(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_lact_op_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(["--quick", "--budget", "0.05", "--output-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "lact_op_quick.json").read_text())
    assert saved["records"] and all(r["gflops"] > 0 for r in saved["records"])
    assert {r["dtype"] for r in out["records"]} == ({"fp32", "bf16"} if cpu_has_native_bf16() else {"fp32"})
    assert saved["machine"]["capability"] and saved["reference_vs_chunked"]["speedup"] > 0
    assert (tmp_path / "lact_op_quick.png").stat().st_size > 0
