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


# A stand-in for the official ttt_operation.py (never vendored): its signature and layout, heads as the batch,
# computed by our reference loop, so that the comparison must find both outputs equal.
FAKE_OFFICIAL = """
import torch
from modeling_lact_audio.kernels import FastWeightState, lact_swiglu_reference


def block_causal_lact_swiglu(w0, w1, w2, q, k, v, lr0, lr1, lr2, chunk_size=2048, use_muon=False, momentum=None):
    assert not use_muon and momentum is None
    seq = lambda x: x.transpose(0, 1)[None]  # [BH, T, D] -> [1, T, BH, D]
    state = FastWeightState.from_weights(w0[None], w1[None], w2[None])
    lr = seq(torch.cat([lr0, lr1, lr2], dim=-1))
    o, _ = lact_swiglu_reference(seq(q), seq(k), seq(v), lr, state, chunk_size=chunk_size, muon_steps=0)
    return o[0].transpose(0, 1) * SCALE
"""


def _compare(tmp_path, scale):
    official = tmp_path / "ttt_operation.py"
    official.write_text(FAKE_OFFICIAL.replace("SCALE", scale))
    spec = importlib.util.spec_from_file_location("bench_lact_op_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--compare", str(official), "--seq-len", "40", "--points", "2x8x16,1x12x8", "--repeats", "2"]
    return script.main([*args, "--threads", "1", "--clock", "cpu", "--output-dir", str(tmp_path)])


def test_compare_times_both_ops_and_checks_their_outputs_agree(tmp_path):
    record = _compare(tmp_path, "1.0")
    saved = json.loads((tmp_path / "lact_op_compare.json").read_text())
    assert [(p["H"], p["D"], p["chunk"]) for p in saved["points"]] == [(2, 8, 16), (1, 12, 8)]
    for p in record["points"]:
        assert p["agree"] and p["max_abs_diff"] < 1e-5
        assert p["official_s"] > 0 and p["ours_s"] > 0 and p["ours_with_state_s"] > 0
        assert p["speedup"] == pytest.approx(p["official_s"] / p["ours_s"])
    assert saved["machine"]["cpu_features"]["capability"] and saved["machine"]["threads"] == 1
    table = (tmp_path / "lact_op_compare.md").read_text()
    assert "| 2 x 8, chunk 16 |" in table and saved["machine"]["cpu"] in table


def test_compare_fails_when_the_outputs_disagree(tmp_path):
    with pytest.raises(SystemExit, match="disagree"):
        _compare(tmp_path, "1.01")
    assert "DISAGREE" in (tmp_path / "lact_op_compare.md").read_text()
