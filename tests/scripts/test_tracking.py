"""Tracked training runs (``modeling_lact_audio.training.tracking``): ``--report_to`` parsing, provenance,
and a tiny run logged to TensorBoard and a local MLflow store, read back through MLflow's own API."""

import hashlib
import json
import re

import pytest

from modeling_lact_audio.training.tracking import (
    data_card_sha256,
    git_commit,
    log_with,
    mlflow_tracking_uri,
)

from .test_train import corpus, losses, run  # noqa: F401  (corpus is a fixture)


def test_report_to_becomes_accelerate_log_with():
    assert log_with("none") is None
    assert log_with("all") == "all"
    assert log_with("mlflow") == ["mlflow"]
    assert log_with("tensorboard, mlflow") == ["tensorboard", "mlflow"]


def test_provenance(tmp_path, monkeypatch):
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", git_commit())
    assert data_card_sha256(tmp_path) == "missing"
    (tmp_path / "README.md").write_text("# card\n")
    assert data_card_sha256(tmp_path) == hashlib.sha256(b"# card\n").hexdigest()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.invalid")
    assert mlflow_tracking_uri(tmp_path) == "http://tracking.invalid"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes")  # mlflow's log_table on pandas 3
def test_mlflow_run_reads_back(corpus, tmp_path, monkeypatch):  # noqa: F811
    mlflow = pytest.importorskip("mlflow")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS"):
        monkeypatch.setenv(name, "")  # restored at teardown: mlflow.set_tracking_uri exports the variable
        monkeypatch.delenv(name)
    out = tmp_path / "tracked"
    cwd = tmp_path / "cwd"  # MLflow's default store would land here
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    flags = ("--report_to", "tensorboard,mlflow", "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2")
    flags += ("--logging_steps", "1", "--warmup_steps", "1", "--max_eval_examples", "2")
    run(corpus, out, *flags, "--stop_after_steps", "2")
    run(corpus, out, *flags)  # resumes from step 2: a second MLflow run in the same experiment

    assert list(out.glob("**/events.out.tfevents.*"))  # TensorBoard still logs beside MLflow
    assert not list(cwd.iterdir()) and (out / "mlruns").is_dir()  # the store is the run folder's own
    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(out.name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert [r.data.tags["resumed_from_step"] for r in runs] == ["0", "2"]
    first, resumed = runs

    # Hyper-parameters (as Accelerate logs them) with the provenance, and the same provenance as tags.
    card = hashlib.sha256((corpus / "README.md").read_bytes()).hexdigest()
    params = resumed.data.params
    assert params["train/max_steps"] == "4" and params["model/preset"] == "tiny" and params["train/seed"] == "0"
    assert params["data_card_sha256"] == resumed.data.tags["data_card_sha256"] == card
    assert params["git_commit"] == resumed.data.tags["git_commit"] == git_commit()
    assert first.data.params["train/stop_after_steps"] == "2"
    assert resumed.data.params["train/stop_after_steps"] == "None"

    # Step metrics: the training loss of every step, the same values as log.jsonl; validation every 2 steps.
    logged = {r.info.run_id: client.get_metric_history(r.info.run_id, "train/loss") for r in runs}
    steps = sorted((m.step, m.value) for history in logged.values() for m in history)
    assert [s for s, _ in steps] == [1, 2, 3, 4]
    assert [v for _, v in steps] == pytest.approx(losses(out), rel=1e-6)
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "eval/wer")] == [4]

    # Artifacts: the resolved model config, the hyper-parameters file, the summary and the final eval table.
    artifacts = {a.path for a in client.list_artifacts(resumed.info.run_id)}
    assert {"model_config.json", "run_config.json", "summary.json", "final_eval.json"} <= artifacts
    client.download_artifacts(resumed.info.run_id, "", str(tmp_path / "downloaded"))
    model_config = json.loads((tmp_path / "downloaded" / "model_config.json").read_text())
    saved_config = json.loads((out / "last" / "config.json").read_text())
    assert model_config["model_type"] == saved_config["model_type"] == "lact_audio"
    assert model_config["hidden_size"] == saved_config["hidden_size"]
    assert json.loads((tmp_path / "downloaded" / "run_config.json").read_text()) == json.loads(
        (out / "run_config.json").read_text()
    )
    table = client.load_table(experiment.experiment_id, "final_eval.json", run_ids=[resumed.info.run_id])
    final = [json.loads(line)["eval"] for line in (out / "log.jsonl").read_text().splitlines() if "eval" in line][-1]
    assert dict(zip(table["metric"], table["value"])) == pytest.approx({k: final[k] for k in ("wer", "cer", "loss")})
    assert set(table["step"]) == {4}
    examples = client.load_table(experiment.experiment_id, "final_eval_examples.json", run_ids=[resumed.info.run_id])
    assert [list(e) for e in zip(examples["reference"], examples["hypothesis"])] == final["examples"]
