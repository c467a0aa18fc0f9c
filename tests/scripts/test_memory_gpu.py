"""The GPU memory check (``modeling_lact_audio.benchmarks.memory_gpu``) end to end on the CPU (``--dry-run``)."""

import argparse
import json

import pytest
import torch

from modeling_lact_audio.benchmarks import memory_gpu


def test_dry_run_measures_and_writes_both_checkpointing_modes(tmp_path):
    records = memory_gpu.main(["--dry-run", "--output", str(tmp_path)])
    assert [r["gradient_checkpointing"] for r in records] == [False, True]
    for r in records:
        assert r["measured_bytes"] > r["measured_state_bytes"] > 0
        assert 0.85 < r["ratio"] < 1.15, r  # the CPU plan is checked to 15% (eval/memory_check.py)
    # checkpointing saves less for backward: both the estimate and the measurement say so
    assert records[1]["measured_bytes"] < records[0]["measured_bytes"]
    assert records[1]["estimate_bytes"] < records[0]["estimate_bytes"]
    assert json.loads((tmp_path / "memory_gpu.json").read_text()) == records
    table = (tmp_path / "MEMORY_GPU.md").read_text()
    assert table.count("| tiny | ctc | 2 |") == 2
    # a second call keeps the points measured and adds none twice
    assert memory_gpu.main(["--dry-run", "--output", str(tmp_path)]) == records


def test_points_are_parsed_and_bad_ones_refused():
    assert memory_gpu.parse_point("base:30") == ("base", 30.0)
    for bad in ("base", "huge:3", "base:-1", "base:x"):
        with pytest.raises(argparse.ArgumentTypeError):
            memory_gpu.parse_point(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_without_cuda_it_says_to_use_dry_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        memory_gpu.main(["--point", "base:3", "--output", str(tmp_path)])
    assert "--dry-run" in capsys.readouterr().err
