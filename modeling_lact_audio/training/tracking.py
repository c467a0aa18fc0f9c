"""What a tracked run records besides the step metrics: its provenance, its resolved config and its final table.

``--report_to`` names Accelerate trackers (``tensorboard``, ``mlflow``, ``wandb``, a comma-separated list,
``all`` or ``none``). Every tracker gets the hyper-parameters, with the git commit of the code and the
SHA-256 of the corpus' data card (``README.md``) among them, and the ``train/`` and ``eval/`` metrics.
MLflow gets more, as tags and artifacts: the resolved model config (``model_config.json``), the
hyper-parameters file (``run_config.json``), the run summary and the last validation of the run as two
tables (``final_eval.json``: one row per metric; ``final_eval_examples.json``: references and hypotheses).

MLflow's store is local, inside the run folder: ``mlflow.db`` (SQLite) with the artifacts in ``mlruns/``,
unless ``MLFLOW_TRACKING_URI`` names another store. The experiment is the run folder's name
(``MLFLOW_EXPERIMENT_NAME`` overrides it); each start or resume of the run is one MLflow run in it,
tagged with the step it resumed from. Read a run back with::

    import mlflow
    client = mlflow.MlflowClient("sqlite:///outputs/tiny/mlflow.db")
    run = client.search_runs(client.get_experiment_by_name("tiny").experiment_id)[0]
    run.data.params["git_commit"], run.data.metrics["eval/wer"]
"""

import hashlib
import os
import subprocess
from pathlib import Path

MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlruns"
DATA_CARD = "README.md"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
_LOCAL_URIS_SET = set()  # run-folder stores this process pointed MLflow at (mlflow exports MLFLOW_TRACKING_URI)


def log_with(report_to: str) -> list[str] | str | None:
    """Accelerator's ``log_with`` for ``--report_to``: ``none`` -> None, ``all`` -> ``"all"``, else the list."""
    if report_to == "none":
        return None
    if report_to == "all":
        return "all"
    return [name.strip() for name in report_to.split(",") if name.strip()]


def git_commit() -> str:
    """The commit of the checkout this package runs from, ``-dirty`` appended when tracked files changed.

    ``unknown`` when the package is not a git checkout (an installed wheel) or git is missing.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        # A wheel installed into a virtual environment inside some checkout is not that checkout's code.
        if Path(git("rev-parse", "--show-toplevel")).resolve() / PACKAGE_DIR.name != PACKAGE_DIR:
            return "unknown"
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def data_card_sha256(corpus: str | os.PathLike) -> str:
    """SHA-256 (hex) of the corpus' data card ``README.md``, which names its sources, settings and splits;
    ``missing`` when the corpus has none."""
    card = Path(corpus) / DATA_CARD
    return hashlib.sha256(card.read_bytes()).hexdigest() if card.is_file() else "missing"


def uses_mlflow(accelerator) -> bool:
    """Whether ``accelerator`` was built to log to MLflow (also through ``--report_to all``)."""
    # log_with holds LoggerType members (str() is the tracker's name) and GeneralTracker instances (.name).
    return any(getattr(t, "name", None) == "mlflow" or str(t) == "mlflow" for t in accelerator.log_with)


def local_mlflow_uri(run_dir: Path) -> str:
    """The run folder's own MLflow store: SQLite ``run_dir/mlflow.db``."""
    return f"sqlite:///{(Path(run_dir) / MLFLOW_DB).resolve()}"


def mlflow_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when the user set it, else ``local_mlflow_uri(run_dir)``."""
    # mlflow.set_tracking_uri exports the variable too, so a value this process set for an earlier run is ours.
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri and uri not in _LOCAL_URIS_SET else local_mlflow_uri(run_dir)


def tracker_init_kwargs(accelerator, run_dir: Path, resumed_step: int) -> dict:
    """``init_kwargs`` for ``accelerator.init_trackers``; points MLflow at its store first.

    Call on every process before ``init_trackers``.
    """
    if not uses_mlflow(accelerator):
        return {}
    import mlflow

    uri = mlflow_tracking_uri(run_dir)
    kwargs = {"run_name": f"{Path(run_dir).name}@{resumed_step}"}
    if uri == local_mlflow_uri(run_dir):
        _LOCAL_URIS_SET.add(uri)
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
        kwargs["logging_dir"] = (Path(run_dir) / MLFLOW_ARTIFACTS).resolve().as_uri()  # where artifacts go
    # Set explicitly (not left to the environment) so a run started earlier in this process cannot leak its store.
    mlflow.set_tracking_uri(uri)
    return {"mlflow": kwargs}


def log_run_start(accelerator, run_dir: Path, model_config: dict, hyperparameters: dict, resumed_step: int) -> None:
    """MLflow (main process): provenance tags, the resolved model config and the hyper-parameters as artifacts."""
    if not (accelerator.is_main_process and uses_mlflow(accelerator)):
        return
    import mlflow

    mlflow.set_tags(
        {
            "git_commit": hyperparameters.get("git_commit", "unknown"),
            "data_card_sha256": hyperparameters.get("data_card_sha256", "missing"),
            "resumed_from_step": str(resumed_step),
            "run_dir": str(Path(run_dir).resolve()),
        }
    )
    mlflow.log_dict(model_config, "model_config.json")
    mlflow.log_dict(hyperparameters, "run_config.json")


def log_run_end(accelerator, final_eval: dict, summary: dict) -> None:
    """MLflow (main process): the run summary, and the last validation as tables of metrics and of examples.

    ``final_eval`` is ``{"step": N, **metrics}`` as the validation returned it (an ``examples`` list of
    ``(reference, hypothesis)`` pairs for ASR), or empty when this run never validated.
    """
    if not (accelerator.is_main_process and uses_mlflow(accelerator)):
        return
    import mlflow

    mlflow.log_dict(summary, "summary.json")
    if not final_eval:
        return
    scores = {k: float(v) for k, v in final_eval.items() if isinstance(v, (int, float)) and k != "step"}
    mlflow.log_table(
        {"metric": list(scores), "value": list(scores.values()), "step": [final_eval["step"]] * len(scores)},
        "final_eval.json",
    )
    examples = final_eval.get("examples") or []
    if examples:
        references, hypotheses = zip(*examples)
        mlflow.log_table({"reference": list(references), "hypothesis": list(hypotheses)}, "final_eval_examples.json")


def hyperparameter_provenance(corpus: str) -> dict:
    """The provenance every tracker logs with the hyper-parameters: git commit and data card hash."""
    return {"git_commit": git_commit(), "data_card_sha256": data_card_sha256(corpus)}
