"""`eval/asr_eval.py`: error counts, bootstrap intervals, and the whole run on a tiny corpus and model."""

import importlib.util
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.asr import per_utterance_errors
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor


def _load_script(path: Path):
    """The script as a module, without putting eval/ on sys.path."""
    spec = importlib.util.spec_from_file_location("asr_eval_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


asr_eval = _load_script(Path(__file__).resolve().parents[2] / "eval" / "asr_eval.py")


def test_per_utterance_errors_counts_edits_and_reference_lengths():
    counts = per_utterance_errors(["a b c", "hello"], ["a x c d", "hello"])
    assert counts["word_errors"].tolist() == [2, 0]  # one substitution, one insertion
    assert counts["words"].tolist() == [3, 1]
    assert counts["chars"].tolist() == [5, 5]
    assert counts["char_errors"].tolist()[1] == 0


def test_bootstrap_interval_contains_the_rate_and_collapses_when_every_utterance_agrees():
    errors, totals = np.full(50, 2), np.full(50, 10)
    assert asr_eval.bootstrap_ci(errors, totals) == pytest.approx((0.2, 0.2))
    rng = np.random.default_rng(0)
    errors, totals = rng.integers(0, 10, 200), np.full(200, 10)
    low, high = asr_eval.bootstrap_ci(errors, totals)
    rate = errors.sum() / totals.sum()
    assert low < rate < high and high - low < 0.1
    # the standard error of a mean of 200 rates, times 2 x 1.96, is about the interval's width
    assert (high - low) == pytest.approx(2 * 1.96 * (errors / 10).std() / np.sqrt(200), rel=0.25)
    assert all(np.isnan(asr_eval.bootstrap_ci(np.array([]), np.array([]))))


def _wav(seconds, freq):
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_eval")
    texts = ["hello world", "a test", "more words here"]
    split = datasets.Dataset.from_dict(
        {"audio": [_wav(0.8 + 0.3 * i, 200 + 50 * i) for i in range(3)], "text": texts}
    ).cast_column("audio", datasets.Audio(sampling_rate=16000))
    datasets.DatasetDict({"test_seen": split, "test_real": split.select([0, 1])}).save_to_disk(root / "corpus")
    tokenizer = LaCTCTCTokenizer.from_texts(texts)
    folder = root / "run" / "best"
    torch.manual_seed(0)
    model = LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size))
    model.save_pretrained(folder)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    log = [{"step": s, "loss": 3.0 - s / 10} for s in range(1, 6)] + [{"step": 5, "eval": {"wer": 1.0, "cer": 0.8}}]
    (root / "run" / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log))
    return root, folder


def test_main_scores_every_split_and_writes_json_table_and_plot(tiny_run):
    root, folder = tiny_run
    out = root / "out"
    results = asr_eval.main(
        ["--models", f"tiny={folder}", "--corpus", str(root / "corpus"), "--splits", "test_seen", "test_real",
         "--bootstrap", "200", "--output_dir", str(out)]
    )
    entry = results["tiny"]
    assert entry["kind"] == "ctc" and entry["num_parameters"] > 0
    assert set(entry["splits"]) == {"test_seen", "test_real"}
    seen = entry["splits"]["test_seen"]
    assert seen["examples"] == 3 and seen["audio_seconds"] == pytest.approx(0.8 + 1.1 + 1.4)
    for metric in ("wer", "cer"):
        low, high = seen[f"{metric}_ci95"]
        assert low <= seen[metric] <= high
    assert seen["rtf"] > 0
    assert json.loads((out / "results.json").read_text())["tiny"]["splits"]["test_real"]["examples"] == 2
    table = (out / "results.md").read_text()
    assert "| tiny |" in table and "test_real" in table
    assert (out / "results.png").stat().st_size > 10_000


def test_missing_split_is_a_clear_error(tiny_run):
    root, folder = tiny_run
    with pytest.raises(ValueError, match="split 'test_noise' is not in"):
        asr_eval.main(["--models", str(folder), "--corpus", str(root / "corpus"), "--splits", "test_noise",
                       "--output_dir", str(root / "out2")])
