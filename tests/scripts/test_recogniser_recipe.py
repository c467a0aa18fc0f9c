"""The recogniser recipe end to end on a tiny corpus and a tiny random Whisper: cache, train, evaluate."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from tests.script_utils import load_script

ROOT = Path(__file__).resolve().parents[2]


def _wav(seconds: float, freq: float) -> dict:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


def _split(n: int, offset: int) -> datasets.Dataset:
    texts = ["a cat sat", "the dog ran", "hello there", "one more word"]
    rows = {
        "uid": [f"u{offset + i}" for i in range(n)],
        "audio": [_wav(0.4 + 0.1 * (i % 3), 150 + 40 * i) for i in range(n)],
        "text": [texts[i % 4] for i in range(n)],
        "speaker": [f"s{i % 2}" for i in range(n)],
        "duration": [0.4 + 0.1 * (i % 3) for i in range(n)],
    }
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=16000))


@pytest.mark.slow
def test_cache_train_and_evaluate_on_a_tiny_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    datasets.DatasetDict(
        {
            "train": _split(12, 0),
            "validation": _split(4, 100),
            "test_seen": _split(4, 200),
            "train_real": _split(3, 300),
        }
    ).save_to_disk(corpus)
    whisper = tmp_path / "whisper"
    config = WhisperConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperForConditionalGeneration(config).save_pretrained(whisper)
    WhisperFeatureExtractor().save_pretrained(whisper)
    cache, out = tmp_path / "cache", tmp_path / "lact"
    train = load_script(ROOT / "run_scripts" / "train_recogniser.py")
    common = [
        "--corpus",
        str(corpus),
        "--whisper",
        str(whisper),
        "--cache",
        str(cache),
        "--max-steps",
        "3",
        "--eval-every",
        "3",
        "--save-every",
        "2",
        "--batch-frames",
        "400",
        "--max-utterances",
        "3",
        "--warmup-steps",
        "1",
        "--threads",
        "1",
    ]
    log = train.main([*common, "--model", "lact", "--output", str(out), "--validation-rows", "4"])
    assert log["carry_state"] and len(log["history"]) == 3 and log["best"] is not None
    assert json.loads((cache / "train" / "cache_info.json").read_text())["split"] == "train"
    # resuming a finished run changes nothing and trains no further step
    again = train.main([*common, "--model", "lact", "--output", str(out), "--validation-rows", "4"])
    assert again["history"] == log["history"]
    # --extra-train-split adds a training split whole, each copy with its own speakers
    bilstm = train.main(
        [*common, "--model", "bilstm", "--output", str(tmp_path / "bilstm"), "--validation-rows", "4"]
        + ["--extra-train-split", "train_real:2"]
    )
    assert bilstm["args"]["extra"]["train_rows"] == 12 + 2 * 3
    assert bilstm["args"]["extra"]["extra_train_splits"] == ["train_real:2"]
    assert json.loads((cache / "train_real" / "cache_info.json").read_text())["split"] == "train_real"
    from modeling_lact_audio.processors import LaCTCTCTokenizer
    from modeling_lact_audio.recogniser.encoder_cache import load_whisper_encoder

    tokenizer = LaCTCTCTokenizer.from_texts(["a cat sat", "the dog ran", "hello there", "one more word"])
    copies = train.extra_training_rows(
        str(corpus), "train_real:2", str(cache), *load_whisper_encoder(str(whisper)), "whisper", tokenizer
    )
    assert copies["speaker"] == ["s0#0", "s1#0", "s0#0", "s0#1", "s1#1", "s0#1"]
    with pytest.raises(SystemExit, match="outside the train split's alphabet"):
        train.extra_training_rows(
            str(corpus),
            "train_real",
            str(cache),
            *load_whisper_encoder(str(whisper)),
            "whisper",
            LaCTCTCTokenizer.from_texts(["a cat"]),
        )
    with pytest.raises(SystemExit, match="only a training split"):
        train.main([*common, "--output", str(tmp_path / "never"), "--extra-train-split", "test_seen"])
    # --window-size reaches the head's config (0: the fast weights are the lact head's only token mixing)
    # and --carried-read-fraction reaches the run (each later utterance also read with the carried state alone)
    window0 = tmp_path / "window0"
    log0 = train.main(
        [*common, "--model", "lact", "--window-size", "0", "--carried-read-fraction", "1.0"]
        + ["--output", str(window0), "--validation-rows", "4"]
    )
    assert json.loads((window0 / "best" / "config.json").read_text())["window_size"] == 0
    assert log0["args"]["carried_read_fraction"] == 1.0 and log["args"]["carried_read_fraction"] == 0.0
    assert json.loads((out / "best" / "config.json").read_text())["window_size"] == 32

    assert not (cache / "test_seen").exists()  # the evaluation encodes the test split it needs
    lm = load_script(ROOT / "run_scripts" / "build_language_model.py")
    lm_folder = lm.main(["--corpus", str(corpus), "--vocab-from", str(out / "best"), "--output", str(tmp_path)])
    evaluate = load_script(ROOT / "eval" / "recogniser_eval.py")
    results = evaluate.main(
        [
            "--head",
            f"lact={out / 'best'}",
            "--head",
            f"bilstm={tmp_path / 'bilstm' / 'best'}",
            "--cache",
            str(cache),
            "--corpus",
            str(corpus),
            "--splits",
            "test_seen",
            "--rows",
            "4",
            "--lm",
            str(lm_folder),
            "--validation-rows",
            "4",
            "--whisper",
            str(whisper),
            "--no-zero-shot",
            "--reference",
            "lact",
            "--output",
            str(tmp_path / "eval"),
        ]
    )
    assert json.loads((cache / "test_seen" / "cache_info.json").read_text())["max_rows"] == 4
    assert set(results["systems"]) == {"lact", "lact + LM", "bilstm", "bilstm + LM"}
    for system in results["systems"].values():
        entry = system["splits"]["test_seen"]
        assert entry["utterances"] == 4 and entry["wer_ci"][0] <= entry["wer"] <= entry["wer_ci"][1]
    assert 0 <= results["systems"]["bilstm"]["splits"]["test_seen"]["p_vs_reference"] <= 1
    assert (tmp_path / "eval" / "REPORT.md").read_text().count("| lact |") >= 2
    assert (tmp_path / "eval" / "results.png").stat().st_size > 0
    assert results["systems"]["lact"]["train_steps"] == log["args"]["max_steps"]
    # a later evaluation keeps the BiLSTM rows of this one (same utterances), renamed, without its head
    later = evaluate.main(
        [
            *["--head", f"lact={out / 'best'}", "--cache", str(cache), "--corpus", str(corpus)],
            *["--splits", "test_seen", "--rows", "4", "--whisper", str(whisper), "--no-zero-shot"],
            *["--reference", "lact", "--output", str(tmp_path / "eval2")],
            *["--keep-from", str(tmp_path / "eval" / "results.json"), "--keep", "bilstm=bilstm (earlier)"],
        ]
    )
    assert set(later["systems"]) == {"lact", "bilstm (earlier)"}
    kept = later["systems"]["bilstm (earlier)"]
    assert kept["kept_from"] == results["command"] and "p_vs_reference" in kept["splits"]["test_seen"]
    assert "| bilstm (earlier) (kept) |" in (tmp_path / "eval2" / "REPORT.md").read_text()
