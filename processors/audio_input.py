"""Validate raw audio and turn it into mono float32 waveforms at one sampling rate.

Shared by the feature extractor and the audio tokenizer, so both accept exactly the same inputs
and reject bad ones with the same messages.

Accepted inputs (the transformers conventions, plus multi-channel):
- one utterance: a 1-D numpy array / torch tensor / list of floats, ``[T]``;
- a batch: a list or tuple of utterances, a 2-D array / tensor ``[B, T]`` of mono rows, or a 3-D
  one ``[B, T, C]`` of multi-channel rows;
- dtypes: float16/32/64 and bfloat16 (used as they are, expected in about [-1, 1]),
  int16 PCM (divided by 32768) and int32 PCM (divided by 2**31). Other dtypes raise ``ValueError``.
- multi-channel: an utterance given as a 2-D array inside a list, ``[T, C]`` (soundfile) or
  ``[C, T]`` (torchaudio.load), is mixed down to mono by averaging the channels. The channel axis
  is the shorter one and must have at most ``MAX_CHANNELS`` entries; a square array is ambiguous
  and raises. A top-level 2-D array whose rows hold at most ``MAX_CHANNELS`` samples is almost
  surely one multi-channel utterance mistaken for a batch, so it raises with the fix.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio
from transformers.utils import logging

logger = logging.get_logger(__name__)

MAX_CHANNELS = 8
# Audio rates accepted (Hz): from narrow-band telephony's lowest rates to studio recordings. A rate
# outside this range is almost surely a mistake (samples passed as the rate, kHz instead of Hz).
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 4_000, 384_000
# Float audio beyond this peak is not audio in [-1, 1] (int32 PCM passed as floats reaches 2**31) and
# overflows float32 power spectra downstream; int16 PCM passed as floats (peak 32768) is still read.
MAX_FLOAT_AMPLITUDE = 1e6

_FLOAT_DTYPES = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}
_PCM_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
_TORCH_TO_NUMPY = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.int16: np.int16,
    torch.int32: np.int32,
}


def _to_numpy(wave, where: str) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu()
        if wave.dtype == torch.bfloat16:
            return wave.float().numpy()
        if wave.dtype not in _TORCH_TO_NUMPY:
            raise ValueError(f"{where}: unsupported dtype {wave.dtype}; pass float audio or int16/int32 PCM.")
        return wave.numpy()
    try:
        array = np.asarray(wave)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: cannot read the audio as an array ({err}).") from err
    return array


def _to_float(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype in _FLOAT_DTYPES:
        # Overflow to inf is caught by the finiteness check that follows.
        with np.errstate(over="ignore"):
            return array.astype(np.float32, copy=False)
    if array.dtype in _PCM_SCALE:
        return (array.astype(np.float64) / _PCM_SCALE[array.dtype]).astype(np.float32)
    raise ValueError(
        f"{where}: unsupported dtype {array.dtype}; pass float audio in [-1, 1] or int16/int32 PCM "
        "(a list of Python ints reads as int64: convert it with np.asarray(x, dtype=np.int16))."
    )


def _mix_down(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise ValueError(f"{where}: expected audio of rank 1 [T] or 2 [T, C] / [C, T], got shape {array.shape}.")
    if array.size == 0:  # before averaging: the mean of no samples is NaN
        raise ValueError(f"{where}: the audio is empty (shape {array.shape}).")
    short_axis = int(np.argmin(array.shape))
    if array.shape[0] == array.shape[1] or array.shape[short_axis] > MAX_CHANNELS:
        raise ValueError(
            f"{where}: cannot tell the channel axis of shape {array.shape} (at most {MAX_CHANNELS} channels, "
            "on the shorter axis); mix it down yourself, e.g. audio.mean(axis=channel_axis)."
        )
    logger.warning_once(f"Multi-channel audio of shape {array.shape}: averaging the channels to mono.")
    return array.mean(axis=short_axis)


def to_mono_float(wave, where: str = "audio") -> torch.Tensor:
    """Validate one utterance and return it as a mono waveform.

    Args:
        wave: numpy array, torch tensor or list of numbers, ``[T]``, ``[T, C]`` or ``[C, T]``.
        where: names the utterance in error messages.

    Returns:
        ``torch.FloatTensor`` of shape ``[T]`` (float32, PCM scaled to [-1, 1]).

    Raises:
        ValueError: wrong rank or dtype, empty audio, NaN or Inf (also after the cast to float32), a peak
            over ``MAX_FLOAT_AMPLITUDE``.
    """
    array = _to_numpy(wave, where)
    if array.ndim == 0:
        raise ValueError(f"{where}: expected a waveform, got a scalar.")
    array = _to_float(array, where)
    array = _mix_down(array, where)
    if array.size == 0:
        raise ValueError(f"{where}: the audio is empty.")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: the audio contains NaN or Inf values (or overflows float32).")
    peak = float(np.abs(array).max())
    if peak > MAX_FLOAT_AMPLITUDE:
        raise ValueError(
            f"{where}: float audio is expected in about [-1, 1], got a peak of {peak:.3g} (over "
            f"{MAX_FLOAT_AMPLITUDE:g}, where spectra overflow); integer PCM passed as floats? Pass it as "
            "int16/int32, or divide by 32768."
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:  # torch cannot share read-only buffers (e.g. the ASR pipeline's)
        array = array.copy()
    return torch.from_numpy(array)


def split_batch(raw_speech) -> tuple[list, bool]:
    """Split a single utterance or a batch into a list of utterances.

    Returns:
        ``(utterances, is_batched)``; ``utterances`` is a list of not yet validated waveforms.
    """
    if isinstance(raw_speech, (int, float, np.generic)):
        raise ValueError(f"Expected a waveform, got a scalar {raw_speech!r}.")
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        if raw_speech.ndim <= 1:
            return [raw_speech], False
        if raw_speech.ndim == 2 and raw_speech.shape[1] <= MAX_CHANNELS < raw_speech.shape[0]:
            raise ValueError(
                f"Got a 2-D array of shape {tuple(raw_speech.shape)}: a top-level 2-D array is a batch "
                "[B, T], and this looks like one multi-channel utterance [T, C]. Pass it inside a list "
                "([audio]) to mix it down to mono, or pass audio.mean(axis=1)."
            )
        return list(raw_speech), True
    if isinstance(raw_speech, Sequence) and not isinstance(raw_speech, (str, bytes)):
        if len(raw_speech) == 0:
            raise ValueError("Got an empty list of audio.")
        if isinstance(raw_speech[0], (np.ndarray, torch.Tensor, list, tuple)):
            return list(raw_speech), True
        return [raw_speech], False
    raise ValueError(f"Expected audio as a numpy array, a torch tensor or a list, got {type(raw_speech).__name__}.")


def check_sampling_rate(sampling_rate, name: str = "sampling_rate") -> int:
    """Return ``sampling_rate`` as an int in ``[MIN_SAMPLING_RATE, MAX_SAMPLING_RATE]`` Hz, or raise ``ValueError``."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a positive integer, got {sampling_rate!r}.")
    if not math.isfinite(sampling_rate) or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise ValueError(f"`{name}` must be a positive integer, got {sampling_rate!r}.")
    if not MIN_SAMPLING_RATE <= sampling_rate <= MAX_SAMPLING_RATE:
        raise ValueError(
            f"`{name}` = {int(sampling_rate)} Hz is outside the supported range [{MIN_SAMPLING_RATE}, "
            f"{MAX_SAMPLING_RATE}] Hz; pass the rate in Hz (16 kHz audio is sampling_rate=16000)."
        )
    return int(sampling_rate)


def prepare_waveforms(
    raw_speech, sampling_rate, target_sampling_rate: int, resample: bool, owner: str
) -> tuple[list[torch.Tensor], bool]:
    """Validate, mix down and resample raw audio.

    Args:
        raw_speech: one utterance or a batch (see the module docstring).
        sampling_rate: the rate of ``raw_speech`` in Hz, or ``None`` (assumed to be the target rate,
            with the warning transformers' feature extractors give).
        target_sampling_rate: the rate the caller works at.
        resample: resample other rates with ``torchaudio.functional.resample``; if False they raise.
        owner: the class name used in messages.

    Returns:
        ``(waveforms, is_batched)``: a list of float32 tensors ``[T_i]`` at ``target_sampling_rate``.
    """
    if sampling_rate is None:
        logger.warning(
            f"It is strongly recommended to pass the `sampling_rate` argument to `{owner}()`. "
            "Failing to do so can result in silent errors that might be hard to debug."
        )
        sampling_rate = target_sampling_rate
    sampling_rate = check_sampling_rate(sampling_rate)
    if sampling_rate != target_sampling_rate and not resample:
        raise ValueError(
            f"{owner} expects audio at {target_sampling_rate} Hz but got {sampling_rate} Hz; resample it to "
            f"{target_sampling_rate} Hz or pass resample=True."
        )
    utterances, is_batched = split_batch(raw_speech)
    waveforms = []
    for i, wave in enumerate(utterances):
        wave = to_mono_float(wave, where=f"audio[{i}]" if is_batched else "audio")
        if sampling_rate != target_sampling_rate:
            wave = torchaudio.functional.resample(wave, sampling_rate, target_sampling_rate)
            if wave.numel() == 0:
                raise ValueError(f"audio[{i}] is empty after resampling {sampling_rate} -> {target_sampling_rate} Hz.")
        waveforms.append(wave)
    return waveforms, is_batched
