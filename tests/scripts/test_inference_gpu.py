"""The GPU half-precision inference check (``modeling_lact_audio.benchmarks.inference_gpu``) on the CPU."""

import json

import numpy as np
import pytest

from modeling_lact_audio.benchmarks import inference_gpu


def test_dry_run_compares_every_precision_with_fp32(tmp_path):
    record = inference_gpu.main(["--dry-run", "--output", str(tmp_path)])
    assert json.loads((tmp_path / "inference_gpu.json").read_text()) == record
    fp32 = record["precisions"]["fp32"]
    assert fp32["max_relative_logit_error"] == 0 and fp32["transcripts_equal_to_fp32"] == record["recordings"]
    for name in ("bf16", "fp16"):
        entry = record["precisions"][name]
        assert entry["finite"] and 0 < entry["max_relative_logit_error"] < 0.05  # rounded, not broken
        assert entry["rtf"] > 0


def test_recordings_file_and_errors(tmp_path):
    path = tmp_path / "speech.npz"
    np.savez(path, texts=np.array(["a b", "c"]), audio_1=np.ones(5), audio_0=np.zeros(3), other=np.ones(2))
    audio, texts = inference_gpu.load_recordings(path)
    assert [a.size for a in audio] == [3, 5] and texts == ["a b", "c"]  # numeric order of audio_<i>
    assert all(a.dtype == np.float32 for a in audio)
    with pytest.raises(FileNotFoundError, match="no recordings file"):
        inference_gpu.load_recordings(tmp_path / "missing.npz")
    np.savez(tmp_path / "empty.npz", texts=np.array(["x"]))
    with pytest.raises(ValueError, match="no audio_<i> arrays"):
        inference_gpu.load_recordings(tmp_path / "empty.npz")


def test_character_error_rate_is_edit_distance_over_reference_length():
    assert inference_gpu.character_error_rate(["abc", "xy"], ["abd", "xyz"]) == pytest.approx(2 / 6)
    assert inference_gpu.character_error_rate([""], [""]) == 0
