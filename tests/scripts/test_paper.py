"""The paper (``modeling_lact_audio.paper``): built from the committed results, numbers equal to the JSON."""

import json
import shutil
from pathlib import Path

import pytest

from modeling_lact_audio.paper import build_paper, render_paper
from modeling_lact_audio.paper.build import FILES, RESULTS

ROOT = Path(__file__).resolve().parents[2]


def _reference_wer() -> str:
    results = json.loads((RESULTS / FILES["recogniser"]).read_text())
    entry = results["systems"][results["reference_system"]]["splits"]["test_unseen_speakers"]
    return f"{100 * entry['wer']:.1f} [{100 * entry['wer_ci'][0]:.1f}, {100 * entry['wer_ci'][1]:.1f}]"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("weasyprint")
    return build_paper(tmp_path_factory.mktemp("paper"))


def test_markdown_quotes_the_json(built):
    text = built["markdown"].read_text()
    for heading in (
        "## 1. Method",
        "## 2. Setup",
        "## 3. Results",
        "## 4. Ablations",
        "## 5. Limits",
        "## 6. Reproduction",
    ):
        assert heading in text
    assert _reference_wer() in text
    recorded = json.loads((RESULTS / FILES["recogniser"]).read_text())["command"]
    assert recorded in text
    assert "**not run**" in text  # the ablations without results say so
    figures = list((built["markdown"].parent / "figures").glob("*.png"))
    assert figures and all(f"figures/{f.name}" in text for f in figures)


def test_pdf_holds_the_numbers(built):
    pypdf = pytest.importorskip("pypdf")
    pdf = built["pdf"]
    assert pdf.read_bytes()[:4] == b"%PDF"
    reader = pypdf.PdfReader(str(pdf))
    assert len(reader.pages) > 3
    text = "".join(page.extract_text() for page in reader.pages[:2]).replace("\n", " ")
    assert _reference_wer().split(" ")[0] in text


def test_missing_results_say_not_run(tmp_path):
    results = tmp_path / "results"
    (results / "recogniser").mkdir(parents=True)
    shutil.copyfile(RESULTS / FILES["recogniser"], results / FILES["recogniser"])
    text = render_paper(results)
    assert f"*Not run: the adaptation protocols (`eval/results/{FILES['adaptation']}` is missing).*" in text
    assert f"`eval/results/{FILES['quantization']}` is missing" in text
    assert f"`eval/results/{FILES['gpu_check']}` is missing" in text
    assert _reference_wer() in text


def test_no_results_at_all(tmp_path):
    text = render_paper(tmp_path)
    assert text.count("*Not run:") >= 8 and "## 5. Limits" in text


def test_script_builds_markdown_only(tmp_path):
    from modeling_lact_audio.paper import main

    paths = main(["--output", str(tmp_path), "--no-pdf", "--results", str(tmp_path / "none")])
    assert paths["pdf"] is None and paths["markdown"].is_file() and paths["html"].is_file()
    assert (ROOT / "eval" / "paper" / "build.py").is_file()
