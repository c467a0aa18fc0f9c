"""``run_scripts/add_attention_decoder.py`` (ship Whisper's decoder, tune the CTC weight on non-test splits) and
``eval/recogniser_joint_eval.py`` (the joint system on test splits beside kept systems) on a tiny corpus."""

import json
import os
from pathlib import Path

import datasets
import pytest
import soundfile

from modeling_lact_audio.asr import load_whisper
from tests.recogniser_heads import save_tiny_whisper_recogniser
from tests.script_utils import load_script

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED_WHISPER = Path(os.environ.get("LACT_WHISPER_HF", Path.home() / ".cache/lact-audio/whisper-tiny.en-hf"))
SPEECH = ROOT / "eval/results/audio_tokenizer/examples/test_real-000533__original.wav"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PRETRAINED_WHISPER / "model.safetensors").exists(),
        reason="no converted Whisper folder (`make whisper-baseline` writes one; or set LACT_WHISPER_HF)",
    ),
]


def _split(n: int, offset: int) -> datasets.Dataset:
    audio, _ = soundfile.read(SPEECH, dtype="float32")
    pieces = [audio[: len(audio) * (i + 1) // n] for i in range(n)]
    rows = {
        "uid": [f"u{offset + i}" for i in range(n)],
        "audio": [{"array": p, "sampling_rate": 16000} for p in pieces],
        "text": ["an example sentence"] * n,
        "speaker": ["s0"] * n,
        "duration": [len(p) / 16000 for p in pieces],
    }
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=16000))


def test_tune_ship_and_evaluate_joint_decoding(tmp_path):
    corpus = tmp_path / "corpus"
    datasets.DatasetDict(
        {"validation": _split(2, 0), "train_real": _split(2, 10), "test_real": _split(2, 20)}
    ).save_to_disk(corpus)
    whisper = load_whisper(str(PRETRAINED_WHISPER)).eval()
    folder = save_tiny_whisper_recogniser(
        tmp_path / "recogniser", whisper, ROOT / "model_cards/checkpoints/lact_whisper_ctc"
    )
    add = load_script(ROOT / "run_scripts" / "add_attention_decoder.py")
    common = ["--folder", str(folder), "--whisper", str(PRETRAINED_WHISPER), "--corpus", str(corpus)]
    with pytest.raises(SystemExit, match="never tuned on"):
        add.main([*common, "--tune-splits", "validation", "test_real"])
    settings = add.main([*common, "--tune-rows", "2", "--ctc-weights", "0.0", "0.6", "--num-beams", "2"])
    stored = json.loads((folder / "attention_decoder" / "joint_config.json").read_text())
    grid = stored["tuning"]["grid"]
    assert [g["ctc_weight"] for g in grid] == [0.0, 0.6] and stored["tuning"]["sets"] == {
        "validation": 2,
        "train_real": 2,
    }
    for g in grid:  # the objective is the plain mean of the two sets' WERs
        assert g["mean_wer"] == pytest.approx((g["validation"]["wer"] + g["train_real"]["wer"]) / 2)
    assert (
        stored["ctc_weight"]
        == settings["ctc_weight"]
        == min(grid, key=lambda g: (g["mean_wer"], g["ctc_weight"]))["ctc_weight"]
    )
    assert stored["num_beams"] == 2

    evaluate = load_script(ROOT / "eval" / "recogniser_joint_eval.py")
    common_eval = ["--folder", str(folder), "--corpus", str(corpus), "--splits", "test_real", "--rows", "2"]
    results = evaluate.main([*common_eval, "--output", str(tmp_path / "out")])
    name = results["reference_system"]
    entry = results["systems"][name]["splits"]["test_real"]
    assert entry["utterances"] == 2 and 0 <= entry["cer"] and results["uids"]["test_real"] == ["u20", "u21"]
    transcripts = json.loads((tmp_path / "out" / "transcripts.json").read_text())
    assert transcripts["settings"]["ctc_weight"] == stored["ctc_weight"]
    assert (
        transcripts["splits"]["test_real"]["uids"] == ["u20", "u21"]
        and len(transcripts["splits"]["test_real"]["texts"]) == 2
    )
    card = tmp_path / "README.md"
    card.write_text("# card\n\nintro\n\n## Training\n\nsteps\n")
    evaluate.main([*common_eval, "--output", str(tmp_path / "out3"), "--card", str(card)])
    once = card.read_text()
    evaluate.main([*common_eval, "--output", str(tmp_path / "out3"), "--card", str(card)])
    # Replaced, not added again; the second run reuses the saved transcripts (and their time), so nothing changes.
    twice = card.read_text()
    assert twice == once and once.count("joint-decoding:begin") == 1
    assert twice.startswith("# card\n\nintro\n") and twice.endswith("## Training\n\nsteps\n")
    assert once.index("Joint CTC / attention decoding") < once.index("## Training") and "Untuned" not in once
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert (
        name in report and f"weight {stored['ctc_weight']:g}" in report and (tmp_path / "out" / "results.png").exists()
    )
    # Systems kept from another evaluation must be on the same utterances.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**results, "uids": {"test_real": ["x", "y"]}}))
    with pytest.raises(ValueError, match="same utterances"):
        evaluate.main([*common_eval, "--output", str(tmp_path / "out2"), "--keep-from", str(other), "--keep", name])
