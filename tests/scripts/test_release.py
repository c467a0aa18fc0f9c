"""`modeling_lact_audio.export.release` (run_scripts/release.py): a release folder loads every way a Hub user
loads it, its card's model-index is the evaluation JSON, and --push never uploads offline."""

import json
import re
import shutil
from pathlib import Path

import httpx
import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForCTC, AutoProcessor, pipeline

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.export import release
from modeling_lact_audio.export.checkpoint import stale_generated_files
from modeling_lact_audio.modeling_lact_audio import file_sha256
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor
from modeling_lact_audio.recogniser.evaluation import score_split
from tests.model_testers import load_without_the_package

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ["test_seen", "test_real"]
WHISPER = "whisper tiny.en zero-shot (greedy)"
NAME_CI = re.compile(r"^(WER|CER) % \((.+)\), 95% CI \[([\d.]+), ([\d.]+)\]$")


def _recogniser_results(n: int = 30) -> dict:
    refs = ["the cat sat on the mat"] * n
    hyps = {"tiny": "the cat sat on a hat", "tiny + LM": "the cat sat on the hat", WHISPER: "the cat sat on the mat"}
    systems = {name: {"splits": {s: score_split(refs, [h] * n) for s in SPLITS}} for name, h in hyps.items()}
    return {"splits": SPLITS, "rows_per_split": n, "systems": systems, "command": "python eval/recogniser_eval.py"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny trained-like CTC folder (with a language_model/), its recogniser-layout evaluation and a corpus."""
    root = tmp_path_factory.mktemp("release_inputs")
    source = root / "tiny_ctc"
    torch.manual_seed(0)
    tokenizer = LaCTCTCTokenizer.from_texts(["the cat sat on the mat"])
    LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size)).save_pretrained(source)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(source)
    (source / "language_model").mkdir()
    (source / "language_model" / "decoder_config.json").write_text('{"lm_weight": 1.0}')
    results = root / "results.json"
    results.write_text(json.dumps(_recogniser_results()))
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "README.md").write_text("# corpus data card\n\nlicences of the sources\n")
    stats = {"hours": 1.0, "rows": 10, "speakers": 2, "engines": ["espeak"], "conditions": ["clean"]}
    (corpus / "build_info.json").write_text(json.dumps({"stats": {"train": stats, "test_seen": stats}}))
    return source, results, corpus


def _argv(inputs, output, *extra) -> list[str]:
    source, results, corpus = inputs
    return [str(source), "--results", str(results), "--output", str(output), "--corpus", str(corpus), *extra]


@pytest.fixture(scope="module")
def released(inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("release") / "tiny_release"
    release.main(_argv(inputs, folder, "--system", "tiny"))
    return folder


def _card_metrics(folder: Path) -> dict:
    """``{(split, decoding, metric): (value, low, high)}`` read back from the card's model-index."""
    card = ModelCard.load(folder / "README.md")
    metrics = {}
    for r in card.data.eval_results:
        assert r.task_type == "automatic-speech-recognition" and r.dataset_type == release.DATASET_TYPE
        kind, decoding, low, high = NAME_CI.match(r.metric_name).groups()
        assert kind.lower() == r.metric_type
        metrics[r.dataset_split, decoding, r.metric_type] = (r.metric_value, float(low), float(high))
    return metrics


def _expected(results: dict, system: str, decodings: dict) -> dict:
    want = {}
    for suffix, decoding in decodings.items():
        for split, s in release.split_scores(results, system + suffix).items():
            for m in ("wer", "cer"):
                want[split, decoding, m] = (100 * s[m], 100 * s[f"{m}_ci"][0], 100 * s[f"{m}_ci"][1])
    return want


def _assert_card_matches(folder: Path, results: dict, system: str, decodings: dict) -> None:
    got, want = _card_metrics(folder), _expected(results, system, decodings)
    assert got.keys() == want.keys()
    for key, values in want.items():
        np.testing.assert_allclose(got[key], values, atol=0.006, err_msg=str(key))


def test_release_folder_has_every_part_and_its_card_matches_the_json(inputs, released):
    source, results, corpus = inputs
    names = {p.name for p in released.iterdir()}
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json", "data_card.md"} <= names
    assert (released / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()
    assert (released / "language_model" / "decoder_config.json").is_file()
    assert (released / "data_card.md").read_text() == (corpus / "README.md").read_text()
    assert stale_generated_files(released) == []  # the code copies are what --refresh-code writes
    record = json.loads((released / "lact_export.json").read_text())
    assert record["tool"] == "release" and record["system"] == "tiny"
    assert record["weights_sha256"] == {"model.safetensors": file_sha256(released / "model.safetensors")}

    card = ModelCard.load(released / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "automatic-speech-recognition"
    assert card.data.model_name == "tiny_release" and card.data.base_model is None  # no Whisper inside
    # a language_model/ ships, so the LM decoding's numbers are this folder's too
    _assert_card_matches(released, json.loads(results.read_text()), "tiny", release.DECODINGS)
    for section in ("## Intended use", "## Limits", "## Training data", "## How to load", "## Licence"):
        assert section in card.text
    assert "python eval/recogniser_eval.py" in card.text and "--system tiny" in card.text
    # measured limits: Whisper is perfect on both splits here, so the card says the model is worse
    assert card.text.count("worse: the 95% intervals do not overlap") == len(SPLITS)


def test_release_loads_with_auto_classes_and_the_pipeline(inputs, released):
    source, _, _ = inputs
    model = AutoModelForCTC.from_pretrained(released).eval()
    processor = AutoProcessor.from_pretrained(released)
    audio = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    features = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        want = AutoModelForCTC.from_pretrained(source).eval()(**features).logits
        torch.testing.assert_close(model(**features).logits, want, rtol=0, atol=0)
    text = pipeline("automatic-speech-recognition", model=str(released))(audio)["text"]
    assert text == processor.batch_decode(want.argmax(-1))[0]


@pytest.mark.slow  # a fresh Python process
def test_release_loads_with_trust_remote_code_without_the_package(released, tmp_path):
    copy = tmp_path / released.name
    shutil.copytree(released, copy)
    features = torch.randn(1, 120, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = AutoModelForCTC.from_pretrained(released).eval()(input_features=features).logits
    torch.save({"input_features": features}, copy / "inputs.pt")
    info = load_without_the_package(copy, "ctc")
    assert not info["package_imported"] and info["class"] == "LaCTAudioForCTC"
    torch.testing.assert_close(torch.load(copy / "remote_logits.pt"), want, rtol=1e-5, atol=1e-5)


def test_asr_eval_layout_finds_the_system_by_its_folder(inputs, tmp_path):
    """eval/asr_eval.py's JSON (``wer_ci95``, ``examples``, the folder recorded): no --system needed; without a
    language_model/ only the greedy numbers are this folder's."""
    source, _, corpus = inputs
    plain = tmp_path / "plain"
    shutil.copytree(source, plain, ignore=shutil.ignore_patterns("language_model"))
    scores = _recogniser_results()["systems"]["tiny"]["splits"]
    splits = {
        s: {"wer": x["wer"], "wer_ci95": x["wer_ci"], "cer": x["cer"], "cer_ci95": x["cer_ci"], "examples": 30}
        for s, x in scores.items()
    }
    results = {"other": {"folder": "elsewhere", "splits": splits}, "tiny": {"folder": str(plain), "splits": splits}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "out"
    argv = [str(plain), "--results", str(tmp_path / "results.json"), "--output", str(out), "--corpus", str(corpus)]
    release.main(argv)
    _assert_card_matches(out, results, "tiny", {"": release.DECODINGS[""]})
    assert not (out / "language_model").exists()
    assert "no command recorded" in ModelCard.load(out / "README.md").text


def test_release_refuses_bad_inputs_before_writing(inputs, tmp_path):
    source, results, corpus = inputs
    with pytest.raises(KeyError, match=r"no system 'nope'.*'tiny', 'tiny \+ LM'"):
        release.main(_argv(inputs, tmp_path / "out", "--system", "nope"))
    with pytest.raises(ValueError, match="pass --system"):  # the recogniser layout records no folders
        release.main(_argv(inputs, tmp_path / "out"))
    with pytest.raises(ValueError, match="is the source folder"):
        release.main(_argv(inputs, source, "--system", "tiny"))
    head = tmp_path / "head"  # a recogniser head: head.safetensors, no model weights
    head.mkdir()
    shutil.copy(source / "config.json", head)
    (head / "head.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="export_recogniser.py"):
        release.release(head, results, tmp_path / "out", "tiny", corpus)
    with pytest.raises(FileNotFoundError, match="--corpus"):
        release.release(source, results, tmp_path / "out", "tiny", tmp_path)
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not written by this exporter"):
        release.main(_argv(inputs, tmp_path / "mine", "--system", "tiny"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.fixture
def hub_calls(monkeypatch):
    """Replace every HfApi call the push makes with a recorder; nothing can reach a network."""
    calls = []
    monkeypatch.setattr(HfApi, "whoami", lambda self, *a, **k: calls.append(("whoami",)) or {"name": "user"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **k: calls.append(("create_repo", repo_id, k)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(("upload_folder", k)) or "commit-url")
    return calls


def test_push_offline_stops_before_building_or_uploading(inputs, tmp_path, monkeypatch, hub_calls):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set.*nothing was uploaded"):
        release.main(_argv(inputs, tmp_path / "out", "--system", "tiny", "--push", "user/tiny"))
    assert hub_calls == [] and not (tmp_path / "out").exists()


def test_push_without_a_token_or_a_reachable_hub_stops(tmp_path, monkeypatch, hub_calls):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="no Hugging Face token"):
        release.push_release(tmp_path, "user/tiny")
    assert hub_calls == []

    def unreachable(self, *args, **kwargs):
        raise httpx.ConnectError("no route to host")

    monkeypatch.setattr(HfApi, "whoami", unreachable)
    with pytest.raises(RuntimeError, match="cannot be reached or refuses the token"):
        release.push_release(tmp_path, "user/tiny", token="hf_test")
    assert hub_calls == []


def test_push_creates_the_repo_and_uploads_the_release_folder(inputs, tmp_path, monkeypatch, hub_calls):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    out = tmp_path / "out"
    release.main(_argv(inputs, out, "--system", "tiny", "--push", "user/tiny", "--private"))
    # the token and the Hub are checked before the build and again before the upload
    assert [c[0] for c in hub_calls] == ["whoami", "whoami", "create_repo", "upload_folder"]
    assert hub_calls[2][1] == "user/tiny" and hub_calls[2][2]["private"] is True
    upload = hub_calls[3][1]
    assert upload["folder_path"] == str(out) and upload["repo_id"] == "user/tiny"
    assert ModelCard.load(out / "README.md").data.model_name == "user/tiny"  # the card names the repo


@pytest.mark.slow
def test_release_of_the_shipped_whisper_recogniser(inputs, tmp_path):
    """The real release: the shipped lact_whisper_ctc folder and the recogniser evaluation's results.json (the
    test's stand-in data card: data/corpus is built locally, not committed)."""
    source = ROOT / "model_cards" / "checkpoints" / "lact_whisper_ctc"
    results = ROOT / "eval" / "results" / "recogniser" / "results.json"
    out = tmp_path / "lact_whisper_ctc"
    corpus = inputs[2]
    release.main(
        [str(source), "--results", str(results), "--output", str(out), "--system", "lact", "--corpus", str(corpus)]
    )
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "openai/whisper-tiny.en" and "MIT License" in card.text
    _assert_card_matches(out, json.loads(results.read_text()), "lact", release.DECODINGS)
    measured = json.loads(results.read_text())["systems"]
    ours, whisper = measured["lact + LM"]["splits"]["test_real"], measured["whisper tiny.en zero-shot (greedy)"]
    low, high = ours["wer_ci"]
    expected = f"`test_real`: WER {100 * ours['wer']:.1f} [{100 * low:.1f}, {100 * high:.1f}]; whisper tiny.en "
    assert expected + f"zero-shot (greedy): {100 * whisper['splits']['test_real']['wer']:.1f}" in card.text

    t = np.arange(32000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    assert isinstance(pipeline("automatic-speech-recognition", model=str(out))(audio)["text"], str)
    model = AutoModelForCTC.from_pretrained(out).eval()
    window = 2 * model.config.whisper_config["max_source_positions"]
    inputs = {
        "input_features": torch.randn(1, 80, window, generator=torch.Generator().manual_seed(0)),
        "attention_mask": (torch.arange(window) < 700)[None].long(),
    }
    with torch.inference_mode():
        want = model(**inputs).logits
    torch.save(inputs, out / "inputs.pt")
    assert not load_without_the_package(out, "ctc")["package_imported"]
    torch.testing.assert_close(torch.load(out / "remote_logits.pt"), want, rtol=1e-4, atol=1e-4)
