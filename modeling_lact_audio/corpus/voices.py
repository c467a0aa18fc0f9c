"""The speaker catalogue: base voices of each engine, their perturbed copies, and who is held out."""

import zlib
from dataclasses import dataclass

import numpy as np

ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# Babble talkers use espeak variants that no split ever uses, so babble never contains a test speaker.
BABBLE_VARIANTS = ("adam", "Andy", "Annie", "david", "linda", "steph", "robert", "paul")
FESTIVAL_VOICES = {"kal_diphone": "en-us", "ked_diphone": "en-us", "cmu_us_slt_arctic_hts": "en-us"}
FLITE_VOICES = {"kal16": "en-us", "awb": "en-gb-scotland", "rms": "en-us", "slt": "en-us"}
PIPER_VOICES = {"joe": "en-us"}

# Whole voices that never reach train/validation: one whole engine (piper), one voice of each other
# engine, one whole espeak accent and two espeak variants in every accent.
HELD_OUT_ENGINE = "piper"
HELD_OUT_VOICES = ("festival:ked_diphone", "flite:rms")
HELD_OUT_ACCENT = "en-029"
HELD_OUT_VARIANTS = ("m7", "f5")

RATES = (0.88, 1.0, 1.12)
PITCHES = (0.9, 1.0, 1.1)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a base voice with a speaking-rate and pitch factor."""

    engine: str
    voice: str
    accent: str
    rate: float = 1.0
    pitch: float = 1.0

    @property
    def voice_id(self) -> str:
        """The base voice, e.g. ``espeak:en-gb+f3``; all perturbed copies share it."""
        return f"{self.engine}:{self.voice}"

    @property
    def speaker_id(self) -> str:
        """The speaker label stored in the dataset, e.g. ``espeak:en-gb+f3@r1.12p0.90``."""
        return f"{self.voice_id}@r{self.rate:.2f}p{self.pitch:.2f}"


def speaker_from_id(speaker_id: str) -> Speaker:
    """Rebuild a Speaker from its label. Takes: a ``speaker_id``. Returns: the Speaker."""
    voice_id, _, perturb = speaker_id.partition("@")
    engine, voice = voice_id.split(":", 1)
    rate, pitch = perturb[1:].split("p")
    return Speaker(engine, voice, _accent(engine, voice), float(rate), float(pitch))


def _accent(engine: str, voice: str) -> str:
    if engine == "espeak":
        return voice.split("+")[0]
    return {"festival": FESTIVAL_VOICES, "flite": FLITE_VOICES, "piper": PIPER_VOICES}[engine][voice]


def base_voices() -> list[Speaker]:
    """All unperturbed voices that may appear in a split. Returns: Speakers in a fixed order."""
    voices = [Speaker("espeak", f"{a}+{v}", a) for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    voices += [Speaker("festival", v, a) for v, a in FESTIVAL_VOICES.items()]
    voices += [Speaker("flite", v, a) for v, a in FLITE_VOICES.items()]
    voices += [Speaker("piper", v, a) for v, a in PIPER_VOICES.items()]
    return voices


def is_held_out(voice: Speaker) -> bool:
    """Whether a voice is reserved for ``test_unseen_speakers``. Takes: a Speaker. Returns: bool."""
    if voice.engine == HELD_OUT_ENGINE or voice.voice_id in HELD_OUT_VOICES:
        return True
    if voice.engine == "espeak":
        accent, variant = voice.voice.split("+")
        return accent == HELD_OUT_ACCENT or variant in HELD_OUT_VARIANTS
    return False


def perturbed_speakers(voice: Speaker, copies: int, seed: int) -> list[Speaker]:
    """Make speakers from one voice by rate/pitch perturbation.

    Takes: a base ``voice``, the number of ``copies`` (the first is unperturbed) and the build ``seed``.
    Returns: ``copies`` distinct Speakers; the choice depends only on the seed and the voice.
    """
    grid = [(r, p) for r in RATES for p in PITCHES if (r, p) != (1.0, 1.0)]
    rng = np.random.default_rng([seed, zlib.crc32(voice.voice_id.encode())])
    picks = [(1.0, 1.0)] + [grid[i] for i in rng.permutation(len(grid))[: copies - 1]]
    return [Speaker(voice.engine, voice.voice, voice.accent, r, p) for r, p in picks]


def babble_voices() -> list[Speaker]:
    """Voices used only to build babble noise. Returns: espeak Speakers in a fixed order."""
    return [Speaker("espeak", f"{a}+{v}", a) for a in ESPEAK_ACCENTS[:4] for v in BABBLE_VARIANTS]
