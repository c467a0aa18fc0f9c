"""The offline corpus builder (run_scripts/make_corpus.py), checked on its tiny build."""

import io
import re
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "run_scripts"))

import make_corpus  # noqa: E402
from corpus import jobs as job_runner  # noqa: E402
from corpus import requirements  # noqa: E402
from corpus.engines import synthesize  # noqa: E402
from corpus.noise import measure_snr  # noqa: E402
from corpus.normalize import normalize_text  # noqa: E402
from corpus.plan import SPLITS  # noqa: E402
from corpus.voices import speaker_from_id  # noqa: E402

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


def _load(folder: Path) -> datasets.DatasetDict:
    ds = datasets.load_from_disk(str(folder))
    return datasets.DatasetDict(
        {k: v.cast_column("audio", datasets.Audio(decode=False)) for k, v in ds.items()}
    )


def _samples(row: dict) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    assert rate == 16000
    return audio


def _texts(ds: datasets.Dataset) -> set[str]:
    return {t for texts in ds["segment_texts"] for t in texts}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "reference"
    info = make_corpus.build(str(folder), seed=3, tiny=True, workers=2, progress=False)
    return info, _load(folder)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The same build, killed after five jobs (one shard half written), then run again."""
    folder = tmp_path_factory.mktemp("corpus") / "resumed"
    real_run_job, calls = job_runner.run_job, []

    def crash_after_five(job, plan, shard_dir):
        if len(calls) == 5:
            Path(shard_dir, f"{job['job_id']}.pkl.partial-1").write_bytes(b"\x80\x05half a shard")
            raise KeyboardInterrupt
        calls.append(job["job_id"])
        return real_run_job(job, plan, shard_dir)

    def record(job, plan, shard_dir):
        calls.append(job["job_id"])
        return real_run_job(job, plan, shard_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(job_runner, "run_job", crash_after_five)
        with pytest.raises(KeyboardInterrupt):
            make_corpus.build(str(folder), seed=3, tiny=True, workers=1, progress=False)
        shards = sorted(p.name for p in (folder / ".build" / "shards").iterdir())
        assert not (folder / "dataset_dict.json").exists()
        patch.setattr(job_runner, "run_job", record)
        info = make_corpus.build(str(folder), seed=3, tiny=True, workers=1, progress=False)
    return info, _load(folder), calls, shards


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


def test_domains_kept_apart(reference):
    _, ds = reference
    train_domains = set(ds["train"]["domain"]) | set(ds["validation"]["domain"])
    assert set(ds["test_domain"]["domain"]) == {"poetry"} and "poetry" not in train_domains
    trained_text = _texts(ds["train"]) | _texts(ds["sessions_train"])
    for split in HELD_OUT_SPLITS + ("validation",):
        assert not _texts(ds[split]) & trained_text, split
    assert not _texts(ds["validation"]) & (_texts(ds["test_seen"]) | _texts(ds["test_noise"]))


def test_measured_snr_matches_label(reference):
    _, ds = reference
    rows = [r for split in ("test_noise", "train") for r in ds[split] if r["condition"] != "clean"]
    cells = {(r["condition"], r["snr_db"]) for r in ds["test_noise"]}
    assert {(c, s) for c in ("white", "pink", "babble", "real") for s in (0.0, 5.0, 10.0)} <= cells
    for row in rows:
        # The clean speech is synthesised again: the voices are deterministic.
        clean = synthesize([(speaker_from_id(row["speaker"]), row["text"])])[0]
        mix = _samples(row)
        assert len(mix) == len(clean)
        assert abs(measure_snr(mix, clean) - row["snr_db"]) < 0.5, row["uid"]


def test_session_timestamps_match_audio(reference):
    _, ds = reference
    for split in ("sessions_train", "sessions_test_seen", "sessions_test_unseen"):
        for row in ds[split]:
            audio, starts, ends = _samples(row), row["segment_starts"], row["segment_ends"]
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


def test_same_seed_rebuilds_identically_and_resume_builds_each_job_once(reference, resumed):
    ref_info, ref = reference
    info, ds, calls, shards_at_crash = resumed
    assert len(shards_at_crash) == 6 and sum(".partial-" in s for s in shards_at_crash) == 1
    assert len(calls) == len(set(calls)) == info["jobs_run"] + 5 == ref_info["jobs_run"]
    for split in SPLITS:
        assert ds[split].to_dict() == ref[split].to_dict(), split


def test_missing_debian_package_is_named(monkeypatch):
    monkeypatch.setattr(requirements.shutil, "which", lambda name: None if name == "flite" else "/bin/true")
    with pytest.raises(SystemExit, match="missing Debian packages: flite"):
        requirements.require_packages()


def test_normalisation_spells_numbers_for_ctc():
    assert normalize_text("Dr. Who paid $3.50 on May 2nd, 1999 at 10:05!") == (
        "doctor who paid three dollars and fifty cents on may second nineteen ninety nine at ten oh five"
    )
    assert normalize_text("It's 42% -- \"rock'n'roll\" & 1,200 CAFÉS") == (
        "it's forty two percent rock'n'roll and one thousand two hundred cafes"
    )
