"""Session recordings cached one row per utterance segment (cache_session_segments, cache_encoder_states --sessions)."""

import importlib.util
import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from modeling_lact_audio.data import SAMPLING_RATE, read_audio
from modeling_lact_audio.recogniser.encoder_cache import (
    cache_session_segments,
    cache_split,
    encode_waveforms,
    load_whisper_encoder,
)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [["a cat sat", "the dog ran", "hello there"], ["one more word", "two words", "and the last one"]]
# seconds of each segment, with silence around and between them
STARTS = [[0.5, 1.3, 2.25], [0.5, 1.05, 1.9]]
ENDS = [[1.0, 1.9, 2.8], [0.85, 1.6, 2.6]]
LENGTHS = [3.3, 3.1]


def _session_audio(i: int) -> dict:
    """A recording with a tone in each segment and silence elsewhere, as a WAV cell."""
    audio = np.zeros(int(LENGTHS[i] * SAMPLING_RATE), dtype=np.float32)
    for k, (start, end) in enumerate(zip(STARTS[i], ENDS[i])):
        a, b = round(start * SAMPLING_RATE), round(end * SAMPLING_RATE)
        t = np.arange(b - a) / SAMPLING_RATE
        audio[a:b] = 0.3 * np.sin(2 * np.pi * (150 + 60 * k + 25 * i) * t)
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLING_RATE, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


def _sessions() -> datasets.Dataset:
    rows = {
        "audio": [_session_audio(i) for i in range(2)],
        "uid": ["sessions_test_seen-0000", "sessions_test_seen-0001"],
        "text": [" ".join(t) for t in TEXTS],
        "speaker": ["espeak:en-gb+f4", "flite:slt"],
        "engine": ["espeak", "flite"],
        "accent": ["en-gb", "en-us"],
        "condition": ["clean", "clean"],
        "snr_db": [None, None],
        "domain": ["fortunes", "fortunes"],
        "session_id": ["sessions_test_seen-0000", "sessions_test_seen-0001"],
        "utterance_index": [0, 0],
        "duration": LENGTHS,
        "segment_starts": STARTS,
        "segment_ends": ENDS,
        "segment_texts": TEXTS,
    }
    features = datasets.Features(
        {
            "audio": datasets.Audio(sampling_rate=SAMPLING_RATE),
            **{c: datasets.Value("string") for c in ("uid", "text", "speaker", "engine", "accent", "condition")},
            "snr_db": datasets.Value("float32"),
            "domain": datasets.Value("string"),
            "session_id": datasets.Value("string"),
            "utterance_index": datasets.Value("int32"),
            "duration": datasets.Value("float64"),
            "segment_starts": datasets.List(datasets.Value("float64")),
            "segment_ends": datasets.List(datasets.Value("float64")),
            "segment_texts": datasets.List(datasets.Value("string")),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def corpus_and_whisper(tmp_path_factory):
    """A tiny corpus with a 2-session split (3 segments each) and a tiny random Whisper folder."""
    root = tmp_path_factory.mktemp("sessions")
    sessions = _sessions()
    datasets.DatasetDict({"sessions_test_seen": sessions, "train": sessions.select([0])}).save_to_disk(root / "corpus")
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
    WhisperForConditionalGeneration(config).save_pretrained(root / "whisper")
    WhisperFeatureExtractor().save_pretrained(root / "whisper")
    return root / "corpus", root / "whisper"


def test_each_segment_becomes_one_row(corpus_and_whisper, tmp_path):
    corpus, whisper = corpus_and_whisper
    encoder, fe = load_whisper_encoder(str(whisper))
    out = cache_session_segments(str(corpus), "sessions_test_seen", str(tmp_path), encoder, fe, batch_size=2)
    assert len(out) == 6
    assert out["uid"] == [f"sessions_test_seen-000{i}/{k}" for i in range(2) for k in range(3)]
    assert out["session_id"] == ["sessions_test_seen-0000"] * 3 + ["sessions_test_seen-0001"] * 3
    assert out["utterance_index"] == [0, 1, 2, 0, 1, 2]
    assert out["text"] == TEXTS[0] + TEXTS[1]
    assert out["speaker"] == ["espeak:en-gb+f4"] * 3 + ["flite:slt"] * 3
    assert out["engine"] == ["espeak"] * 3 + ["flite"] * 3 and out["accent"][3] == "en-us"
    assert out["condition"] == ["clean"] * 6 and out["domain"] == ["fortunes"] * 6
    want = [e - s for i in range(2) for s, e in zip(STARTS[i], ENDS[i])]
    np.testing.assert_allclose(out["duration"], want, atol=1 / SAMPLING_RATE)
    info = json.loads((tmp_path / "sessions_test_seen" / "cache_info.json").read_text())
    assert info["segments"] is True and info["max_sessions"] is None and info["split"] == "sessions_test_seen"

    # each segment's states are those of its audio encoded alone (float16 storage)
    recordings = [read_audio(cell) for cell in _sessions().cast_column("audio", datasets.Audio(decode=False))["audio"]]
    assert out.features["states"].dtype == "float16"
    out = out.with_format("numpy")
    for row, (i, k) in enumerate((i, k) for i in range(2) for k in range(3)):
        a, b = round(STARTS[i][k] * SAMPLING_RATE), round(ENDS[i][k] * SAMPLING_RATE)
        (alone,) = encode_waveforms(encoder, fe, [recordings[i][a:b]])
        states = out[row]["states"]
        assert states.shape == alone.shape and alone.shape[1] == 16
        np.testing.assert_allclose(states.astype(np.float32), alone, rtol=2e-3, atol=2e-3)


def test_cache_reuse_and_the_utterance_cache_of_the_same_split(corpus_and_whisper, tmp_path):
    corpus, whisper = corpus_and_whisper
    encoder, fe = load_whisper_encoder(str(whisper))
    first = cache_session_segments(str(corpus), "sessions_test_seen", str(tmp_path), encoder, fe, max_sessions=1)
    assert len(first) == 3 and len(set(first["session_id"])) == 1
    # a complete cache with the same record is reused without touching the encoder
    again = cache_session_segments(str(corpus), "sessions_test_seen", str(tmp_path), None, None, max_sessions=1)
    assert again["uid"] == first["uid"]
    # the whole-recording cache of the same split is another cache: never reused for segments, nor back
    whole = cache_split(str(corpus), "sessions_test_seen", str(tmp_path), encoder, fe)
    assert len(whole) == 2
    segments = cache_session_segments(str(corpus), "sessions_test_seen", str(tmp_path), encoder, fe)
    assert len(segments) == 6


def test_bad_splits_and_segments_are_refused(corpus_and_whisper, tmp_path):
    corpus, whisper = corpus_and_whisper
    encoder, fe = load_whisper_encoder(str(whisper))
    plain = tmp_path / "plain"
    datasets.DatasetDict({"test": _sessions().remove_columns(["segment_starts"])}).save_to_disk(plain)
    with pytest.raises(ValueError, match=r"not a session split: it lacks \['segment_starts'\]"):
        cache_session_segments(str(plain), "test", str(tmp_path / "c"), encoder, fe)
    broken = tmp_path / "broken"
    rows = _sessions().to_dict()
    rows["segment_starts"][1] = [0.5, 1.05, 4.0]  # after the end of the 3.1 s recording
    rows["segment_ends"][1] = [0.85, 1.6, 9.0]
    datasets.DatasetDict({"s": datasets.Dataset.from_dict(rows, features=_sessions().features)}).save_to_disk(broken)
    with pytest.raises(ValueError, match=r"sessions_test_seen-0001', segment 2: \[4.0, 9.0\] s is not a segment"):
        cache_session_segments(str(broken), "s", str(tmp_path / "c"), encoder, fe)
    rows = _sessions().to_dict()
    rows["segment_texts"][0] = ["a cat sat", "the dog ran"]
    datasets.DatasetDict({"s": datasets.Dataset.from_dict(rows, features=_sessions().features)}).save_to_disk(broken)
    with pytest.raises(ValueError, match="one entry per segment, got 3, 3, 2"):
        cache_session_segments(str(broken), "s", str(tmp_path / "c"), encoder, fe)


def test_script_caches_session_splits(corpus_and_whisper, tmp_path):
    corpus, whisper = corpus_and_whisper
    spec = importlib.util.spec_from_file_location(
        "cache_encoder_states_script", ROOT / "run_scripts/cache_encoder_states.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    common = ["--corpus", str(corpus), "--whisper", str(whisper), "--cache", str(tmp_path), "--threads", "1"]
    assert script.main([*common, "--splits", "sessions_test_seen", "--sessions"]) == {"sessions_test_seen": 6}
    assert script.main([*common, "--splits", "sessions_test_seen", "train", "--sessions", "--rows", "1"]) == {
        "sessions_test_seen": 3,
        "train": 3,
    }
    cached = datasets.load_from_disk(str(tmp_path / "train"))
    assert cached["uid"] == [f"sessions_test_seen-0000/{k}" for k in range(3)]
    assert json.loads((tmp_path / "sessions_test_seen" / "cache_info.json").read_text())["max_sessions"] == 1


def test_a_subset_cache_grows_by_encoding_only_the_new_rows(corpus_and_whisper, tmp_path):
    _, whisper = corpus_and_whisper
    encoder, fe = load_whisper_encoder(str(whisper))
    sessions = _sessions()
    rows = datasets.concatenate_datasets([sessions, sessions, sessions]).remove_columns(
        ["segment_starts", "segment_ends", "segment_texts"]
    )
    rows = rows.map(lambda row, i: {"uid": f"train-{i:04d}"}, with_indices=True)
    datasets.DatasetDict({"train": rows}).save_to_disk(tmp_path / "corpus")
    corpus = str(tmp_path / "corpus")
    encoded = []
    hook = encoder.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
    small = cache_split(corpus, "train", str(tmp_path / "grown"), encoder, fe, max_rows=2)
    grown = cache_split(corpus, "train", str(tmp_path / "grown"), encoder, fe, max_rows=4)
    assert sum(encoded) == 4  # 2 rows, then only the 2 new ones
    assert grown["uid"][:2] == small["uid"]
    fresh = cache_split(corpus, "train", str(tmp_path / "fresh"), encoder, fe, max_rows=4)
    assert grown["uid"] == fresh["uid"]
    for a, b in zip(grown["states"], fresh["states"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the whole split comes unshuffled, so it does not start with the subset: everything is encoded again
    encoded.clear()
    whole = cache_split(corpus, "train", str(tmp_path / "grown"), encoder, fe)
    assert sum(encoded) == 6 and whole["uid"] == rows["uid"]
    # asking for at least as many rows as the split has is the whole split: the cache is reused as it is
    encoded.clear()
    again = cache_split(corpus, "train", str(tmp_path / "grown"), encoder, fe, max_rows=len(rows) + 3)
    assert sum(encoded) == 0 and again["uid"] == rows["uid"]
    # and a whole-split cache does not stand in for a real subset
    subset = cache_split(corpus, "train", str(tmp_path / "grown"), encoder, fe, max_rows=2)
    assert sum(encoded) == 2 and subset["uid"] == small["uid"]
    hook.remove()
