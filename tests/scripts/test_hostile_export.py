"""Exporters never delete a folder they did not write (hardening issue): export_checkpoint, export_recogniser
and the Whisper conversion refuse a non-empty foreign folder unless told to overwrite it."""

import json

import pytest
import torch

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.export import checkpoint
from modeling_lact_audio.export.target import EXPORT_RECORD, claim_target
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor
from modeling_lact_audio.recogniser.export import export_recogniser
from modeling_lact_audio.whisper_conversion import convert as converter


def _foreign(folder):
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "best"
    torch.manual_seed(0)
    tokenizer = LaCTCTCTokenizer.from_texts(["hello world"])
    LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_export_checkpoint_refuses_a_foreign_folder_and_replaces_its_own(source, tmp_path):
    target = _foreign(tmp_path / "home")
    with pytest.raises(ValueError, match=f"not written by this exporter \\(no {EXPORT_RECORD}"):
        checkpoint.main([str(source), str(target)])
    assert (target / "thesis.tex").read_text() == "years of work"
    checkpoint.main([str(source), str(target), "--overwrite"])
    assert not (target / "thesis.tex").exists()
    record = json.loads((target / EXPORT_RECORD).read_text())
    assert record["tool"] == "export_checkpoint" and record["source"] == str(source)
    checkpoint.main([str(source), str(target)])  # its own earlier export: replaced without --overwrite


def test_recogniser_export_and_whisper_conversion_refuse_before_reading_anything(tmp_path):
    target = _foreign(tmp_path / "project")
    with pytest.raises(ValueError, match="pass --overwrite"):
        export_recogniser(str(tmp_path / "no_head"), str(tmp_path / "no_whisper"), str(target))
    with pytest.raises(ValueError, match="no ct2_conversion.json in it"):
        converter.convert(tmp_path / "no_ct2", target)
    assert (target / "thesis.tex").read_text() == "years of work"


def test_claim_target_cases(tmp_path):
    claim_target(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    claim_target(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        claim_target(tmp_path / "file", overwrite=True)
    claim_target(_foreign(tmp_path / "foreign"), overwrite=True)
