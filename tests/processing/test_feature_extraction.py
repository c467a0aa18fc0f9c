"""LaCTFeatureExtractor: log-mel against transformers.audio_utils, resampling, batching, bad input."""

import json
import logging

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from modeling_lact_audio.processors import LaCTFeatureExtractor
from modeling_lact_audio.processors.log_mel import LogMelSpectrogram

SR = 16000


def sine(freq: float, sampling_rate: int = SR, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sampling_rate * seconds)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(length: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(length)).astype(np.float32)


def peak_frequency(wave: np.ndarray, sampling_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sampling_rate)[spectrum.argmax()])


@pytest.mark.parametrize(
    "mel_scale, mel_norm, window, n_fft, win_length",
    [("htk", None, "hann", 400, 400), ("slaney", "slaney", "hamming", 512, 400)],
)
def test_log_mel_matches_transformers_audio_utils(mel_scale, mel_norm, window, n_fft, win_length):
    fe = LaCTFeatureExtractor(
        n_mels=64,
        n_fft=n_fft,
        win_length=win_length,
        hop_length=160,
        window=window,
        f_min=20.0,
        f_max=7600.0,
        mel_scale=mel_scale,
        mel_norm=mel_norm,
        normalization="none",
    )
    wave = noise(5000) + sine(440, seconds=5000 / SR)
    ours = fe(wave, sampling_rate=SR, return_tensors="np")["input_features"][0]
    reference = spectrogram(
        wave.astype(np.float64),
        window_function(win_length, window, frame_length=n_fft),
        frame_length=n_fft,
        hop_length=160,
        power=2.0,
        center=True,
        pad_mode="constant",
        mel_filters=mel_filter_bank(n_fft // 2 + 1, 64, 20.0, 7600.0, SR, norm=mel_norm, mel_scale=mel_scale),
        mel_floor=1e-10,
        log_mel="log",
        dtype=np.float64,
    ).T
    assert ours.shape == reference.shape == (1 + 5000 // 160, 64)
    np.testing.assert_allclose(ours, reference, atol=2e-3, rtol=0)


def test_blocks_equal_one_pass_and_frame_count_matches_torch_stft():
    wave = torch.from_numpy(noise(12345))
    blocked = LogMelSpectrogram(block_frames=7)(wave)
    whole = LogMelSpectrogram(block_frames=10**6)(wave)
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=1e-5)
    stft = torch.stft(wave, 400, 160, window=torch.hann_window(400), center=True, return_complex=True)
    assert blocked.shape == (stft.shape[-1], 80)


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100])
def test_resampling_preserves_frequency_and_length(source_rate):
    fe = LaCTFeatureExtractor(feature_type="waveform", normalization="none")
    wave = sine(1000.0, source_rate, seconds=0.5)
    out = fe(wave, sampling_rate=source_rate, return_tensors="np")["input_values"][0]
    assert len(out) == int(np.ceil(len(wave) * SR / source_rate))
    assert abs(peak_frequency(out, SR) - 1000.0) <= SR / len(out)
    assert abs(np.abs(out).max() - 0.5) < 0.02


def test_rate_mismatch_without_resampling_names_both_rates():
    fe = LaCTFeatureExtractor(resample=False)
    with pytest.raises(ValueError, match=r"16000 Hz.*22050 Hz"):
        fe(sine(440, 22050), sampling_rate=22050)


def test_missing_sampling_rate_warns_like_transformers(caplog):
    fe = LaCTFeatureExtractor()
    with caplog.at_level(logging.WARNING):
        out = fe(sine(440), return_tensors="pt")
    assert "strongly recommended to pass the `sampling_rate`" in caplog.text
    assert out["input_features"].shape == (1, 51, 80)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"normalization": "per_utterance"},
        {"normalization": "none", "n_fft": 512, "pad_mode": "reflect"},
        {"feature_type": "waveform", "frame_length": 400, "hop_length": 160, "window": "hann"},
        {"feature_type": "waveform", "normalization": "per_utterance"},
    ],
)
def test_padded_batch_equals_single_examples(kwargs):
    fe = LaCTFeatureExtractor(**kwargs)
    waves = [noise(4000, 1), noise(7000, 2), noise(2500, 3)]
    batch = fe(waves, sampling_rate=SR, return_tensors="pt")
    name = fe.model_input_names[0]
    for i, wave in enumerate(waves):
        single = fe(wave, sampling_rate=SR, return_tensors="pt")
        length = single[name].shape[1]
        assert int(batch["attention_mask"][i].sum()) == length
        torch.testing.assert_close(batch[name][i, :length], single[name][0], atol=1e-5, rtol=1e-5)
        assert torch.all(batch[name][i, length:] == 0)


def test_dtypes_and_containers_agree():
    fe = LaCTFeatureExtractor()
    pcm = (noise(3000) * 32767).astype(np.int16)
    reference = fe(pcm.astype(np.float32) / 32768, sampling_rate=SR, return_tensors="np")["input_features"]
    for variant in (
        pcm,
        torch.from_numpy(pcm),
        pcm.astype(np.float64) / 32768,
        list(pcm.astype(np.float64) / 32768),
    ):
        out = fe(variant, sampling_rate=SR, return_tensors="np")["input_features"]
        np.testing.assert_allclose(out, reference, atol=1e-4)
    batch_2d = fe(np.stack([pcm, pcm]), sampling_rate=SR, return_tensors="np")["input_features"]
    np.testing.assert_allclose(batch_2d[1], reference[0], atol=1e-4)


def test_return_tensors_types():
    fe = LaCTFeatureExtractor()
    assert isinstance(fe(noise(800), sampling_rate=SR, return_tensors="pt")["input_features"], torch.Tensor)
    assert isinstance(fe(noise(800), sampling_rate=SR, return_tensors="np")["attention_mask"], np.ndarray)
    plain = fe([noise(800), noise(500)], sampling_rate=SR)["input_features"]
    assert isinstance(plain, list) and plain[0].shape == plain[1].shape == (6, 80)


def test_multichannel_is_mixed_down_or_rejected_with_a_fix():
    fe = LaCTFeatureExtractor(feature_type="waveform", normalization="none")
    left, right = noise(3000, 1), noise(3000, 2)
    expected = (left + right) / 2
    for stereo in (np.stack([left, right], axis=1), np.stack([left, right], axis=0)):
        out = fe([stereo], sampling_rate=SR, return_tensors="np")["input_values"][0]
        np.testing.assert_allclose(out, expected, atol=1e-6)
    batch = fe(np.stack([np.stack([left, right], axis=1)] * 2), sampling_rate=SR, return_tensors="np")
    np.testing.assert_allclose(batch["input_values"], np.stack([expected] * 2), atol=1e-6)
    with pytest.raises(ValueError, match="inside a list"):
        fe(np.stack([left, right], axis=1), sampling_rate=SR)
    with pytest.raises(ValueError, match="channel axis"):
        fe([np.zeros((20, 20), np.float32)], sampling_rate=SR)


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, np.float32), "empty"),
        ([], "empty"),
        (np.array([0.1, np.nan, 0.2], np.float32), "NaN or Inf"),
        (np.array([0.1, np.inf], np.float64), "NaN or Inf"),
        (np.array([1e300, 0.0]), "NaN or Inf"),
        (np.zeros(100, np.complex64), "dtype"),
        ([1, 2, 3], "dtype"),
        (np.zeros(100, bool), "dtype"),
        ([np.zeros((2, 3, 100), np.float32)], "rank"),
        (np.float32(0.5), "scalar"),
        ("speech.wav", "numpy array"),
        ([np.zeros(10, np.float32), np.zeros(0, np.float32)], r"audio\[1\].*empty"),
    ],
)
def test_bad_inputs_raise_value_error(audio, message):
    with pytest.raises(ValueError, match=message):
        LaCTFeatureExtractor()(audio, sampling_rate=SR)


def test_bounded_memory_blocks_are_used_for_long_audio():
    fe = LaCTFeatureExtractor(normalization="none")
    fe._log_mel.block_frames = 1000
    wave = noise(SR * 60)
    out = fe(wave, sampling_rate=SR, return_tensors="pt")["input_features"]
    assert out.shape == (1, 1 + len(wave) // 160, 80) and torch.isfinite(out).all()


def test_normalisation_modes_and_round_trip(tmp_path):
    data = [noise(6000, 1) * 2, noise(4000, 2), sine(300) + noise(8000, 3)]
    fe = LaCTFeatureExtractor(normalization="per_utterance")
    feats = fe(data[0], sampling_rate=SR, return_tensors="pt")["input_features"][0]
    torch.testing.assert_close(feats.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0, unbiased=False), torch.ones(80), atol=1e-3, rtol=0)

    fe = LaCTFeatureExtractor(normalization="global")
    with pytest.raises(ValueError, match="fit_normalization"):
        fe(data[0], sampling_rate=SR)
    fe.fit_normalization(iter(data), sampling_rate=SR, speaker_ids=["a", "b", "a"])
    pooled = torch.cat([fe(x, sampling_rate=SR, return_tensors="pt")["input_features"][0] for x in data])
    torch.testing.assert_close(pooled.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled.std(0, unbiased=False), torch.ones(80), atol=1e-3, rtol=0)

    fe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert len(saved["global_mean"]) == 80 and set(saved["speaker_stats"]) == {"a", "b"}
    loaded = LaCTFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    np.testing.assert_array_equal(
        loaded(data[1], sampling_rate=SR, return_tensors="np")["input_features"],
        fe(data[1], sampling_rate=SR, return_tensors="np")["input_features"],
    )

    per_speaker = LaCTFeatureExtractor.from_pretrained(tmp_path, normalization="per_speaker")
    speaker_b = per_speaker(data[1], sampling_rate=SR, speaker_ids="b", return_tensors="pt")["input_features"][0]
    torch.testing.assert_close(speaker_b.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    batch = per_speaker([data[0], data[2]], sampling_rate=SR, speaker_ids=["a", "a"], return_tensors="pt")
    speaker_a = torch.cat([batch["input_features"][i][batch["attention_mask"][i].bool()] for i in range(2)])
    torch.testing.assert_close(speaker_a.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="No statistics for speaker 'zed'"):
        per_speaker(data[1], sampling_rate=SR, speaker_ids="zed")
    with pytest.raises(ValueError, match="speaker_ids"):
        per_speaker(data[1], sampling_rate=SR)


def test_waveform_framing_round_trip(tmp_path):
    fe = LaCTFeatureExtractor(
        feature_type="waveform", frame_length=320, hop_length=320, window="boxcar", normalization="none"
    )
    wave = noise(1000)
    frames = fe(wave, sampling_rate=SR, return_tensors="np")["input_values"][0]
    assert frames.shape == (4, 320)
    np.testing.assert_array_equal(frames.reshape(-1)[:1000], wave)
    assert np.all(frames.reshape(-1)[1000:] == 0)
    fe.save_pretrained(tmp_path)
    assert LaCTFeatureExtractor.from_pretrained(tmp_path).model_input_names == [
        "input_values",
        "attention_mask",
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.integers(0, 3000),
    dtype=st.sampled_from(["float32", "float64", "float16", "int16", "int32", "int64", "uint8"]),
    amplitude=st.sampled_from([0.0, 1e-12, 1e-3, 1.0, 30.0, 1e8, 1e30, float("nan"), float("inf")]),
    rate=st.sampled_from([None, 8000, 16000, 22050, 44100, 0, -16000, 16000.5]),
    batched=st.booleans(),
    feature_type=st.sampled_from(["log_mel", "waveform"]),
    seed=st.integers(0, 2**16),
)
def test_property_every_input_gives_finite_features_or_value_error(
    length, dtype, amplitude, rate, batched, feature_type, seed
):
    rng = np.random.default_rng(seed)
    wave = rng.uniform(-1, 1, length) * amplitude
    if np.issubdtype(np.dtype(dtype), np.integer):
        wave = np.nan_to_num(wave).clip(np.iinfo(dtype).min, np.iinfo(dtype).max)
    with np.errstate(all="ignore"):
        wave = wave.astype(dtype)
    fe = LaCTFeatureExtractor(feature_type=feature_type, frame_length=160 if feature_type == "waveform" else None)
    try:
        out = fe([wave, wave[: length // 2 + 1]] if batched else wave, sampling_rate=rate, return_tensors="pt")
    except ValueError:
        return
    assert torch.isfinite(out[fe.model_input_names[0]]).all()
    assert out["attention_mask"].shape == out[fe.model_input_names[0]].shape[:2]
