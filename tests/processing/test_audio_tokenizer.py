"""LaCTAudioTokenizer: mel_rvq fitting, encode/decode shapes, code checks, EnCodec backend, round trips."""

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig
from modeling_lact_audio.processors.rvq import ResidualVectorQuantizer, kmeans

SR = 16000


def harmonic(f0: float, seconds: float = 0.5, sampling_rate: int = SR) -> np.ndarray:
    """A voiced-like tone: harmonics of f0 with a slow amplitude envelope."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def mel_rvq() -> LaCTAudioTokenizer:
    config = LaCTAudioTokenizerConfig(
        n_fft=512, hop_length=128, n_mels=40, num_codebooks=4, codebook_size=16, griffin_lim_iters=8
    )
    data = [harmonic(f0) for f0 in (110, 150, 220, 300)]
    return LaCTAudioTokenizer(config).fit(data, sampling_rate=SR, iters=10)


def tiny_encodec_config() -> EncodecConfig:
    # frame rate 8000 / 16 = 500 Hz and 10-bit codebooks: 10 kbps = 2 codebooks.
    return EncodecConfig(
        sampling_rate=8000,
        hidden_size=8,
        num_filters=4,
        num_residual_layers=1,
        upsampling_ratios=[4, 4],
        codebook_size=1024,
        codebook_dim=8,
        target_bandwidths=[5.0, 10.0],
        num_lstm_layers=1,
    )


def test_kmeans_finds_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=generator) for c in centres])
    found = kmeans(points, 3, iters=10, generator=generator)
    distance = torch.cdist(centres, found).min(1).values
    assert (distance < 0.1).all()


def test_each_rvq_stage_reduces_the_error():
    x = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))
    rvq = ResidualVectorQuantizer(num_codebooks=4, codebook_size=16, dim=8).fit(x, iters=10)
    codes = rvq.encode(x)
    assert codes.shape == (2000, 4) and codes.dtype == torch.int64
    errors = [(x - rvq.decode(codes[:, :k])).pow(2).mean().item() for k in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))


def test_mel_rvq_encode_decode_shapes(mel_rvq):
    audio = [harmonic(130, 0.3), harmonic(260, 0.2)]
    codes = mel_rvq.encode(audio, sampling_rate=SR)
    frames = mel_rvq.num_frames(len(audio[0]))
    assert codes.shape == (2, 4, frames) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 16
    waves = mel_rvq.decode(codes)
    assert waves.shape == (2, (frames - 1) * 128) and waves.dtype == torch.float32
    assert torch.isfinite(waves).all()
    torch.testing.assert_close(mel_rvq.decode(codes), waves)  # Griffin-Lim is seeded
    torch.testing.assert_close(mel_rvq.log_mel_to_audio(mel_rvq.codes_to_log_mel(codes)), waves)
    assert mel_rvq.codes_to_log_mel(codes).shape == (2, frames, 40)
    single = mel_rvq.encode(harmonic(130, 0.3), sampling_rate=SR)
    torch.testing.assert_close(single[0], codes[0])
    resampled = mel_rvq.encode(harmonic(130, 0.3, 8000), sampling_rate=8000)
    assert resampled.shape == single.shape


def test_mel_rvq_reconstruction_beats_a_wrong_signal(mel_rvq):
    log_mel = mel_rvq.log_mel
    original = harmonic(200, 0.5)
    decoded = mel_rvq.decode(mel_rvq.encode(original, sampling_rate=SR))[0]
    reference = log_mel(torch.from_numpy(original))[: len(log_mel(decoded))]
    error = (log_mel(decoded) - reference).abs().mean()
    wrong = (log_mel(torch.from_numpy(harmonic(330, 0.5)))[: len(reference)] - reference).abs().mean()
    assert error < 0.8 * wrong


def test_bad_codes_and_audio_raise(mel_rvq):
    good = mel_rvq.encode(harmonic(150, 0.1), sampling_rate=SR)
    cases = [
        (good + 16, r"\[0, 16\)"),
        (good - 17, r"\[0, 16\)"),
        (good[:, :3], "K=3"),
        (good[0], r"\[B, K, T'\]"),
        (good[:, :, :0], "empty"),
        (good.float(), "integers"),
    ]
    for codes, message in cases:
        with pytest.raises(ValueError, match=message):
            mel_rvq.decode(codes)
    for audio, message in [(np.zeros(0, np.float32), "empty"), ([np.array([np.nan])], "NaN"), ([], "empty")]:
        with pytest.raises(ValueError, match=message):
            mel_rvq.encode(audio, sampling_rate=SR)


def test_unfitted_mel_rvq_and_config_errors():
    tokenizer = LaCTAudioTokenizer(LaCTAudioTokenizerConfig(num_codebooks=2, codebook_size=4))
    with pytest.raises(ValueError, match="not fitted"):
        tokenizer.encode(harmonic(100, 0.1), sampling_rate=SR)
    with pytest.raises(ValueError, match="backend"):
        LaCTAudioTokenizerConfig(backend="wavtokenizer")
    with pytest.raises(ValueError, match="encodec_config"):
        LaCTAudioTokenizerConfig(backend="encodec")
    with pytest.raises(ValueError, match="encodec_bandwidth"):
        LaCTAudioTokenizerConfig(backend="encodec", encodec_config=tiny_encodec_config().to_dict(), encodec_bandwidth=3)


def test_mel_rvq_save_load_round_trip(mel_rvq, tmp_path):
    mel_rvq.save_pretrained(tmp_path)
    loaded = LaCTAudioTokenizer.from_pretrained(tmp_path)
    audio = harmonic(175, 0.3)
    codes = mel_rvq.encode(audio, sampling_rate=SR)
    torch.testing.assert_close(loaded.encode(audio, sampling_rate=SR), codes)
    torch.testing.assert_close(loaded.decode(codes), mel_rvq.decode(codes))


def test_encodec_backend_shapes_and_round_trips(tmp_path):
    torch.manual_seed(0)
    encodec = EncodecModel(tiny_encodec_config()).eval()
    for layer in encodec.quantizer.layers:  # random codebooks, so that codes vary
        layer.codebook.embed.normal_()
    encodec.save_pretrained(tmp_path / "encodec")
    tokenizer = LaCTAudioTokenizer.from_encodec(tmp_path / "encodec", bandwidth=10.0)
    assert (tokenizer.config.num_codebooks, tokenizer.config.codebook_size) == (2, 1024)
    audio = [harmonic(200, 0.25), harmonic(300, 0.125)]
    codes = tokenizer.encode(audio, sampling_rate=SR)  # resampled to 8 kHz: 2000 samples, 125 frames
    assert codes.shape == (2, 2, tokenizer.num_frames(2000)) == (2, 2, 125)
    assert codes.unique().numel() > 1 and codes.max() < 1024
    waves = tokenizer.decode(codes)
    assert waves.shape == (2, 2000) and torch.isfinite(waves).all()
    with pytest.raises(ValueError, match="K=1"):
        tokenizer.decode(codes[:, :1])
    with pytest.raises(ValueError, match="fit"):
        tokenizer.fit([harmonic(100)], sampling_rate=SR)
    with pytest.raises(ValueError, match="not log-mel"):
        tokenizer.codes_to_log_mel(codes)

    tokenizer.save_pretrained(tmp_path / "wrapped")
    loaded = LaCTAudioTokenizer.from_pretrained(tmp_path / "wrapped")
    torch.testing.assert_close(loaded.encode(audio, sampling_rate=SR), codes)
    torch.testing.assert_close(loaded.decode(codes), waves)
