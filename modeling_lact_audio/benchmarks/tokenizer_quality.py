"""Reconstruction quality of the mel_rvq audio tokenizer on speech synthesised offline with espeak-ng.

Fits ``LaCTAudioTokenizer`` (mel_rvq) on training sentences and voices, then encodes and decodes
held-out sentences spoken by held-out voices and scores, per number of codebooks K:

- code L1: mean |log-mel the codes stand for - log-mel(original)|, the quantisation error alone
  (what a language model over the codes sees; natural log, the tokenizer's analysis);
- log-mel L1: mean |log-mel(decoded audio) - log-mel(original)|, vocoder included;
- spectral convergence: || |S| - |S_hat| ||_F / || |S| ||_F on a 1024-point STFT (lower is better);
- SNR in dB of the waveform (Griffin-Lim invents phases, so this stays near or below 0 dB);

plus the "vocoder only" row: the unquantised log-mel through the same InverseMelScale + Griffin-Lim,
the ceiling any codebook can reach. Needs ``espeak-ng`` (Debian package). Run
``python eval/audio_tokenizer_quality.py [--codebooks 1 2 4 8] [--codebook-size 256]``.
"""

import time

import numpy as np
import torch

from ..corpus.engines import synthesize
from ..corpus.voices import speaker_from_id
from ..data import SAMPLING_RATE
from ..processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig

TRAIN_SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
]
TEST_SENTENCES = [
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
]
TRAIN_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-us+f2", "en-gb-x-rp+f3", "en-us+m3"]
TEST_VOICES = ["en-029", "en-gb-x-gbcwmd+f4"]


def speak(sentences: list[str], voices: list[str]) -> list[torch.Tensor]:
    """Every sentence in every espeak-ng voice, through the corpus' synthesiser.

    Returns: float32 waveforms ``[L]`` at ``SAMPLING_RATE``, silence trimmed, peak-normalised.
    """
    items = [(speaker_from_id(f"espeak:{voice}@r1.00p1.00"), text) for text in sentences for voice in voices]
    return [torch.from_numpy(audio) for audio in synthesize(items)]


def spectral_convergence(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """|| |S| - |S_hat| ||_F / || |S| ||_F over 1024-point STFTs of two waveforms ``[T]``."""
    window = torch.hann_window(1024)
    magnitude = [torch.stft(x, 1024, 256, window=window, return_complex=True).abs() for x in (reference, estimate)]
    return float(torch.linalg.norm(magnitude[0] - magnitude[1]) / torch.linalg.norm(magnitude[0]))


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Waveform signal-to-noise ratio in dB of ``estimate [T]`` against ``reference [T]``."""
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


def score(
    tokenizer: LaCTAudioTokenizer,
    references: list[torch.Tensor],
    decoded: list[torch.Tensor],
    code_log_mels: list[torch.Tensor],
) -> dict:
    """Mean metrics over utterances ``[T]`` (each pair cut to its common length)."""
    rows = []
    for reference, estimate, code_log_mel in zip(references, decoded, code_log_mels):
        code_l1 = (code_log_mel - tokenizer.log_mel(reference)).abs().mean()
        length = min(len(reference), len(estimate))
        reference, estimate = reference[:length], estimate[:length]
        log_mel_l1 = (tokenizer.log_mel(estimate) - tokenizer.log_mel(reference)).abs().mean()
        metrics = (code_l1, log_mel_l1, spectral_convergence(reference, estimate), snr_db(reference, estimate))
        rows.append([float(m) for m in metrics])
    return dict(zip(["code_l1", "log_mel_l1", "spectral_convergence", "snr_db"], np.mean(rows, axis=0)))


def evaluate_codebooks(
    codebooks: list[int], codebook_size: int = 256, iters: int = 20, griffin_lim_iters: int = 32
) -> dict[str, dict]:
    """Fit a tokenizer per number of codebooks on the training voices and score it on held-out ones.

    Returns:
        ``{row name: {"code_l1", "log_mel_l1", "spectral_convergence", "snr_db"}}``: one row per K (its
        bitrate and fit time in the name) and the unquantised ``"vocoder only (no quantisation)"`` row.
    """
    train, references = speak(TRAIN_SENTENCES, TRAIN_VOICES), speak(TEST_SENTENCES, TEST_VOICES)
    results = {}
    for k in codebooks:
        config = LaCTAudioTokenizerConfig(
            num_codebooks=k, codebook_size=codebook_size, griffin_lim_iters=griffin_lim_iters
        )
        start = time.perf_counter()
        tokenizer = LaCTAudioTokenizer(config).fit(train, sampling_rate=SAMPLING_RATE, iters=iters)
        fit_seconds = time.perf_counter() - start
        codes = [tokenizer.encode(w, sampling_rate=SAMPLING_RATE) for w in references]
        decoded = [tokenizer.decode(c)[0] for c in codes]
        code_log_mels = [tokenizer.codes_to_log_mel(c)[0] for c in codes]
        kbps = k * np.log2(codebook_size) * config.sampling_rate / config.hop_length / 1000
        results[f"K={k} ({kbps:.2f} kbps, fit {fit_seconds:.1f} s)"] = score(
            tokenizer, references, decoded, code_log_mels
        )
    log_mels = [tokenizer.log_mel(x) for x in references]
    vocoder_only = [tokenizer.log_mel_to_audio(m[None])[0] for m in log_mels]
    results["vocoder only (no quantisation)"] = score(tokenizer, references, vocoder_only, log_mels)
    return results


def format_table(results: dict[str, dict]) -> str:
    """``evaluate_codebooks``' rows as a fixed-width text table."""
    lines = [f"{'':42s} {'code L1':>8s} {'log-mel L1':>10s} {'spec. conv.':>11s} {'SNR dB':>7s}"]
    for name, m in results.items():
        lines.append(
            f"{name:42s} {m['code_l1']:8.3f} {m['log_mel_l1']:10.3f} {m['spectral_convergence']:11.3f} "
            f"{m['snr_db']:7.2f}"
        )
    return "\n".join(lines)
