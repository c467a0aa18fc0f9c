"""LaCTProcessor: routing, -100 padded labels, decoding, save/load through the Auto classes."""

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, PretrainedConfig

from modeling_lact_audio.processors import (
    LaCTCTCTokenizer,
    LaCTFeatureExtractor,
    LaCTProcessor,
    register_auto_classes,
)

SR = 16000


class _ProcessorTestConfig(PretrainedConfig):
    model_type = "lact_audio_processor_test"


def noise(length: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


def make_processor(normalization: str = "global") -> LaCTProcessor:
    fe = LaCTFeatureExtractor(normalization=normalization)
    if normalization == "global":
        fe.fit_normalization([noise(4000, 1), noise(6000, 2)], sampling_rate=SR)
    return LaCTProcessor(fe, LaCTCTCTokenizer.from_texts(["hello world", "good bye"]))


def test_audio_and_text_give_inputs_and_padded_labels():
    processor = make_processor()
    audio = [noise(4000, 1), noise(2000, 2)]
    out = processor(audio=audio, text=["hello", "bye world"], sampling_rate=SR, return_tensors="pt")
    assert set(out) == {"input_features", "attention_mask", "labels"}
    assert out["input_features"].shape == (2, 26, 80)
    labels = out["labels"]
    assert labels.dtype == torch.int64 and labels.shape == (2, 9)
    assert (labels[0, 5:] == -100).all() and (labels[1] >= 0).all()
    assert processor.batch_decode(labels, group_tokens=False) == ["hello", "bye world"]
    features_only = processor.feature_extractor(audio, sampling_rate=SR, return_tensors="pt")
    torch.testing.assert_close(out["input_features"], features_only["input_features"])

    as_numpy = processor(audio=audio, text=["hello", "bye world"], sampling_rate=SR, return_tensors="np")
    np.testing.assert_array_equal(as_numpy["labels"], labels.numpy())
    as_lists = processor(audio=audio, text=["hello", "bye world"], sampling_rate=SR)
    assert as_lists["labels"] == [ids[ids >= 0].tolist() for ids in labels]
    assert processor.batch_decode(as_lists["labels"], group_tokens=False) == ["hello", "bye world"]


def test_single_modalities_and_errors():
    processor = make_processor("per_utterance")
    assert processor(text="good bye")["input_ids"] == processor.tokenizer("good bye")["input_ids"]
    assert "labels" not in processor(audio=noise(1000, 3), sampling_rate=SR)
    with pytest.raises(ValueError, match="either an `audio` or `text`"):
        processor()
    assert processor.model_input_names == ["input_features", "attention_mask", "labels"]
    assert processor.decode(torch.tensor([0, 3, 3, 0, 3])) == processor.tokenizer.decode([0, 3, 3, 0, 3])


def test_save_load_round_trip_through_auto_classes(tmp_path):
    register_auto_classes(_ProcessorTestConfig)
    register_auto_classes(_ProcessorTestConfig)  # idempotent
    processor = make_processor()
    processor.save_pretrained(tmp_path)
    audio = [noise(3000, 4), noise(1000, 5)]
    expected = processor(audio=audio, text=["hello", "world"], sampling_rate=SR, return_tensors="pt")
    for loaded in (LaCTProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is LaCTProcessor
        assert loaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()
        out = loaded(audio=audio, text=["hello", "world"], sampling_rate=SR, return_tensors="pt")
        for key in expected:
            torch.testing.assert_close(out[key], expected[key])
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is LaCTFeatureExtractor
    assert type(AutoTokenizer.from_pretrained(tmp_path)) is LaCTCTCTokenizer
