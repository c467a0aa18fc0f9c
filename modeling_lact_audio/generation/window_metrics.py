"""Does a generated continuation drift? Listener-side metrics per window of a long continuation.

:func:`continuation_metrics` cuts the continuation into consecutive windows (5 s by default) and measures in
each: speaker similarity to the prompt (Resemblyzer, through ``audio_quality``), pitch (median f0, voiced
fraction, jumps between frames), brightness and activity (spectral rolloff, spectral flux, onset rate) and
optionally DNSMOS. The summary says whether they hold steady: the slope of the similarity over time and the
spread of the spectral measures across windows.

Pitch: ``librosa.yin`` (fast, about 15 ms of CPU per 5 s window; ``librosa.pyin`` takes about 0.5 s after a
6 s numba compilation) with its own voicing rule, since YIN gives an f0 for every frame: a frame is voiced
when the waveform's normalised autocorrelation at the YIN period is at least ``VOICING_CORRELATION`` and its
RMS is within ``VOICING_RANGE_DB`` of the window's loudest frame.
"""

import math

import librosa
import numpy as np

from .. import audio_quality
from ..data import SAMPLING_RATE

__all__ = ["continuation_metrics", "pitch_track", "window_features"]

F0_MIN_HZ, F0_MAX_HZ = 60.0, 500.0
FRAME_LENGTH, HOP_LENGTH = 1024, 256  # 64 ms frames every 16 ms at 16 kHz
VOICING_CORRELATION = 0.5
VOICING_RANGE_DB = 40.0
ROLL_PERCENT = 0.85
# Onsets: peaks of the spectral flux (mean positive log-mel rise, in dB) this far above its local mean. An absolute
# threshold, not librosa's default on the envelope scaled to its maximum, which finds onsets in a steady tone.
ONSET_DELTA_DB = 0.5


def pitch_track(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> tuple[np.ndarray, np.ndarray]:
    """f0 and voicing of ``audio [L]`` (float32, 16 kHz) per 16 ms frame (centred 64 ms windows).

    Returns:
        ``(f0_hz [F], voiced [F])`` float64 / bool, ``F = 1 + L // 256``: ``librosa.yin``'s f0 in
        [60, 500] Hz for every frame, and the voicing rule of the module docstring.
    """
    f0 = librosa.yin(
        audio, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=sampling_rate, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH
    ).astype(np.float64)
    # The frames YIN analysed (centred, zero padded), to test each f0 against the waveform.
    padded = np.pad(audio.astype(np.float64), FRAME_LENGTH // 2)
    frames = librosa.util.frame(padded, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH).T[: len(f0)]  # [F, N]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    lags = np.clip(np.round(sampling_rate / f0).astype(int), 1, FRAME_LENGTH - 1)
    correlation = np.zeros(len(f0))
    for t, (frame, lag) in enumerate(zip(frames, lags)):
        a, b = frame[:-lag], frame[lag:]
        energy = math.sqrt(float(np.dot(a, a) * np.dot(b, b)))
        correlation[t] = float(np.dot(a, b)) / energy if energy > 0 else 0.0
    loud_enough = rms >= max(rms.max() * 10 ** (-VOICING_RANGE_DB / 20), 1e-5)
    return f0, (correlation >= VOICING_CORRELATION) & loud_enough


def window_features(window: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> dict:
    """Pitch and spectral measures of one window ``[L]`` (float32, 16 kHz).

    Returns:
        ``{"f0_median_hz", "voiced_fraction", "pitch_jump_semitones", "rolloff_hz", "flux", "onset_rate"}``:
        median f0 of the voiced frames (NaN if none); the share of voiced frames; the mean absolute change
        ``|12 log2(f0[t+1] / f0[t])|`` over consecutive frames that are both voiced (NaN if no such pair); the
        mean 85% spectral rolloff (1024-point STFT, hop 256); the mean spectral flux (``librosa.onset.
        onset_strength``: positive log-mel differences in dB between frames, averaged over bands); onsets
        (``librosa.onset.onset_detect`` on that envelope, unnormalised, peaks ``ONSET_DELTA_DB`` above the
        local mean) per second.
    """
    f0, voiced = pitch_track(window, sampling_rate)
    pairs = voiced[1:] & voiced[:-1]
    jumps = np.abs(12 * np.log2(f0[1:] / f0[:-1]))[pairs]
    rolloff = librosa.feature.spectral_rolloff(
        y=window, sr=sampling_rate, n_fft=FRAME_LENGTH, hop_length=HOP_LENGTH, roll_percent=ROLL_PERCENT
    )
    envelope = librosa.onset.onset_strength(y=window, sr=sampling_rate, hop_length=HOP_LENGTH)
    onsets = librosa.onset.onset_detect(
        onset_envelope=envelope, sr=sampling_rate, hop_length=HOP_LENGTH, normalize=False, delta=ONSET_DELTA_DB
    )
    return {
        "f0_median_hz": float(np.median(f0[voiced])) if voiced.any() else math.nan,
        "voiced_fraction": float(voiced.mean()),
        "pitch_jump_semitones": float(jumps.mean()) if jumps.size else math.nan,
        "rolloff_hz": float(rolloff.mean()),
        "flux": float(envelope.mean()),
        "onset_rate": len(onsets) / (len(window) / sampling_rate),
    }


def _finite_mean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def _cv(values) -> float:
    """Coefficient of variation std / mean (population std) over windows; NaN when the mean is 0."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean()
    return float(values.std() / mean) if mean != 0 else math.nan


def continuation_metrics(
    audio, prompt_audio, sampling_rate: int = SAMPLING_RATE, window_seconds: float = 5.0, use_dnsmos: bool = True
) -> dict:
    """Per-window drift metrics of a generated continuation against its prompt.

    Args:
        audio: the continuation ``[L]`` float (numpy or torch), mono, in about [-1, 1].
        prompt_audio: the prompt ``[L_p]`` the continuation follows (its whole Resemblyzer embedding is the
            speaker reference).
        sampling_rate: rate of both in Hz; other rates than 16 kHz are resampled to 16 kHz first.
        window_seconds: length of the consecutive, non-overlapping windows; a last partial window shorter than
            half a window is dropped, a longer one is kept (shorter).
        use_dnsmos: also score each window with DNSMOS (speechmos: each window is repeated to 9.01 s and scored
            by two ONNX models, several CPU seconds per window; by far the slowest part).

    Returns:
        ``{"windows": [...], "num_windows", "speaker_similarity_mean", "speaker_similarity_slope_per_minute",
        "pitch_jump_semitones_mean", "rolloff_cv", "flux_cv", "onset_rate_variance"[, "dnsmos_ovrl_mean"]}``.
        Each window is ``{"start_s", "speaker_similarity", **window_features(...)[, "dnsmos_ovrl",
        "dnsmos_sig", "dnsmos_bak"]}``; a silent window (all zeros) has a NaN speaker similarity. The means
        skip NaN; the slope is ``numpy.polyfit`` of the similarity on the window start in minutes (NaN with
        fewer than two windows of finite similarity); ``*_cv`` is std / mean over windows; the onset-rate
        variance is the population variance over windows.

    Raises:
        ValueError: empty, multi-channel or non-finite audio, a silent prompt, a bad rate or window length,
            or audio shorter than one window (the message gives both lengths).
    """
    audio, prompt_audio = (
        audio_quality.check_audio(audio, name="audio"),
        audio_quality.check_audio(prompt_audio, name="prompt_audio"),
    )
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive int (Hz), got {sampling_rate!r}")
    if not (isinstance(window_seconds, (int, float)) and math.isfinite(window_seconds) and window_seconds > 0):
        raise ValueError(f"window_seconds must be a positive number of seconds, got {window_seconds!r}")
    if not np.any(prompt_audio):
        raise ValueError("prompt_audio: all samples are zero; a silent prompt has no speaker to compare with")
    if sampling_rate != SAMPLING_RATE:
        audio = librosa.resample(audio, orig_sr=sampling_rate, target_sr=SAMPLING_RATE)
        prompt_audio = librosa.resample(prompt_audio, orig_sr=sampling_rate, target_sr=SAMPLING_RATE)
    size = int(round(window_seconds * SAMPLING_RATE))
    if len(audio) < size:
        raise ValueError(
            f"audio is {len(audio) / SAMPLING_RATE:.3f} s ({len(audio)} samples at {SAMPLING_RATE} Hz), shorter "
            f"than one window of {window_seconds} s ({size} samples)"
        )
    starts = list(range(0, len(audio) - size + 1, size))
    rest = len(audio) - (starts[-1] + size)
    if rest >= size / 2:
        starts.append(starts[-1] + size)
    reference = audio_quality.speaker_embedding(prompt_audio)
    windows = []
    for start in starts:
        window = audio[start : start + size]
        similarity = float(np.dot(audio_quality.speaker_embedding(window), reference)) if np.any(window) else math.nan
        entry = {"start_s": start / SAMPLING_RATE, "speaker_similarity": similarity, **window_features(window)}
        if use_dnsmos:
            mos = audio_quality.dnsmos(window)
            entry.update(dnsmos_ovrl=mos["ovrl_mos"], dnsmos_sig=mos["sig_mos"], dnsmos_bak=mos["bak_mos"])
        windows.append(entry)
    column = lambda key: np.array([w[key] for w in windows], dtype=np.float64)  # noqa: E731
    similarity, minutes = column("speaker_similarity"), column("start_s") / 60
    finite = np.isfinite(similarity)
    slope = float(np.polyfit(minutes[finite], similarity[finite], 1)[0]) if finite.sum() >= 2 else math.nan
    summary = {
        "num_windows": len(windows),
        "speaker_similarity_mean": _finite_mean(similarity),
        "speaker_similarity_slope_per_minute": slope,
        "pitch_jump_semitones_mean": _finite_mean(column("pitch_jump_semitones")),
        "rolloff_cv": _cv(column("rolloff_hz")),
        "flux_cv": _cv(column("flux")),
        "onset_rate_variance": float(np.var(column("onset_rate"))),
    }
    if use_dnsmos:
        summary["dnsmos_ovrl_mean"] = _finite_mean(column("dnsmos_ovrl"))
    return {"windows": windows, **summary}
