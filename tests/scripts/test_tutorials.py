"""The tutorials (``tutorials/*.ipynb``) and the docs site (``mkdocs.yml``, ``docs/``).

The notebooks are committed without outputs and generated from ``tutorials/make_notebooks.py``; each runs
end to end with its tiny settings (``LACT_TUTORIAL_TINY=1``) in a kernel of this interpreter. The docs build
with warnings as errors, so a broken docstring, reference or link fails here.
"""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import soundfile as sf
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))


def test_there_are_four_tutorials():
    assert NOTEBOOKS == [
        "01_transcribe_and_stream.ipynb",
        "02_speaker_adaptation.ipynb",
        "03_generate_audio_tokens.ipynb",
        "04_train_and_evaluate.ipynb",
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs of {cell.id}"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, f"{name}: stray metadata {sorted(nb.metadata)}"


def test_notebooks_match_their_generator():
    check = subprocess.run(
        [sys.executable, str(TUTORIALS / "make_notebooks.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stderr


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel spec that runs this interpreter (a system-wide ``python3`` spec could point at another one)."""
    spec = tmp_path / "jupyter" / "kernels" / "lact-tutorials"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "lact", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("LACT_TUTORIAL_TINY", "1")
    monkeypatch.setenv("LACT_TUTORIAL_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return "lact-tutorials"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs(name, kernel, tmp_path):
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    client = NotebookClient(nb, timeout=240, kernel_name=kernel, resources={"metadata": {"path": str(TUTORIALS)}})
    client.execute()  # raises CellExecutionError (with the traceback) when a cell fails
    out = tmp_path / "out" / name.removesuffix(".ipynb")
    if name.startswith("02"):
        assert sorted(p.name for p in (out / "preset_librivox_reader").iterdir()) == [
            "fast_weights.safetensors",
            "lact_cache.json",
        ]
    if name.startswith("03"):
        info = sf.info(out / "generated.wav")
        assert info.samplerate == 16000 and info.duration > 1.0
    if name.startswith("04"):
        assert (out / "run" / "best" / "config.json").exists() and (out / "run" / "mlflow.db").exists()


@pytest.mark.slow
def test_docs_build_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    build = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    expected = {"index.html", "tutorials/index.html"}
    api = ("models", "config", "cache", "op", "processors", "adaptation", "training", "generation", "quantization")
    expected |= {f"api/{page}/index.html" for page in api}
    assert expected <= pages
    training = (tmp_path / "site" / "api" / "training" / "index.html").read_text()
    assert "tracker_init_kwargs" in training and "MLflow" in training
