"""run_scripts/demo.py: the shipped checkpoint, offline through ``asr.Transcriber`` and streamed, on a tiny corpus."""

import runpy
import sys
from pathlib import Path

import pytest

from modeling_lact_audio.corpus.build import build

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "run_scripts" / "demo.py"
CHECKPOINT = ROOT / "model_cards" / "checkpoints" / "lact_small_ctc"
RECOGNISER = ROOT / "model_cards" / "checkpoints" / "lact_whisper_ctc"


def test_demo_runs_without_path_edits(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["demo.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(DEMO), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--checkpoint" in out and "--recogniser" in out


@pytest.mark.slow
def test_shipped_checkpoint_streamed_equals_offline(tmp_path, capsys):
    build(str(tmp_path / "corpus"), seed=0, tiny=True, workers=1, progress=False)
    # run_path without run_name="__main__" defines the demo's functions without running main().
    demo = runpy.run_path(str(DEMO))
    results = demo["transcribe_shipped"](CHECKPOINT, tmp_path / "corpus", count=2)
    assert [r["split"] for r in results] == ["test_unseen_speakers"] * 2 + ["test_real"] * 2
    for r in results:
        # A stream fed one LaCT chunk at a time is the same computation as one offline call.
        assert r["offline"] and r["streamed"] == r["offline"], r
        assert len(r["latencies"]) >= 1 and min(r["latencies"]) > 0
    assert capsys.readouterr().out.count("streamed == offline: True") == 4


@pytest.mark.slow
def test_shipped_recogniser_transcribes_real_speech_greedy_with_its_lm_and_jointly(tmp_path, capsys):
    build(str(tmp_path / "corpus"), seed=0, tiny=True, workers=1, progress=False)
    demo = runpy.run_path(str(DEMO))
    scores = demo["transcribe_real_speech"](RECOGNISER, tmp_path / "corpus", count=3)
    assert all(scores[mode]["utterances"] == 3 for mode in ("greedy", "lm", "joint"))
    for score in scores.values():
        low, high = score["wer_ci"]
        assert low <= score["wer"] <= high
    out = capsys.readouterr().out
    assert "greedy: WER" in out and "lm    : WER" in out and "joint : WER" in out
