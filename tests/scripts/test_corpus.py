"""The offline corpus builder (``modeling_lact_audio.corpus``; run_scripts/make_corpus.py) on its tiny build."""

import re
import runpy
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from modeling_lact_audio.corpus import build as corpus_build
from modeling_lact_audio.corpus import jobs as job_runner
from modeling_lact_audio.corpus import requirements
from modeling_lact_audio.corpus.engines import synthesize
from modeling_lact_audio.corpus.noise import measure_snr
from modeling_lact_audio.corpus.plan import SPLITS
from modeling_lact_audio.corpus.tts_text import spell_out_for_tts
from modeling_lact_audio.corpus.voices import speaker_from_id
from modeling_lact_audio.data import load_split, read_audio

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = {
    "audio",
    "uid",
    "text",
    "speaker",
    "engine",
    "accent",
    "condition",
    "snr_db",
    "snr_measured_db",
    "domain",
    "session_id",
    "utterance_index",
    "duration",
    "segment_starts",
    "segment_ends",
    "segment_texts",
}
HELD_OUT_SPLITS = (
    "test_seen",
    "test_unseen_speakers",
    "test_noise",
    "test_domain",
    "sessions_test_seen",
    "sessions_test_unseen",
)


def _load(folder: Path) -> dict[str, datasets.Dataset]:
    return {split: load_split(str(folder), split) for split in datasets.load_from_disk(str(folder))}


def _texts(ds: datasets.Dataset) -> set[str]:
    return {t for texts in ds["segment_texts"] for t in texts}


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "reference"
    info = corpus_build.build(str(folder), seed=3, tiny=True, workers=2, progress=False)
    return folder, info


@pytest.fixture(scope="module")
def reference(reference_folder):
    folder, info = reference_folder
    return info, _load(folder)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same build, killed after five jobs (one shard half written), then run again."""
    folder = tmp_path_factory.mktemp("corpus") / "resumed"
    real_run_job, calls = job_runner.run_job, []

    def crash_after_five(job, plan, shard_dir):
        if len(calls) == 5:
            Path(shard_dir, f"{job['job_id']}.parquet.partial-1").write_bytes(b"\x80\x05half a shard")
            raise KeyboardInterrupt
        calls.append(job["job_id"])
        return real_run_job(job, plan, shard_dir)

    def record(job, plan, shard_dir):
        calls.append(job["job_id"])
        return real_run_job(job, plan, shard_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_runner, "run_job", crash_after_five)
        with pytest.raises(KeyboardInterrupt):
            corpus_build.build(str(folder), seed=3, tiny=True, workers=1, progress=False)
        shards = sorted(p.name for p in (folder / ".build" / "shards").iterdir())
        assert not (folder / "dataset_dict.json").exists()
        patch.setattr(job_runner, "run_job", record)
        info = corpus_build.build(str(folder), seed=3, tiny=True, workers=1, progress=False)
    return info, _load(folder), calls, shards


@pytest.mark.slow
def test_splits_and_columns(reference):
    info, ds = reference
    assert list(ds) == list(SPLITS)
    for split, part in ds.items():
        assert len(part) > 0, split
        assert set(part.column_names) == COLUMNS, split
        for text in part["text"]:
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", text), (split, text)
    assert (
        datasets.load_from_disk(str(Path(ds["train"].cache_files[0]["filename"]).parents[1]))["train"]
        .features["audio"]
        .sampling_rate
        == 16000
    )
    assert sum(info["text_stats"]["sentences"].values()) >= 5000
    assert info["text_stats"]["vocabulary"] >= 5000


@pytest.mark.slow
def test_unseen_speakers_absent_from_train(reference):
    _, ds = reference
    voice = lambda speaker: speaker.split("@")[0]
    trained = {voice(s) for split in ("train", "validation", "sessions_train") for s in ds[split]["speaker"]}
    unseen = {
        voice(s) for split in ("test_unseen_speakers", "sessions_test_unseen") for s in ds[split]["speaker"]
    }
    assert unseen and not unseen & trained
    assert set(ds["test_unseen_speakers"]["engine"]) - set(ds["train"]["engine"]) == {"piper"}
    assert set(ds["test_real"]["engine"]) == {"human"}


@pytest.mark.slow
def test_domains_kept_apart(reference):
    _, ds = reference
    train_domains = set(ds["train"]["domain"]) | set(ds["validation"]["domain"])
    assert set(ds["test_domain"]["domain"]) == {"poetry"} and "poetry" not in train_domains
    trained_text = _texts(ds["train"]) | _texts(ds["sessions_train"])
    for split in HELD_OUT_SPLITS + ("validation",):
        assert not _texts(ds[split]) & trained_text, split
    assert not _texts(ds["validation"]) & (_texts(ds["test_seen"]) | _texts(ds["test_noise"]))


@pytest.mark.slow
def test_measured_snr_matches_label(reference):
    _, ds = reference
    rows = [r for split in ("test_noise", "train") for r in ds[split] if r["condition"] != "clean"]
    cells = {(r["condition"], r["snr_db"]) for r in ds["test_noise"]}
    assert {(c, s) for c in ("white", "pink", "babble", "real") for s in (0.0, 5.0, 10.0)} <= cells
    for row in rows:
        # The clean speech is synthesised again: the voices are deterministic.
        clean = synthesize([(speaker_from_id(row["speaker"]), row["text"])])[0]
        mix = read_audio(row["audio"])
        assert len(mix) == len(clean)
        assert abs(measure_snr(mix, clean) - row["snr_db"]) < 0.5, row["uid"]


@pytest.mark.slow
def test_session_timestamps_match_audio(reference):
    _, ds = reference
    for split in ("sessions_train", "sessions_test_seen", "sessions_test_unseen"):
        for row in ds[split]:
            audio, starts, ends = read_audio(row["audio"]), row["segment_starts"], row["segment_ends"]
            assert len(audio) / 16000 == pytest.approx(row["duration"])
            assert 60.0 <= row["duration"] <= 300.0 and 10 <= len(starts) <= 60
            assert row["text"] == " ".join(row["segment_texts"])
            bounds = [0.0] + [t for pair in zip(starts, ends) for t in pair] + [row["duration"]]
            assert bounds == sorted(bounds)
            for gap_start, gap_end in zip(bounds[0::2], bounds[1::2]):
                assert not np.any(audio[round(gap_start * 16000) : round(gap_end * 16000)]), (
                    split,
                    gap_start,
                )
            speaker = speaker_from_id(row["speaker"])
            for i in (0, len(starts) - 1):
                expected = synthesize([(speaker, row["segment_texts"][i])])[0]
                segment = audio[round(starts[i] * 16000) : round(ends[i] * 16000)]
                assert len(segment) == len(expected)
                np.testing.assert_allclose(segment, expected, atol=1e-3)


@pytest.mark.slow
def test_same_seed_rebuilds_identically_and_resume_builds_each_job_once(reference, resumed):
    ref_info, ref = reference
    info, ds, calls, shards_at_crash = resumed
    assert len(shards_at_crash) == 6 and sum(".partial-" in s for s in shards_at_crash) == 1
    # shards are data (Parquet), never pickles that reading would execute
    assert all(s.endswith(".parquet") for s in shards_at_crash if ".partial-" not in s)
    assert len(calls) == len(set(calls)) == info["jobs_run"] + 5 == ref_info["jobs_run"]
    for split in SPLITS:
        assert ds[split].to_dict() == ref[split].to_dict(), split


def test_missing_debian_package_is_named(monkeypatch):
    monkeypatch.setattr(requirements.shutil, "which", lambda name: None if name == "flite" else "/bin/true")
    with pytest.raises(RuntimeError, match="missing Debian packages: flite"):
        requirements.require_packages()


def test_spell_out_for_tts_spells_numbers_for_ctc():
    assert spell_out_for_tts("Dr. Who paid $3.50 on May 2nd, 1999 at 10:05!") == (
        "doctor who paid three dollars and fifty cents on may second nineteen ninety nine at ten oh five"
    )
    assert spell_out_for_tts("It's 42% -- \"rock'n'roll\" & 1,200 CAFÉS") == (
        "it's forty two percent rock'n'roll and one thousand two hundred cafes"
    )


@pytest.mark.slow
def test_main_leaves_a_finished_build_alone_and_refuses_other_settings(reference_folder, capsys):
    folder, _ = reference_folder
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    corpus_build.main(["--output", str(folder), "--seed", "3", "--tiny"])
    printed = capsys.readouterr().out
    assert "jobs run by this call: 0" in printed
    assert all(f"{split:22s}" in printed for split in SPLITS)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    with pytest.raises(ValueError, match="already holds a corpus built with"):
        corpus_build.main(["--output", str(folder), "--seed", "4", "--tiny"])


def test_script_runs_without_path_edits(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["make_corpus.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "run_scripts" / "make_corpus.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out
