"""How decoded audio sounds: the listener-side metrics of an audio tokenizer's round trip, and spectral ones.

Every waveform here is float32 mono ``[L]`` at 16 kHz (``SAMPLING_RATE``) in about [-1, 1]; another rate,
another rank, no samples or NaN/Inf raise ``ValueError`` naming the argument.

- :func:`whisper_wer`: Whisper tiny.en (the converted offline copy, greedy, through
  ``asr.Transcriber``) transcribes the originals and the decoded audio; WER of each against the
  reference texts (both sides through :func:`normalize_for_whisper`) and the ratio decoded / original,
  with paired 95% bootstrap intervals over utterances.
- :func:`speaker_similarity`: cosine similarity of Resemblyzer ``VoiceEncoder`` embeddings (the
  pretrained GE2E LSTM the wheel ships), in [0, 1] since the embeddings are non-negative.
- :func:`dnsmos`: Microsoft's DNSMOS P.835 (signal, background, overall) and P.808 MOS, no reference
  needed, from the ONNX models the ``speechmos`` wheel ships (through onnxruntime).
- :func:`spectral_metrics`: spectral convergence, log-mel L1 and waveform SNR after aligning the
  decoded audio to the original (a codec's delay would otherwise dominate them).

Resemblyzer and speechmos are imported when first used, so the rest of the package does not need them.
"""

import functools

import numpy as np
import torch
from scipy.stats import bootstrap
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from .asr import per_utterance_errors, rate_interval
from .data import SAMPLING_RATE
from .processors.log_mel import LogMelSpectrogram

WER_RATIO_TARGET = 1.5
SPEAKER_SIMILARITY_TARGET = 0.8


def check_audio(audio, sampling_rate: int = SAMPLING_RATE, name: str = "audio") -> np.ndarray:
    """``audio`` as float32 ``[L]`` numpy, or ``ValueError`` if it is not usable 16 kHz mono audio."""
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"{name}: expected audio at {SAMPLING_RATE} Hz, got {sampling_rate} Hz (resample it first).")
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"{name}: expected one mono waveform [L], got shape {audio.shape}.")
    if audio.size == 0:
        raise ValueError(f"{name}: the audio has no samples.")
    if not np.isfinite(audio).all():
        raise ValueError(f"{name}: the audio holds NaN or Inf.")
    return audio


def mean_interval(values, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values [N]`` (utterances resampled)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1 or np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,), np.mean, n_resamples=samples, method="percentile", random_state=np.random.default_rng(seed)
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# ---------------------------------------------------------------------------------------------- spectral


def estimate_delay(reference, estimate, max_delay_s: float = 0.1) -> int:
    """Samples by which ``estimate [L']`` lags ``reference [L]`` (both 16 kHz), in ``[0, max_delay_s]``.

    The lag that best correlates the two 20 ms RMS envelopes (1 ms steps), refined to the sample on the
    waveforms within +-1 ms. Envelopes, because a parametric codec or a Griffin-Lim vocoder keeps no
    phase, so the waveforms alone barely correlate.
    """
    reference, estimate = check_audio(reference, name="reference"), check_audio(estimate, name="estimate")
    step, max_lag = SAMPLING_RATE // 1000, int(max_delay_s * SAMPLING_RATE)
    n = min(len(reference), len(estimate))

    def envelope(x):
        power = np.convolve(x[:n].astype(np.float64) ** 2, np.ones(320) / 320, "same")
        return np.sqrt(power)[::step]

    ref_env, est_env = envelope(reference), envelope(estimate)
    best, best_score = 0, -np.inf
    for lag in range(0, min(max_lag // step, len(ref_env) - 2) + 1):
        a, b = ref_env[: len(ref_env) - lag], est_env[lag:]
        if a.std() == 0 or b.std() == 0:
            continue
        score = np.corrcoef(a, b)[0, 1]
        if score > best_score:
            best, best_score = lag * step, score
    refined = range(max(0, best - step), min(max_lag, best + step, n - 1) + 1)
    return max(refined, key=lambda lag: float(np.dot(reference[: n - lag], estimate[lag:n])))


def spectral_convergence(reference, estimate) -> float:
    """|| |S| - |S_hat| ||_F / || |S| ||_F over 1024-point STFTs (hop 256) of two 16 kHz waveforms, cut to
    their common length. 0 is perfect; lower is better."""
    reference, estimate = _common(reference, estimate)
    window = torch.hann_window(1024)
    magnitude = [
        torch.stft(torch.from_numpy(x), 1024, 256, window=window, return_complex=True).abs()
        for x in (reference, estimate)
    ]
    return float(torch.linalg.norm(magnitude[0] - magnitude[1]) / torch.linalg.norm(magnitude[0]))


def snr_db(reference, estimate) -> float:
    """Waveform SNR in dB, ``10 log10(sum(ref^2) / sum((ref - est)^2))``, of two 16 kHz waveforms cut to
    their common length (a vocoder or codec that invents phases stays near or below 0 dB)."""
    reference, estimate = _common(reference, estimate)
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-20)))


@functools.lru_cache(maxsize=1)
def _log_mel() -> LogMelSpectrogram:
    # The mel_rvq tokenizer's analysis (1024-point FFT, hop 256, 80 mels, floor 1e-5).
    return LogMelSpectrogram(SAMPLING_RATE, n_fft=1024, hop_length=256, n_mels=80, mel_floor=1e-5)


def log_mel_l1(reference, estimate) -> float:
    """Mean |log-mel(estimate) - log-mel(reference)| (natural log, 80 mels, hop 256) of two 16 kHz
    waveforms cut to their common length."""
    reference, estimate = _common(reference, estimate)
    mel = _log_mel()
    return float((mel(torch.from_numpy(estimate)) - mel(torch.from_numpy(reference))).abs().mean())


def _common(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    reference, estimate = check_audio(reference, name="reference"), check_audio(estimate, name="estimate")
    n = min(len(reference), len(estimate))
    return reference[:n], estimate[:n]


def spectral_metrics(reference, estimate, max_delay_s: float = 0.1) -> dict[str, float]:
    """``{"delay_ms", "spectral_convergence", "log_mel_l1", "snr_db"}`` of ``estimate`` against
    ``reference`` (16 kHz ``[L]`` each), after removing the delay :func:`estimate_delay` finds."""
    delay = estimate_delay(reference, estimate, max_delay_s)
    reference, estimate = check_audio(reference, name="reference"), check_audio(estimate, name="estimate")[delay:]
    return {
        "delay_ms": 1000 * delay / SAMPLING_RATE,
        "spectral_convergence": spectral_convergence(reference, estimate),
        "log_mel_l1": log_mel_l1(reference, estimate),
        "snr_db": snr_db(reference, estimate),
    }


# ---------------------------------------------------------------------------------------------- Whisper

# Whisper's English normaliser without its British-to-American spelling table (the converted folder ships
# none): it writes numbers as digits on both sides, so the corpus' spelled-out numbers and Whisper's digits
# agree, which the project's character normaliser (``asr.normalize_for_scoring``) would count as errors.
_ENGLISH = EnglishTextNormalizer({})


def normalize_for_whisper(text: str) -> str:
    """The normalisation of references and Whisper's transcripts before WER (numbers as digits, no
    punctuation, lower case, contractions expanded), as the Whisper paper scores English."""
    return _ENGLISH(text)


@functools.lru_cache(maxsize=1)
def _whisper(folder: str):
    from .asr import Transcriber

    return Transcriber.from_pretrained(folder)


def whisper_transcribe(audio: list, batch_size: int = 8, folder: str | None = None) -> list[str]:
    """Whisper tiny.en's greedy transcripts of 16 kHz waveforms ``[L_i]``, one string each.

    Args:
        folder: the converted Whisper folder; default ``whisper_conversion.baseline.default_output_dir()``
            (``run_scripts/convert_ct2_whisper.py`` writes it, offline).

    Raises:
        FileNotFoundError: no converted Whisper at ``folder``.
    """
    from .whisper_conversion.baseline import default_output_dir

    audio = [check_audio(a, name=f"audio[{i}]") for i, a in enumerate(audio)]
    transcriber = _whisper(str(folder or default_output_dir()))
    return [
        text for start in range(0, len(audio), batch_size) for text in transcriber(audio[start : start + batch_size])
    ]


def wer_comparison(
    texts: list[str], original_hypotheses: list[str], decoded_hypotheses: list[str], samples: int = 2000, seed: int = 0
) -> dict:
    """WER of transcripts of the originals and of the decoded audio against the same reference texts.

    Args:
        texts, original_hypotheses, decoded_hypotheses: ``[N]`` strings each, utterance by utterance
            (normalised with :func:`normalize_for_whisper` here).

    Returns:
        ``{"original_wer", "original_wer_ci", "decoded_wer", "decoded_wer_ci", "wer_ratio", "wer_ratio_ci",
        "words", "utterance_words" [N], "original_word_errors" [N], "decoded_word_errors" [N]}``: corpus-level
        WERs, the ratio decoded / original (inf where the originals have no error and the decoded audio has
        some) and 95% paired percentile bootstrap intervals over utterances.
    """
    if not (len(texts) == len(original_hypotheses) == len(decoded_hypotheses)) or not texts:
        raise ValueError(
            f"need as many texts as transcripts, at least one: got {len(texts)}, {len(original_hypotheses)}, "
            f"{len(decoded_hypotheses)}"
        )
    references = [normalize_for_whisper(t) for t in texts]
    if any(not r.split() for r in references):
        raise ValueError("a reference text has no words after normalisation")
    original = per_utterance_errors(references, [normalize_for_whisper(t) for t in original_hypotheses])
    decoded = per_utterance_errors(references, [normalize_for_whisper(t) for t in decoded_hypotheses])
    words = original["words"]
    original_errors, decoded_errors = original["word_errors"], decoded["word_errors"]

    def ratio(dec, orig, axis=-1):
        dec, orig = np.sum(dec, axis=axis), np.sum(orig, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(orig > 0, dec / np.maximum(orig, 1), np.where(dec > 0, np.inf, 1.0))

    if len(words) > 1 and not np.array_equal(original_errors, decoded_errors):
        # A resample whose originals have no error has an infinite ratio; scipy's spread estimate then
        # subtracts inf from inf, harmlessly for the percentile interval.
        with np.errstate(invalid="ignore"):
            result = bootstrap(
                (decoded_errors.astype(np.float64), original_errors.astype(np.float64)),
                ratio,
                paired=True,
                vectorized=True,
                n_resamples=samples,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
        ratio_ci = (float(result.confidence_interval.low), float(result.confidence_interval.high))
    else:
        ratio_ci = (float(ratio(decoded_errors, original_errors)),) * 2
    return {
        "original_wer": float(original_errors.sum() / words.sum()),
        "original_wer_ci": rate_interval(original_errors, words, samples, seed),
        "decoded_wer": float(decoded_errors.sum() / words.sum()),
        "decoded_wer_ci": rate_interval(decoded_errors, words, samples, seed),
        "wer_ratio": float(ratio(decoded_errors, original_errors)),
        "wer_ratio_ci": ratio_ci,
        "words": int(words.sum()),
        "utterance_words": words.tolist(),
        "original_word_errors": original_errors.tolist(),
        "decoded_word_errors": decoded_errors.tolist(),
    }


def whisper_wer(originals: list, decoded: list, texts: list[str], folder: str | None = None) -> dict:
    """:func:`wer_comparison` of Whisper tiny.en's transcripts of ``originals`` and ``decoded`` (16 kHz
    waveforms ``[L_i]``, the same utterances in the same order) against ``texts``, plus both transcript
    lists as ``"original_transcripts"`` and ``"decoded_transcripts"``."""
    if len(originals) != len(decoded):
        raise ValueError(f"{len(originals)} originals but {len(decoded)} decoded utterances")
    original_hypotheses = whisper_transcribe(originals, folder=folder)
    decoded_hypotheses = whisper_transcribe(decoded, folder=folder)
    out = wer_comparison(texts, original_hypotheses, decoded_hypotheses)
    return out | {"original_transcripts": original_hypotheses, "decoded_transcripts": decoded_hypotheses}


# ---------------------------------------------------------------------------------------------- speaker


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    try:
        from resemblyzer import VoiceEncoder
    except ImportError as error:
        raise ImportError("speaker similarity needs Resemblyzer: pip install Resemblyzer==0.1.4") from error
    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(audio, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Resemblyzer's utterance embedding ``[256]`` float32 (unit norm, non-negative) of 16 kHz ``audio [L]``.

    The audio goes through Resemblyzer's own preprocessing (loudness raised to -30 dBFS, pauses longer
    than about 0.2 s cut by WebRTC VAD); if the VAD keeps under 0.1 s (e.g. a tone, no speech), the
    loudness-normalised audio is embedded whole.
    """
    from resemblyzer.audio import normalize_volume, trim_long_silences
    from resemblyzer.hparams import audio_norm_target_dBFS

    audio = check_audio(audio, sampling_rate)
    if not np.any(audio):
        raise ValueError("audio: all samples are zero; a silent clip has no speaker")
    encoder = _voice_encoder()
    audio = normalize_volume(audio, audio_norm_target_dBFS, increase_only=True).astype(np.float32)
    # The VAD reads 16-bit PCM: clip as a 16-bit file would, or louder samples wrap around.
    speech = trim_long_silences(np.clip(audio, -1, 1))
    return encoder.embed_utterance(speech if len(speech) >= SAMPLING_RATE // 10 else audio)


def speaker_similarity(a, b, sampling_rate: int = SAMPLING_RATE) -> float:
    """Cosine similarity of the Resemblyzer embeddings of two 16 kHz waveforms ``[L_a]``, ``[L_b]``: 1 for
    the same audio, about 0.8-0.95 for two clips of one speaker, lower for different speakers."""
    return float(np.dot(speaker_embedding(a, sampling_rate), speaker_embedding(b, sampling_rate)))


# ---------------------------------------------------------------------------------------------- DNSMOS


def dnsmos(audio, sampling_rate: int = SAMPLING_RATE) -> dict[str, float]:
    """DNSMOS of 16 kHz ``audio [L]``: ``{"ovrl_mos", "sig_mos", "bak_mos", "p808_mos"}``, each on 1-5.

    DNSMOS scores 9.01 s windows (hop 1 s) and averages them; a shorter clip is repeated up to 9.01 s,
    as speechmos does. Samples beyond [-1, 1] are clipped, as a 16-bit file would be.
    """
    try:
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as error:
        raise ImportError("DNSMOS needs speechmos and onnxruntime: pip install speechmos==0.0.1.1") from error
    audio = check_audio(audio, sampling_rate)
    scores = speechmos_dnsmos.run(np.clip(audio, -1, 1), sr=SAMPLING_RATE)
    return {k: float(scores[k]) for k in ("ovrl_mos", "sig_mos", "bak_mos", "p808_mos")}


# ---------------------------------------------------------------------------------------------- all


def summarise(values) -> dict:
    """``{"mean", "ci": (low, high), "values": [N]}`` of per-utterance ``values``, via :func:`mean_interval`."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "ci": mean_interval(values), "values": values}


def score_round_trip(
    originals: list, decoded: list, texts: list[str], original_transcripts: list[str] | None = None
) -> dict:
    """Every metric of one tokenizer's round trip over N utterances, with 95% bootstrap intervals.

    Args:
        originals, decoded: 16 kHz waveforms ``[L_i]``, the same utterances in the same order (a decoded
            one may be a little longer or shorter; spectral metrics cut both to the common length).
        texts: the N reference transcripts.
        original_transcripts: Whisper's transcripts of ``originals`` if already made (saves a pass).

    Returns:
        ``{"whisper": wer_comparison(...) + "decoded_transcripts", "speaker_similarity": summarise(...),
        "dnsmos": {"ovrl_mos", "sig_mos", "bak_mos", "p808_mos": summarise(...)}, "spectral":
        {"delay_ms", "spectral_convergence", "log_mel_l1", "snr_db": summarise(...)}, "meets_targets":
        {"wer_ratio", "speaker_similarity", "both": bool}}``; targets ``WER_RATIO_TARGET`` (at most) and
        ``SPEAKER_SIMILARITY_TARGET`` (at least), judged on the point estimates.
    """
    if len(originals) != len(decoded) or len(originals) != len(texts):
        raise ValueError(
            f"need one decoded utterance and text per original: {len(originals)}, {len(decoded)}, {len(texts)}"
        )
    if original_transcripts is None:
        original_transcripts = whisper_transcribe(originals)
    decoded_transcripts = whisper_transcribe(decoded)
    whisper = wer_comparison(texts, original_transcripts, decoded_transcripts)
    whisper["decoded_transcripts"] = decoded_transcripts
    similarity = summarise(speaker_similarity(a, b) for a, b in zip(originals, decoded))
    mos = [dnsmos(d) for d in decoded]
    spectral = [spectral_metrics(a, b) for a, b in zip(originals, decoded)]
    meets = {
        "wer_ratio": whisper["wer_ratio"] <= WER_RATIO_TARGET,
        "speaker_similarity": similarity["mean"] >= SPEAKER_SIMILARITY_TARGET,
    }
    return {
        "whisper": whisper,
        "speaker_similarity": similarity,
        "dnsmos": {k: summarise(m[k] for m in mos) for k in mos[0]},
        "spectral": {k: summarise(s[k] for s in spectral) for k in spectral[0]},
        "meets_targets": meets | {"both": all(meets.values())},
    }
