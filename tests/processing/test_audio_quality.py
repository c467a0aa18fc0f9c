"""modeling_lact_audio.audio_quality: input checks, spectral formulas, delay alignment, WER comparison,
speaker similarity and DNSMOS sanity on synthetic signals."""

import numpy as np
import pytest

from modeling_lact_audio import audio_quality as aq
from modeling_lact_audio.whisper_conversion.baseline import default_output_dir

SR = 16000


def noise(seconds: float = 1.0, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def voiced(f0: float, seconds: float = 2.0) -> np.ndarray:
    """Harmonics of a gliding f0 in syllable-like bursts, over a little noise: speech-like for the encoders."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 12)) * np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None)
    return (0.2 * wave + 0.002 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)


def test_check_audio_errors():
    with pytest.raises(ValueError, match="16000 Hz, got 8000 Hz"):
        aq.check_audio(noise(), sampling_rate=8000)
    with pytest.raises(ValueError, match="no samples"):
        aq.check_audio(np.zeros(0))
    with pytest.raises(ValueError, match=r"mono waveform \[L\]"):
        aq.check_audio(np.zeros((2, 100)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        aq.check_audio(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="reference: .*no samples"):
        aq.spectral_convergence(np.zeros(0), noise())


def test_spectral_formulas():
    x = noise()
    assert aq.spectral_convergence(x, x) == 0
    # |STFT| is linear in the amplitude: || |S| - 0.5 |S| || / || |S| || = 0.5.
    assert aq.spectral_convergence(x, 0.5 * x) == pytest.approx(0.5, abs=1e-5)
    assert aq.snr_db(x, 0.5 * x) == pytest.approx(10 * np.log10(4), abs=1e-4)
    e = noise(seed=1, level=0.01)
    expected = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(e.astype(np.float64) ** 2))
    assert aq.snr_db(x, x + e) == pytest.approx(expected, abs=1e-3)
    # Every mel band of this noise lies far above the floor, so doubling the amplitude adds log(4).
    assert aq.log_mel_l1(x, 2 * x) == pytest.approx(np.log(4), abs=1e-3)


def test_delay_is_found_and_removed():
    x = voiced(150, seconds=1.5)
    delayed = np.concatenate([np.zeros(320, np.float32), x])
    assert aq.estimate_delay(x, delayed) == 320
    metrics = aq.spectral_metrics(x, delayed)
    assert metrics["delay_ms"] == 20 and metrics["spectral_convergence"] < 1e-5 and metrics["snr_db"] > 60


def test_mean_interval():
    assert aq.mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    values = np.random.default_rng(0).normal(1.0, 0.1, 50)
    low, high = aq.mean_interval(values)
    assert low < values.mean() < high and high - low < 0.1


def test_wer_comparison_counts_and_ratio():
    texts = ["chapter thirty six starts here", "the cat sat on the mat"]
    original = ["Chapter 36 starts here.", "the cat sat on a mat"]  # numbers normalised: 0 + 1 errors
    same = aq.wer_comparison(texts, original, original)
    assert same["original_wer"] == same["decoded_wer"] == pytest.approx(1 / 10)
    assert same["wer_ratio"] == 1 and same["wer_ratio_ci"] == (1.0, 1.0)
    worse = aq.wer_comparison(texts, original, ["chapter starts here", "the cat sat on a hat"])
    assert worse["decoded_word_errors"] == [1, 2] and worse["wer_ratio"] == pytest.approx(3)
    assert worse["utterance_words"] == [4, 6]
    with pytest.raises(ValueError, match="as many texts as transcripts"):
        aq.wer_comparison(texts, original, original[:1])


@pytest.mark.skipif(not default_output_dir().is_dir(), reason="no converted Whisper tiny.en (convert_ct2_whisper.py)")
def test_whisper_wer_of_identical_audio_is_ratio_one():
    clip = voiced(130, seconds=1.0)
    out = aq.whisper_wer([clip], [clip.copy()], ["hello"])
    assert out["wer_ratio"] == 1 and out["original_transcripts"] == out["decoded_transcripts"]


def test_speaker_similarity():
    pytest.importorskip("resemblyzer", reason="needs Resemblyzer (pip install Resemblyzer==0.1.4)")
    low, high = voiced(110), voiced(240)
    assert aq.speaker_similarity(low, low.copy()) == pytest.approx(1, abs=1e-5)
    embedding = aq.speaker_embedding(low)
    assert embedding.shape == (256,) and embedding.min() >= 0
    assert aq.speaker_similarity(low, high) < 0.999
    with pytest.raises(ValueError, match="all samples are zero"):
        aq.speaker_similarity(np.zeros(SR, np.float32), low)
    with pytest.raises(ValueError, match="16000 Hz"):
        aq.speaker_similarity(low, low, sampling_rate=22050)


def test_dnsmos():
    pytest.importorskip("speechmos", reason="needs speechmos (pip install speechmos==0.0.1.1)")
    clean, noisy = voiced(150), voiced(150) + noise(2.0, level=0.3)
    scores, noisy_scores = aq.dnsmos(clean), aq.dnsmos(noisy)
    assert set(scores) == {"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}
    assert all(1 <= v <= 5 for v in scores.values())
    assert noisy_scores["bak_mos"] < scores["bak_mos"]  # loud white noise is a worse background
    with pytest.raises(ValueError, match="no samples"):
        aq.dnsmos(np.zeros(0, np.float32))
