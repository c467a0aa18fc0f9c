"""Hostile inputs to the processors: each one used to pass silently or crash inside torch (hardening issue)."""

import numpy as np
import pytest
import torch

from modeling_lact_audio.processors import (
    LaCTAudioTokenizer,
    LaCTAudioTokenizerConfig,
    LaCTCTCTokenizer,
    LaCTFeatureExtractor,
    LaCTProcessor,
)

SR = 16000


def noise(length: int, seed: int, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer() -> LaCTCTCTokenizer:
    return LaCTCTCTokenizer.from_texts(["hello world", "good bye"])


@pytest.mark.parametrize("rate", [1, 16, 1000, 1_000_000])
def test_implausible_sampling_rates_are_refused_before_resampling(rate):
    fe = LaCTFeatureExtractor()
    with pytest.raises(ValueError, match=r"outside the supported range \[4000, 384000\] Hz"):
        fe(noise(4000, 0), sampling_rate=rate)
    with pytest.raises(ValueError, match="outside the supported range"):
        LaCTFeatureExtractor(sampling_rate=rate)


def test_plausible_rates_still_resample():
    out = LaCTFeatureExtractor()(noise(8000, 0), sampling_rate=8000, return_tensors="pt")
    assert out["input_features"].shape[1] == 101  # 1 s at 16 kHz, hop 160, centred frames


def test_global_normalisation_fitted_on_silence_raises():
    fe = LaCTFeatureExtractor(normalization="global")
    with pytest.raises(ValueError, match="every feature of the audio is constant"):
        fe.fit_normalization([np.zeros(8000, np.float32)], sampling_rate=SR)
    with pytest.raises(ValueError, match="speaker 'b'"):
        fe.fit_normalization([noise(8000, 1), np.zeros(8000, np.float32)], sampling_rate=SR, speaker_ids=["a", "b"])


def test_fitted_stds_are_floored_and_features_stay_bounded():
    # Band-limited audio (8 kHz resampled to 16 kHz) leaves the top mel bands at the floor.
    fe = LaCTFeatureExtractor(normalization="global")
    fe.fit_normalization([noise(8000, 1), noise(8000, 2)], sampling_rate=8000)
    std = np.asarray(fe.global_std)
    assert std.min() >= 1e-2 * std.max() - 1e-12
    features = fe(noise(8000, 3), sampling_rate=8000, return_tensors="np")["input_features"]
    assert np.isfinite(features).all() and np.abs(features).max() < 1e3


@pytest.mark.parametrize("std", [[0.0] * 80, [float("nan")] * 80, [1.0] * 79])
def test_corrupt_saved_statistics_are_refused(std):
    with pytest.raises(ValueError, match="normalisation statistics need finite means and stds > 0"):
        LaCTFeatureExtractor(normalization="global", global_mean=[0.0] * 80, global_std=std)


def test_audio_and_text_counts_must_match(tokenizer):
    processor = LaCTProcessor(LaCTFeatureExtractor(), tokenizer)
    with pytest.raises(ValueError, match=r"2 utterance\(s\) and 1 transcript\(s\)"):
        processor(audio=[noise(4000, 1), noise(4000, 2)], text=["hello"], sampling_rate=SR)
    with pytest.raises(ValueError, match=r"1 utterance\(s\) and 2 transcript\(s\)"):
        processor(audio=noise(4000, 1), text=["hello", "bye"], sampling_rate=SR)
    assert processor(audio=noise(4000, 1).tolist(), text="hello", sampling_rate=SR)["labels"]


def test_negative_and_out_of_vocabulary_ids_raise(tokenizer):
    with pytest.raises(ValueError, match="id -5 is outside the vocabulary"):
        tokenizer.decode([3, -5, 4])
    with pytest.raises(ValueError, match=f"id {len(tokenizer)} is outside the vocabulary"):
        tokenizer.batch_decode(torch.tensor([[3, len(tokenizer)]]))
    # -100 is label padding: read as the blank, in the tokenizer and the processor alike.
    labels = torch.tensor([[3, 4, -100], [5, -100, -100]])
    processor = LaCTProcessor(LaCTFeatureExtractor(), tokenizer)
    expected = tokenizer.batch_decode(labels.clamp_min(0), group_tokens=False)
    assert processor.batch_decode(labels, group_tokens=False) == expected
    assert tokenizer.batch_decode(labels, group_tokens=False) == expected


def test_float_ids_logits_strings_and_none_raise(tokenizer):
    with pytest.raises(ValueError, match="must be integers, got float32"):
        tokenizer.decode(torch.tensor([3.0, 4.7]))
    with pytest.raises(ValueError, match=r"got \(2, 5, 7\).*argmax\(-1\)"):
        tokenizer.batch_decode(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match="not strings or None"):
        tokenizer.decode(["h", "i"])
    with pytest.raises(ValueError, match="not strings or None"):
        tokenizer.batch_decode([[3, None]])
    with pytest.raises(ValueError, match="a batch of id sequences"):
        tokenizer.batch_decode(None)
    assert tokenizer.decode(np.array([3, 3, 0, 3], np.int32)) == tokenizer.decode([3, 0, 3])
    assert tokenizer.decode([]) == "" and tokenizer.batch_decode([[], [3]])[0] == ""


@pytest.fixture(scope="module")
def audio_tokenizer() -> LaCTAudioTokenizer:
    config = LaCTAudioTokenizerConfig(n_fft=512, hop_length=128, n_mels=40, num_codebooks=2, codebook_size=8)
    return LaCTAudioTokenizer(config).fit([noise(8000, s) for s in range(3)], sampling_rate=SR, iters=3)


def test_audio_far_outside_unit_range_is_refused(audio_tokenizer):
    with pytest.raises(ValueError, match=r"peak of 3.9e\+20 .*integer PCM passed as floats"):
        audio_tokenizer.encode(noise(8000, 0, scale=1e20), sampling_rate=SR)
    with pytest.raises(ValueError, match="peak of"):
        LaCTFeatureExtractor()(noise(8000, 0, scale=1e20), sampling_rate=SR)
    int16_as_float = np.round(noise(8000, 0) * 32768).astype(np.float32)  # a common slip, still readable
    assert LaCTFeatureExtractor()(int16_as_float, sampling_rate=SR)["input_features"][0].shape[0] == 51


def test_short_codes_decode_to_the_stated_length(audio_tokenizer):
    hop = audio_tokenizer.config.hop_length
    for frames in (2, 3, 6):
        audio = audio_tokenizer.decode(torch.zeros(1, 2, frames, dtype=torch.long))
        assert audio.shape == (1, (frames - 1) * hop) and torch.isfinite(audio).all()
    with pytest.raises(ValueError, match="at least 2 code frames"):
        audio_tokenizer.decode(torch.zeros(1, 2, 1, dtype=torch.long))


@pytest.mark.parametrize("shape", [(0, 2), (2, 0), (0,)])
def test_empty_multichannel_audio_is_called_empty_not_nan(shape):
    from modeling_lact_audio.processors.audio_input import to_mono_float

    with pytest.raises(ValueError, match="the audio is empty"):
        to_mono_float(np.zeros(shape, dtype=np.float32))
