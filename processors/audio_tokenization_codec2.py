"""Codec2AudioTokenizer: Codec 2 (David Rowe's low-bit-rate speech codec) as a discrete audio tokenizer.

Codec 2 runs at 8 kHz: audio at ``config.sampling_rate`` (16 kHz) is resampled down with torchaudio,
cut into frames of ``samples_per_frame`` samples and coded into ``bits_per_frame`` bits per frame,
bit-packed (most significant bit first) into ``bytes_per_frame`` bytes. Every byte is one token, so a
frame is ``K = bytes_per_frame`` codes of vocabulary 256 and the codes of an utterance are
``[B, K, T']``, the layout of the mel_rvq tokenizer. Decoding unpacks the bytes, synthesises 8 kHz
speech and resamples it back to ``config.sampling_rate``.

| mode | frame | bits/frame | K (bytes) | frames/s | tokens/s | bits/s |
|---:|---:|---:|---:|---:|---:|---:|
| 3200 | 20 ms | 64 | 8 | 50 | 400 | 3200 |
| 2400 | 20 ms | 48 | 6 | 50 | 300 | 2400 |
| 1600 | 40 ms | 64 | 8 | 25 | 200 | 1600 |
| 1400 | 40 ms | 56 | 7 | 25 | 175 | 1400 |
| 1300 | 40 ms | 52 | 7 | 25 | 175 | 1300 |
| 1200 | 40 ms | 48 | 6 | 25 | 150 | 1200 |
| 700 (700C) | 40 ms | 28 | 4 | 25 | 100 | 700 |

Where ``bits_per_frame`` is not a multiple of 8 (1300, 700C) the last byte carries its bits in the high
nibble and the low 4 bits are zero, so that codebook only ever takes 16 of its 256 values. The binding
is ``pycodec2`` (its wheel bundles libcodec2); it is imported when a tokenizer is built.
"""

import math
from pathlib import Path

import numpy as np
import torch
import torchaudio
from transformers import PretrainedConfig

from .audio_input import prepare_waveforms
from .audio_tokenization_lact import check_audio_codes

CODEC_SAMPLING_RATE = 8000
# mode (bit/s, 700 = 700C) -> (samples per frame at 8 kHz, bits per frame), as libcodec2 reports them.
CODEC2_MODES = {
    3200: (160, 64),
    2400: (160, 48),
    1600: (320, 64),
    1400: (320, 56),
    1300: (320, 52),
    1200: (320, 48),
    700: (320, 28),
}


class Codec2AudioTokenizerConfig(PretrainedConfig):
    """Configuration of :class:`Codec2AudioTokenizer`.

    Args:
        mode: Codec 2 bit rate in bit/s, one of ``CODEC2_MODES`` (``700`` is the 700C mode).
        sampling_rate: rate of the audio the tokenizer takes and returns (Codec 2 itself runs at 8 kHz).

    Derived (computed here, read-only in spirit): ``samples_per_frame`` (at 8 kHz), ``bits_per_frame``,
    ``num_codebooks`` (= bytes per frame, one token per byte), ``codebook_size`` (256), ``frame_rate``
    (frames/s), ``tokens_per_second`` and ``bits_per_second``.
    """

    model_type = "lact_codec2_audio_tokenizer"

    def __init__(self, mode: int = 1300, sampling_rate: int = 16000, **kwargs):
        if mode not in CODEC2_MODES:
            raise ValueError(f"mode must be one of {sorted(CODEC2_MODES)} (bit/s; 700 is 700C), got {mode!r}.")
        if not isinstance(sampling_rate, int) or sampling_rate < CODEC_SAMPLING_RATE:
            raise ValueError(f"sampling_rate must be an int >= {CODEC_SAMPLING_RATE} Hz, got {sampling_rate!r}.")
        for derived in (
            "samples_per_frame",
            "bits_per_frame",
            "num_codebooks",
            "codebook_size",
            "frame_rate",
            "tokens_per_second",
            "bits_per_second",
        ):
            kwargs.pop(derived, None)  # a saved config.json holds them; they are recomputed from `mode`
        self.mode, self.sampling_rate = mode, sampling_rate
        self.samples_per_frame, self.bits_per_frame = CODEC2_MODES[mode]
        self.num_codebooks = math.ceil(self.bits_per_frame / 8)
        self.codebook_size = 256
        self.frame_rate = CODEC_SAMPLING_RATE / self.samples_per_frame
        self.tokens_per_second = self.num_codebooks * self.frame_rate
        self.bits_per_second = self.bits_per_frame * self.frame_rate
        super().__init__(**kwargs)


class Codec2AudioTokenizer:
    """Audio to Codec 2 byte tokens and back (see the module docstring for the token layout).

    ``encode(audio, sampling_rate) -> codes`` int64 ``[B, K, T']`` with values in ``[0, 256)`` (a batch is
    zero-padded to its longest utterance; :meth:`num_frames` gives each utterance's frame count);
    ``decode(codes) -> audio`` float32 ``[B, T' * samples_per_frame * sampling_rate / 8000]`` at
    ``config.sampling_rate``. Audio input follows ``processors/audio_input.py`` (any rate: resampled; mono
    or mixed down). Each utterance is coded with a fresh codec state, so results do not depend on the
    batch. ``save_pretrained`` / ``from_pretrained`` store the config alone: Codec 2 has no weights.

    Raises:
        ImportError: ``pycodec2`` is not installed.
    """

    config_class = Codec2AudioTokenizerConfig

    def __init__(self, config: Codec2AudioTokenizerConfig | None = None):
        try:
            import pycodec2
        except ImportError as error:
            raise ImportError("Codec2AudioTokenizer needs pycodec2: pip install pycodec2==4.1.1") from error
        self.config = config or Codec2AudioTokenizerConfig()
        self._codec2 = pycodec2.Codec2
        probe = self._codec2(self.config.mode)
        found = (probe.samples_per_frame(), probe.bits_per_frame(), probe.bytes_per_frame())
        expected = (self.config.samples_per_frame, self.config.bits_per_frame, self.config.num_codebooks)
        if found != expected:
            raise RuntimeError(f"libcodec2 mode {self.config.mode} has (samples, bits, bytes) {found}, not {expected}.")

    def save_pretrained(self, folder) -> None:
        """Write ``config.json`` into ``folder`` (created if missing)."""
        self.config.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder) -> "Codec2AudioTokenizer":
        """The tokenizer whose config ``save_pretrained`` wrote into ``folder``.

        Raises:
            FileNotFoundError: ``folder`` holds no ``config.json``.
        """
        if not (Path(folder) / "config.json").is_file():
            raise FileNotFoundError(f"no Codec2AudioTokenizer config.json in {str(folder)!r}")
        return cls(Codec2AudioTokenizerConfig.from_pretrained(folder))

    def num_frames(self, num_samples: int) -> int:
        """Code frames for ``num_samples`` samples at ``config.sampling_rate``."""
        codec_samples = math.ceil(num_samples * CODEC_SAMPLING_RATE / self.config.sampling_rate)
        return -(-codec_samples // self.config.samples_per_frame)

    @torch.no_grad()
    def encode(self, audio, sampling_rate: int | None = None) -> torch.LongTensor:
        """Codes ``[B, K, T']`` int64 of one utterance or a batch (see the class docstring).

        Raises:
            ValueError: bad audio (empty, NaN/Inf, dtype, rank, sampling rate).
        """
        waveforms, _ = prepare_waveforms(audio, sampling_rate, self.config.sampling_rate, True, type(self).__name__)
        waveforms = torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)  # [B, L]
        narrow = torchaudio.functional.resample(waveforms, self.config.sampling_rate, CODEC_SAMPLING_RATE)
        frames, step = self.num_frames(waveforms.shape[1]), self.config.samples_per_frame
        narrow = torch.nn.functional.pad(narrow, (0, frames * step - narrow.shape[1]))
        # Codec 2 reads 16-bit PCM; louder than full scale would wrap around, so it is clipped as a DAC would.
        pcm = (narrow * 32768).round().clamp(-32768, 32767).to(torch.int16).numpy()
        codes = []
        for row in pcm:
            codec = self._codec2(self.config.mode)
            packed = b"".join(codec.encode(np.ascontiguousarray(row[i * step : (i + 1) * step])) for i in range(frames))
            codes.append(np.frombuffer(packed, dtype=np.uint8).reshape(frames, self.config.num_codebooks).T)
        return torch.from_numpy(np.stack(codes)).long()

    def check_codes(self, codes) -> torch.LongTensor:
        """Return ``codes`` as int64 ``[B, K, T']`` or raise ``ValueError`` saying what is wrong."""
        return check_audio_codes(
            codes, self.config.num_codebooks, self.config.codebook_size, f"Codec 2 mode {self.config.mode} has"
        )

    @torch.no_grad()
    def decode(self, codes) -> torch.FloatTensor:
        """Audio ``[B, L]`` float32 at ``config.sampling_rate`` from codes ``[B, K, T']``."""
        codes = self.check_codes(codes).cpu()
        packed = codes.transpose(1, 2).to(torch.uint8).numpy()  # [B, T', K]
        audio = []
        for row in packed:
            codec = self._codec2(self.config.mode)
            pcm = np.concatenate([codec.decode(frame.tobytes()) for frame in row])
            audio.append(torch.from_numpy(pcm.astype(np.float32) / 32768))
        narrow = torch.stack(audio)  # [B, T' * samples_per_frame] at 8 kHz
        return torchaudio.functional.resample(narrow, CODEC_SAMPLING_RATE, self.config.sampling_rate)
