"""``modeling_lact_audio.asr`` (Transcriber, scoring) and ``eval/asr_eval.py`` on a tiny corpus and model."""

import io
import json
import os
import runpy
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.asr import (
    Transcriber,
    normalize_for_scoring,
    per_utterance_errors,
    rate_interval,
    whisper_char_features,
)
from modeling_lact_audio.baselines import build_whisper
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor

ASR_EVAL = Path(__file__).resolve().parents[2] / "eval" / "asr_eval.py"
TEXTS = ["hello world", "a test", "more words here"]


def test_per_utterance_errors_counts_edits_and_reference_lengths():
    counts = per_utterance_errors(["a b c", "hello"], ["a x c d", "hello"])
    assert counts["word_errors"].tolist() == [2, 0]  # one substitution, one insertion
    assert counts["words"].tolist() == [3, 1]
    assert counts["chars"].tolist() == [5, 5]
    assert counts["char_errors"].tolist()[1] == 0


def test_bootstrap_interval_contains_the_rate_and_collapses_when_every_utterance_agrees():
    errors, totals = np.full(50, 2), np.full(50, 10)
    assert rate_interval(errors, totals) == pytest.approx((0.2, 0.2))
    rng = np.random.default_rng(0)
    errors, totals = rng.integers(0, 10, 200), np.full(200, 10)
    low, high = rate_interval(errors, totals)
    rate = errors.sum() / totals.sum()
    assert low < rate < high and high - low < 0.1
    # the standard error of a mean of 200 rates, times 2 x 1.96, is about the interval's width
    assert (high - low) == pytest.approx(2 * 1.96 * (errors / 10).std() / np.sqrt(200), rel=0.25)
    # a ratio of sums, not a mean of ratios: long utterances weigh more
    low, high = rate_interval([1, 0], [1, 9])
    assert low <= 0.1 <= high and low == 0.0
    assert rate_interval([3], [4]) == (0.75, 0.75)
    assert all(np.isnan(rate_interval(np.array([]), np.array([]))))


def test_normalize_for_scoring_matches_what_a_character_model_writes():
    assert normalize_for_scoring("Hello,  World! Don't") == "hello world don't"
    assert normalize_for_scoring("\uff21BC\u2019s") == "abc's"  # full-width letter, typographic apostrophe


def _sine(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav(seconds, freq):
    buf = io.BytesIO()
    sf.write(buf, _sine(seconds, freq), 16000, format="WAV")
    return {"bytes": buf.getvalue(), "path": None}


@torch.no_grad()
def _reference_greedy(model, input_features, max_new_tokens: int) -> list[list[int]]:
    """The hand-written greedy loop that ``generate()`` replaced: one token at a time with the KV cache,
    ids without decoder start and end of text."""
    start, eos = model.config.decoder_start_token_id, model.config.eos_token_id
    encoder_outputs = model.get_encoder()(input_features)
    tokens = torch.full((input_features.shape[0], 1), start, dtype=torch.long)
    done = torch.zeros(input_features.shape[0], dtype=torch.bool)
    past, out = None, [[] for _ in range(input_features.shape[0])]
    for _ in range(max_new_tokens):
        step = model(
            encoder_outputs=encoder_outputs, decoder_input_ids=tokens[:, -1:], past_key_values=past, use_cache=True
        )
        past = step.past_key_values
        next_ids = step.logits[:, -1].argmax(-1)
        for b in range(len(out)):
            if not done[b] and next_ids[b] != eos:
                out[b].append(int(next_ids[b]))
        done |= next_ids == eos
        if bool(done.all()):
            break
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
    return out


@pytest.fixture(scope="module")
def character_whisper():
    """A tiny random Whisper on a character vocabulary, weights widened so that its greedy transcripts
    differ between inputs and some of them end before ``max_new_tokens``."""
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    processor = LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer)
    torch.manual_seed(3)
    model = build_whisper(preset_config("tiny", "ctc", vocab_size=len(tokenizer)), len(tokenizer), 50).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model, processor


def test_character_whisper_generate_equals_the_greedy_loop(character_whisper):
    model, processor = character_whisper
    transcriber = Transcriber(model, processor, max_new_tokens=20)
    assert transcriber.kind == "whisper_chars"
    audio = [_sine(0.3 + 0.2 * i, 150 + 170 * i) for i in range(6)]
    features = whisper_char_features(processor.feature_extractor, audio, 2 * model.config.max_source_positions)
    assert features.shape == (6, model.config.num_mel_bins, 100)
    expected = _reference_greedy(model, features, 20)
    lengths = [len(ids) for ids in expected]
    assert min(lengths) < 20 and len(set(lengths)) > 1 and len({tuple(ids) for ids in expected}) > 1, expected
    vocab = len(processor.tokenizer)  # a random decoder may emit its start token again: not a character
    texts = [processor.tokenizer.decode([i for i in ids if i < vocab], group_tokens=False) for ids in expected]
    assert transcriber.transcribe_batch({"input_features": features, "labels": torch.zeros(6, 1)}) == texts
    assert transcriber(audio) == texts


def test_character_whisper_folder_round_trip(character_whisper, tmp_path):
    model, processor = character_whisper
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = Transcriber.from_pretrained(str(tmp_path))
    assert loaded.kind == "whisper_chars" and loaded.num_parameters == Transcriber(model, processor).num_parameters
    audio = [_sine(0.5, 300), _sine(0.9, 500)]
    assert loaded(audio) == Transcriber(model, processor)(audio)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        Transcriber.from_pretrained(str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr_eval")
    split = datasets.Dataset.from_dict(
        {"audio": [_wav(0.8 + 0.3 * i, 200 + 50 * i) for i in range(3)], "text": TEXTS}
    ).cast_column("audio", datasets.Audio(sampling_rate=16000))
    datasets.DatasetDict({"test_seen": split, "test_real": split.select([0, 1])}).save_to_disk(root / "corpus")
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    folder = root / "run" / "best"
    torch.manual_seed(0)
    model = LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size))
    model.save_pretrained(folder)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    log = [{"step": s, "loss": 3.0 - s / 10} for s in range(1, 6)] + [{"step": 5, "eval": {"wer": 1.0, "cer": 0.8}}]
    (root / "run" / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log))
    return root, folder


def test_ctc_transcriber_batch_equals_one_utterance_at_a_time(tiny_run):
    _, folder = tiny_run
    transcriber = Transcriber.from_pretrained(str(folder))
    assert transcriber.kind == "ctc" and transcriber.num_parameters == sum(
        p.numel() for p in transcriber.model.parameters()
    )
    audio = [_sine(0.6, 220), _sine(1.3, 440), _sine(0.9, 330)]
    batched = transcriber(audio)
    assert batched == [transcriber([a])[0] for a in audio]
    processor = transcriber.processor
    inputs = processor(audio=audio[1], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = processor.batch_decode(transcriber.model(**inputs).logits.argmax(-1))
    assert transcriber([audio[1]]) == expected


@pytest.mark.slow
def test_main_scores_every_split_and_writes_json_table_and_plot(tiny_run):
    root, folder = tiny_run
    out = root / "out"
    results = runpy.run_path(str(ASR_EVAL))["main"](
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
        runpy.run_path(str(ASR_EVAL))["main"](
            ["--models", str(folder), "--corpus", str(root / "corpus"), "--splits", "test_noise",
             "--output_dir", str(root / "out2")]
        )


PRETRAINED_WHISPER = Path(os.environ.get("LACT_WHISPER_HF", Path.home() / ".cache/lact-audio/whisper-tiny.en-hf"))


@pytest.mark.slow
@pytest.mark.skipif(
    not (PRETRAINED_WHISPER / "config.json").exists(),
    reason="no converted Whisper folder (run_scripts/convert_ct2_whisper.py writes one; or set LACT_WHISPER_HF)",
)
def test_pretrained_whisper_transcribes_through_its_own_generate():
    transcriber = Transcriber.from_pretrained(str(PRETRAINED_WHISPER))
    assert transcriber.kind == "whisper_pretrained" and transcriber.max_new_tokens == 200
    texts = transcriber([_sine(1.0, 300), np.zeros(8000, dtype=np.float32)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
