"""Codec2AudioTokenizer: the mode table, encode/decode shapes and dtypes, batching, save/load, code checks."""

import numpy as np
import pytest
import torch

from modeling_lact_audio.processors import Codec2AudioTokenizer, Codec2AudioTokenizerConfig
from modeling_lact_audio.processors.audio_tokenization_codec2 import CODEC2_MODES

pycodec2 = pytest.importorskip("pycodec2", reason="needs pycodec2 (pip install pycodec2==4.1.1)")

SR = 16000


def voiced(f0: float, seconds: float = 0.5, sampling_rate: int = SR) -> np.ndarray:
    """Harmonics of f0 under a slow amplitude envelope: speech-like enough for a vocoder."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.mark.parametrize("mode", sorted(CODEC2_MODES))
def test_config_matches_libcodec2(mode):
    config = Codec2AudioTokenizerConfig(mode=mode)
    codec = pycodec2.Codec2(mode)
    assert (config.samples_per_frame, config.bits_per_frame) == (codec.samples_per_frame(), codec.bits_per_frame())
    assert config.num_codebooks == codec.bytes_per_frame() and config.codebook_size == 256
    assert config.bits_per_second == mode  # the mode names its bit rate
    assert config.tokens_per_second == config.num_codebooks * 8000 / config.samples_per_frame


def test_config_rejects_unknown_mode_and_rate():
    with pytest.raises(ValueError, match="mode must be one of"):
        Codec2AudioTokenizerConfig(mode=2000)
    with pytest.raises(ValueError, match="sampling_rate"):
        Codec2AudioTokenizerConfig(sampling_rate=4000)


@pytest.mark.parametrize("mode", [3200, 1300, 700])
def test_round_trip_shapes_and_dtypes(mode):
    tokenizer = Codec2AudioTokenizer(Codec2AudioTokenizerConfig(mode=mode))
    wave = voiced(140, seconds=0.7)
    codes = tokenizer.encode(wave, sampling_rate=SR)
    frames = tokenizer.num_frames(len(wave))
    assert codes.shape == (1, tokenizer.config.num_codebooks, frames) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < 256
    if tokenizer.config.bits_per_frame % 8:
        assert (codes[:, -1] % 16 == 0).all()  # the last byte's unused low bits are zero
    audio = tokenizer.decode(codes)
    assert audio.dtype == torch.float32
    assert audio.shape == (1, frames * tokenizer.config.samples_per_frame * 2)
    # A parametric codec keeps the loudness of voiced sound, not its waveform.
    rms = [float(np.sqrt(np.mean(x**2))) for x in (wave, audio[0, 800:].numpy())]
    assert 0.3 < rms[1] / rms[0] < 3


def test_batch_equals_single_utterances_and_other_rates():
    tokenizer = Codec2AudioTokenizer(Codec2AudioTokenizerConfig(mode=1300))
    long, short = voiced(120, seconds=0.9), voiced(220, seconds=0.4)
    batch = tokenizer.encode([long, short], sampling_rate=SR)
    assert torch.equal(batch[0], tokenizer.encode(long, sampling_rate=SR)[0])
    alone = tokenizer.encode(short, sampling_rate=SR)[0]
    assert torch.equal(batch[1, :, : alone.shape[1] - 1], alone[:, :-1])  # the last frame also holds padding
    narrow = voiced(120, seconds=0.9, sampling_rate=8000)
    assert tokenizer.encode(narrow, sampling_rate=8000).shape == batch[:1].shape


def test_save_and_load(tmp_path):
    tokenizer = Codec2AudioTokenizer(Codec2AudioTokenizerConfig(mode=700))
    tokenizer.save_pretrained(tmp_path)
    loaded = Codec2AudioTokenizer.from_pretrained(tmp_path)
    assert loaded.config.mode == 700 and loaded.config.num_codebooks == 4
    wave = voiced(180)
    assert torch.equal(loaded.encode(wave, sampling_rate=SR), tokenizer.encode(wave, sampling_rate=SR))
    with pytest.raises(FileNotFoundError, match="config.json"):
        Codec2AudioTokenizer.from_pretrained(tmp_path / "missing")


def test_bad_codes_and_audio_raise():
    tokenizer = Codec2AudioTokenizer(Codec2AudioTokenizerConfig(mode=1300))
    with pytest.raises(ValueError, match="K=3 codebooks"):
        tokenizer.decode(torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        tokenizer.decode(torch.zeros(1, 7, 4))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tokenizer.decode(torch.full((1, 7, 4), 256))
    with pytest.raises(ValueError, match=r"\[B, K, T'\]"):
        tokenizer.decode(torch.zeros(7, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        tokenizer.encode(np.zeros(0, dtype=np.float32), sampling_rate=SR)
    with pytest.raises(ValueError):
        tokenizer.encode(np.full(1600, np.nan, dtype=np.float32), sampling_rate=SR)
