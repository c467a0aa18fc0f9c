"""Training runs under hostile conditions: kills at the worst moment, planted pickles (hardening issue)."""

import json
import pickle

import pytest

from modeling_lact_audio.training.checkpoint_files import (
    TRAINING_STATE,
    check_checkpoint_files,
    read_training_state,
    write_training_state,
)
from modeling_lact_audio.training.trainer import recover_interrupted_save, save_atomically, trim_log


def _folder(path, text):
    path.mkdir()
    (path / "weights").write_text(text)
    return path


def test_a_kill_between_the_two_renames_is_repaired(tmp_path):
    last = tmp_path / "last"
    # The kill fell after last -> last.old and before last.tmp -> last: the new version was complete.
    _folder(tmp_path / "last.old", "old")
    _folder(tmp_path / "last.tmp", "new")
    assert "completed the interrupted save" in recover_interrupted_save(last)
    assert (last / "weights").read_text() == "new" and not (tmp_path / "last.old").exists()
    # Without the new version, the previous one comes back.
    (tmp_path / "best.old").mkdir()
    (tmp_path / "best.old" / "weights").write_text("previous")
    assert "restored best" in recover_interrupted_save(tmp_path / "best")
    assert (tmp_path / "best" / "weights").read_text() == "previous"
    assert recover_interrupted_save(tmp_path / "best") is None


def test_save_atomically_repairs_first_and_keeps_one_version(tmp_path):
    folder = tmp_path / "last"
    _folder(tmp_path / "last.old", "old")  # left by an earlier kill
    save_atomically(folder, lambda tmp: _folder(tmp, "v2"))
    assert (folder / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_trim_log_drops_steps_after_the_checkpoint_and_torn_lines(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    assert trim_log(log, 2) == 2
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert trim_log(log, 0) == 2 and log.read_text() == ""  # a run starting over logs from step 1 again
    assert trim_log(tmp_path / "missing.jsonl", 5) == 0


class _Planted:
    """Unpickling this runs code: it opens (creates) ``marker`` for writing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _planted_pickle(path, marker):
    path.write_bytes(pickle.dumps(_Planted(marker)))


def test_the_planted_pickle_really_runs_code_when_unpickled(tmp_path):
    _planted_pickle(tmp_path / "x.pkl", tmp_path / "ran")
    with open(tmp_path / "x.pkl", "rb") as f:
        pickle.load(f).close()
    assert (tmp_path / "ran").exists()  # so the tests below would see it run


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "extra.bin", "notes.txt"])
def test_unexpected_files_in_a_checkpoint_are_refused(tmp_path, name):
    for ok in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", TRAINING_STATE):
        (tmp_path / ok).write_text("")
    check_checkpoint_files(tmp_path, allowed=(TRAINING_STATE,))
    _planted_pickle(tmp_path / name, tmp_path / "ran")
    with pytest.raises(ValueError, match="execute" if name.startswith("custom") else "unexpected"):
        check_checkpoint_files(tmp_path, allowed=(TRAINING_STATE,))
    assert not (tmp_path / "ran").exists()


def test_training_state_is_json_and_a_missing_one_is_explained(tmp_path):
    write_training_state(tmp_path, {"data": {"completed_steps": 3, "best_metric": None}})
    assert read_training_state(tmp_path)["data"]["completed_steps"] == 3
    (tmp_path / TRAINING_STATE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_training_state(tmp_path)
    with pytest.raises(ValueError, match="older lact-audio"):
        read_training_state(tmp_path / "nowhere")
