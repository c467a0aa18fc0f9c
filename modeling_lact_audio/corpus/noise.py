"""Noise sources (white, pink, brown, recorded, babble), mixing at a target SNR and measuring it."""

import numpy as np

from ..data import SAMPLING_RATE
from .engines import read_resampled, synthesize
from .voices import babble_voices

SONIC_PI = "/usr/share/sonic-pi/samples"
# Recorded noise is split by file: test_noise hears recordings that training never saw.
TEST_RECORDINGS = ("vinyl_hiss", "ambi_sauna", "ambi_haunted_hum", "loop_3d_printer")
TRAIN_RECORDINGS = (
    "ambi_glass_hum",
    "ambi_lunar_land",
    "ambi_drone",
    "loop_compus",
    "loop_safari",
    "loop_electric",
)
_CACHE: dict = {}


def colored_noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f^a power spectrum.

    Takes: ``kind`` (white a=0, pink a=1, brown a=2), ``length`` in samples and a generator.
    Returns: float32 [length] with unit RMS.
    """
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=length)
    noise -= noise.mean()
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def _recording(name: str) -> np.ndarray:
    if name not in _CACHE:
        audio = read_resampled(f"{SONIC_PI}/{name}.flac")
        _CACHE[name] = audio - audio.mean()
    return _CACHE[name]


def recorded_noise(names: tuple[str, ...], length: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of a sonic-pi recording, looped when shorter than needed.

    Takes: the recordings to choose from, ``length`` in samples and a generator. Returns: float32 [length].
    """
    source = _recording(names[int(rng.integers(len(names)))])
    start = int(rng.integers(len(source)))
    return np.resize(np.roll(source, -start), length).astype(np.float32)


def babble_bank(sentences: list[str], seed: int, size: int) -> list[np.ndarray]:
    """Speech of the babble-only voices, cached per process.

    Takes: candidate ``sentences``, the build ``seed`` and how many clips (``size``). Returns: float32
    clips at 16 kHz; the same arguments give the same clips.
    """
    key = ("babble", seed, size)
    if key not in _CACHE:
        rng = np.random.default_rng([seed, 11])
        voices = babble_voices()
        items = [(voices[i % len(voices)], sentences[int(rng.integers(len(sentences)))]) for i in range(size)]
        _CACHE[key] = synthesize(items)
    return _CACHE[key]


def babble_noise(
    bank: list[np.ndarray], length: int, rng: np.random.Generator, talkers: int = 5
) -> np.ndarray:
    """Several talkers at once.

    Takes: a babble ``bank``, ``length``, a generator and the number of talkers. Returns: float32 [length].
    """
    out = np.zeros(length, np.float32)
    for i in rng.permutation(len(bank))[:talkers]:
        clip = np.concatenate([bank[i], np.zeros(SAMPLING_RATE // 5, np.float32)])
        out += np.resize(np.roll(clip, -int(rng.integers(len(clip)))), length)
    return out


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add noise so that 10 log10(P_clean / P_noise) equals ``snr_db`` over the whole utterance.

    Takes: float32 ``clean`` [T], ``noise`` [T] and the SNR in dB. Returns: float32 [T] mixture,
    scaled down as a whole when it would clip (scaling both parts keeps the SNR).
    """
    clean64, noise64 = clean.astype(np.float64), noise.astype(np.float64)
    # Without its (small, chance) component along the speech, the noise power is exactly what the
    # label says, also for a measurement that fits the clean speech to the mixture.
    noise64 = noise64 - clean64 * (np.dot(noise64, clean64) / np.dot(clean64, clean64))
    gain = np.sqrt(np.mean(clean64**2) / (np.mean(noise64**2) * 10 ** (snr_db / 10)))
    mix = clean64 + gain * noise64
    peak = float(np.abs(mix).max())
    return (mix * (0.95 / peak) if peak > 0.95 else mix).astype(np.float32)


def measure_snr(mix: np.ndarray, clean: np.ndarray) -> float:
    """SNR of a mixture against its clean speech.

    Takes: ``mix`` [T] and the unscaled ``clean`` [T]. Returns: dB, with the speech part found by a
    least-squares fit of ``clean`` to ``mix`` (so overall gain and clipping protection cancel).
    """
    mix, clean = mix.astype(np.float64), clean.astype(np.float64)
    speech = clean * (np.dot(mix, clean) / np.dot(clean, clean))
    return float(10 * np.log10(np.sum(speech**2) / np.sum((mix - speech) ** 2)))
