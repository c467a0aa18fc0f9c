"""generation.window_metrics on constructed signals: pitch jumps of a sweep vs a steady tone, similarity of a
window to itself, the similarity slope when the voice changes, window counts and input errors."""

import math

import numpy as np
import pytest

from modeling_lact_audio.generation import continuation_metrics, pitch_track, window_features

SR = 16000


def tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def sweep(f_low: float, f_high: float, seconds: float = 1.0) -> np.ndarray:
    """A pure tone gliding exponentially from ``f_low`` to ``f_high`` Hz (a constant rate in semitones)."""
    f = np.geomspace(f_low, f_high, int(seconds * SR))
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR)).astype(np.float32)


def voiced(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding f0 in syllable-like bursts (2.5 per second) over a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    return (0.2 * wave + 0.002 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_pitch_of_a_steady_tone_a_sweep_and_noise():
    steady, glide = window_features(tone(200)), window_features(sweep(100, 400))
    assert steady["f0_median_hz"] == pytest.approx(200, rel=0.02) and steady["voiced_fraction"] > 0.95
    assert steady["pitch_jump_semitones"] < 0.05
    # 2 octaves in 1 s at 62.5 frames per second: 24 / 62.5 = 0.38 semitones per frame
    assert glide["pitch_jump_semitones"] == pytest.approx(24 / 62.5, rel=0.15)
    assert glide["voiced_fraction"] > 0.9
    f0, is_voiced = pitch_track(noise())
    assert f0.shape == is_voiced.shape == (1 + SR // 256,) and is_voiced.mean() < 0.1
    hiss = window_features(noise())
    assert hiss["rolloff_hz"] > 5 * steady["rolloff_hz"]  # noise is bright, a 200 Hz tone is not
    assert steady["onset_rate"] == 0 and 1 <= window_features(voiced(150))["onset_rate"] <= 4  # 2.5 bursts/s


def test_window_count_and_starts():
    prompt = voiced(120)
    short_rest = continuation_metrics(voiced(120, 3.4), prompt, window_seconds=1.0, use_dnsmos=False)
    assert short_rest["num_windows"] == 3  # the last 0.4 s (under half a window) is dropped
    long_rest = continuation_metrics(voiced(120, 3.6), prompt, window_seconds=1.0, use_dnsmos=False)
    assert [w["start_s"] for w in long_rest["windows"]] == [0.0, 1.0, 2.0, 3.0]
    keys = {"start_s", "speaker_similarity", "f0_median_hz", "voiced_fraction", "pitch_jump_semitones"}
    keys |= {"rolloff_hz", "flux", "onset_rate"}
    assert all(set(w) == keys for w in long_rest["windows"])
    assert "dnsmos_ovrl_mean" not in long_rest


def test_same_signal_similarity_is_one_and_a_changed_voice_has_a_negative_slope():
    prompt = voiced(120, 1.0)
    same = continuation_metrics(np.tile(prompt, 3), prompt, window_seconds=1.0, use_dnsmos=False)
    assert all(w["speaker_similarity"] == pytest.approx(1.0, abs=1e-4) for w in same["windows"])
    assert same["speaker_similarity_slope_per_minute"] == pytest.approx(0.0, abs=1e-2)
    assert same["rolloff_cv"] == pytest.approx(0.0, abs=1e-6) and same["onset_rate_variance"] == 0
    changed = np.concatenate([voiced(120, 2.0, seed=1), 0.5 * voiced(260, 2.0, seed=2) + noise(2.0, seed=3) / 2])
    out = continuation_metrics(changed, voiced(120, 2.0), window_seconds=1.0, use_dnsmos=False)
    first, second = (
        [w["speaker_similarity"] for w in out["windows"][:2]],
        [w["speaker_similarity"] for w in out["windows"][2:]],
    )
    assert min(first) > max(second) + 0.2
    assert out["speaker_similarity_slope_per_minute"] < -3  # about -0.4 per 2 s
    assert out["speaker_similarity_mean"] == pytest.approx(np.mean(first + second))
    assert out["rolloff_cv"] > 0 and out["flux_cv"] > 0


def test_one_window_with_dnsmos_and_silence():
    prompt = voiced(120, 1.0)
    out = continuation_metrics(voiced(130, 1.2), prompt, window_seconds=1.0, use_dnsmos=True)
    assert out["num_windows"] == 1 and math.isnan(out["speaker_similarity_slope_per_minute"])
    window = out["windows"][0]
    assert all(1 <= window[k] <= 5 for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak"))
    assert out["dnsmos_ovrl_mean"] == window["dnsmos_ovrl"]
    silent = np.concatenate([prompt, np.zeros(SR, np.float32)])
    out = continuation_metrics(silent, prompt, window_seconds=1.0, use_dnsmos=False)
    assert math.isnan(out["windows"][1]["speaker_similarity"]) and math.isnan(out["windows"][1]["f0_median_hz"])
    assert out["speaker_similarity_mean"] == pytest.approx(1.0, abs=1e-4)


def test_other_sampling_rates_are_resampled():
    low = voiced(120, 2.0)[::2]  # 8 kHz
    out = continuation_metrics(low, low, sampling_rate=8000, window_seconds=1.0, use_dnsmos=False)
    assert out["num_windows"] == 2 and out["windows"][1]["start_s"] == 1.0


def test_bad_inputs():
    prompt = voiced(120)
    with pytest.raises(ValueError, match=r"audio is 0\.800 s \(12800 samples at 16000 Hz\), shorter than one window"):
        continuation_metrics(voiced(120, 0.8), prompt, window_seconds=1.0, use_dnsmos=False)
    with pytest.raises(ValueError, match="audio: the audio has no samples"):
        continuation_metrics(np.zeros(0, np.float32), prompt, use_dnsmos=False)
    bad = voiced(120, 2.0)
    bad[100] = np.nan
    with pytest.raises(ValueError, match="audio: the audio holds NaN or Inf"):
        continuation_metrics(bad, prompt, window_seconds=1.0, use_dnsmos=False)
    with pytest.raises(ValueError, match="prompt_audio: the audio holds NaN or Inf"):
        continuation_metrics(prompt, bad, window_seconds=1.0, use_dnsmos=False)
    with pytest.raises(ValueError, match=r"mono waveform \[L\]"):
        continuation_metrics(np.zeros((2, SR), np.float32), prompt, use_dnsmos=False)
    with pytest.raises(ValueError, match="prompt_audio: all samples are zero"):
        continuation_metrics(prompt, np.zeros(SR, np.float32), window_seconds=1.0, use_dnsmos=False)
    with pytest.raises(ValueError, match="window_seconds must be a positive number"):
        continuation_metrics(prompt, prompt, window_seconds=0, use_dnsmos=False)
    with pytest.raises(ValueError, match="sampling_rate must be a positive int"):
        continuation_metrics(prompt, prompt, sampling_rate=0, use_dnsmos=False)
