"""The CPU torch.compile comparison of the op runs and records what it measured."""

import json

from modeling_lact_audio.benchmarks import compile_cpu


def test_compile_comparison_on_a_tiny_point(tmp_path):
    out = tmp_path / "compile.json"
    record = compile_cpu.main(
        ["--seq-len", "64", "--point", "2:16:16", "--repeats", "1", "--muon-steps", "2", "--output", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    (point,) = record["points"]
    assert point["compile_s"] > 0 and point["eager_s"] > 0 and point["compiled_s"] > 0
    assert point["speedup"] == point["eager_s"] / point["compiled_s"]
    assert point["max_abs_diff"] < 1e-3 * max(1.0, point["max_abs_output"])  # the same op, compiled
