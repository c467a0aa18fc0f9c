"""The ablation options' device check (benchmarks.ablation_cost) on the CPU with tiny shapes."""

import json

import torch

from modeling_lact_audio.benchmarks import ablation_cost


def test_pause_like_ends_follow_the_segment_lengths():
    ends = ablation_cost.pause_like_ends(2, 500, 40, seed=3)
    assert ends.shape == (2, 500) and ends.dtype == torch.bool
    for row in ends:
        positions = torch.nonzero(row).flatten().tolist()
        gaps = [b - a for a, b in zip([-1] + positions, positions)]
        assert all(20 <= g <= 40 for g in gaps), gaps


def test_quick_run_checks_every_option_against_the_reference(tmp_path):
    result = ablation_cost.main(["--device", "cpu", "--quick", "--budget", "0.01", "--output", str(tmp_path)])
    checks = result["checks"]
    assert len(checks) == len(ablation_cost.RULES) * len(ablation_cost.BOUNDARIES) * len(ablation_cost.ORDERS)
    for row in checks:
        assert "error" not in row, row
        assert max(row["max_rel_error"].values()) < 1e-8, row  # float64: any real difference shows
    cost = result["cost"]
    assert {(r["rule"], r["boundaries"]) for r in cost} == {
        (rule, b) for rule in ablation_cost.RULES for b in ablation_cost.BOUNDARIES
    }
    assert all(r["median_s"] > 0 and r["tokens_per_s"] > 0 for r in cost)
    saved = json.loads((tmp_path / "ablation_cost.json").read_text())
    assert saved["checks"] == checks
    assert "| adam | variable |" in (tmp_path / "ABLATION_COST.md").read_text()
