"""Log-mel spectrogram in bounded memory, built from torchaudio's transforms.

Frames are independent once the waveform is centre-padded, so the spectrogram is computed over
blocks of ``block_frames`` frames: hours of audio never hold one STFT of the whole signal.
"""

import torch
import torch.nn.functional as F
import torchaudio

WINDOWS = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
    "boxcar": lambda length, **kwargs: torch.ones(length, **kwargs),
}
PAD_MODES = ("constant", "reflect")


def window_fn(name: str):
    """The torch window function called ``name`` (one of ``WINDOWS``)."""
    if name not in WINDOWS:
        raise ValueError(f"Unknown window {name!r}; choose one of {sorted(WINDOWS)}.")
    return WINDOWS[name]


class LogMelSpectrogram(torch.nn.Module):
    """Natural-log mel power spectrogram with centred frames.

    ``forward(waveform [T] float32) -> [T', n_mels] float32`` with
    ``T' = 1 + (T + 2 * (n_fft // 2) - n_fft) // hop_length`` (``1 + T // hop_length`` for an even
    ``n_fft``, as ``torch.stft(center=True)``); frame ``t`` is centred on sample ``t * hop_length``.
    ``log(max(mel_power, mel_floor))`` keeps silence finite.

    Args:
        sampling_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max (None: Nyquist),
        window ("hann", "hamming", "blackman", "bartlett", "boxcar"), mel_scale ("htk" or "slaney"),
        mel_norm (None or "slaney"), mel_floor, pad_mode ("constant": zeros, any length works;
        "reflect": the audio must be longer than n_fft // 2 samples), block_frames.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int = 160,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        window: str = "hann",
        mel_scale: str = "htk",
        mel_norm: str | None = None,
        mel_floor: float = 1e-10,
        pad_mode: str = "constant",
        block_frames: int = 4096,
    ):
        super().__init__()
        win_length = win_length or n_fft
        if not 0 < win_length <= n_fft or hop_length <= 0 or n_mels <= 0:
            raise ValueError(
                f"Need 0 < win_length <= n_fft, hop_length > 0, n_mels > 0; got win_length={win_length}, "
                f"n_fft={n_fft}, hop_length={hop_length}, n_mels={n_mels}."
            )
        f_max = sampling_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_max <= sampling_rate / 2:
            raise ValueError(f"Need 0 <= f_min < f_max <= sampling_rate / 2; got f_min={f_min}, f_max={f_max}.")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        self.mel_floor, self.pad_mode, self.block_frames = mel_floor, pad_mode, block_frames
        # center=False: we pad once per utterance ourselves so that blocks can be cut anywhere.
        self.spectrogram = torchaudio.transforms.Spectrogram(
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            window_fn=window_fn(window),
            power=2.0,
            center=False,
        )
        self.mel_scale = torchaudio.transforms.MelScale(
            n_mels=n_mels,
            sample_rate=sampling_rate,
            f_min=f_min,
            f_max=f_max,
            n_stft=n_fft // 2 + 1,
            norm=mel_norm,
            mel_scale=mel_scale,
        )

    def num_frames(self, num_samples: int) -> int:
        """Number of frames for ``num_samples`` samples."""
        return 1 + (num_samples + 2 * (self.n_fft // 2) - self.n_fft) // self.hop_length

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram ``[T', n_mels]`` (before the log) of ``waveform [T]``."""
        half = self.n_fft // 2
        if self.pad_mode == "reflect" and waveform.numel() <= half:
            raise ValueError(f"pad_mode='reflect' needs more than n_fft // 2 = {half} samples, got {waveform.numel()}.")
        padded = F.pad(waveform[None, None], (half, half), mode=self.pad_mode)[0, 0]
        total = self.num_frames(waveform.numel())
        blocks = []
        for start in range(0, total, self.block_frames):
            stop = min(start + self.block_frames, total)
            piece = padded[start * self.hop_length : (stop - 1) * self.hop_length + self.n_fft]
            blocks.append(self.mel_scale(self.spectrogram(piece)).T)  # [frames, n_mels]
        return torch.cat(blocks)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[T', n_mels]`` float32 of ``waveform [T]`` float32."""
        return self.mel_power(waveform).clamp_min(self.mel_floor).log()


def frame_waveform(waveform: torch.Tensor, frame_length: int, hop_length: int, window: str) -> torch.Tensor:
    """Cut ``waveform [T]`` into frames ``[T', frame_length]``, ``T' = 1 + ceil((T - frame_length) / hop)``.

    The tail is zero-padded so that no sample is dropped; audio shorter than one frame gives one
    zero-padded frame. ``window`` is applied to each frame ("boxcar" leaves samples unchanged).
    """
    total = max(waveform.numel() - frame_length, 0)
    num_frames = 1 + -(-total // hop_length)
    needed = (num_frames - 1) * hop_length + frame_length
    padded = F.pad(waveform, (0, needed - waveform.numel()))
    frames = padded.unfold(0, frame_length, hop_length)
    return frames * window_fn(window)(frame_length, dtype=frames.dtype)
