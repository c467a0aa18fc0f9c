"""Baselines match the LaCT parameter budget; a saved model loads with trust_remote_code without the package."""

import json

import pytest
import torch

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC, count_parameters, presets
from modeling_lact_audio.baselines import (
    BaselineASRTransformer,
    BaselineAudioTransformer,
    build_wav2vec2_for_ctc,
    build_whisper,
)
from modeling_lact_audio.export import bundle
from modeling_lact_audio.presets import PRESETS, preset_config
from tests.model_testers import LaCTAudioModelTester, load_without_the_package

tester = LaCTAudioModelTester()


@pytest.mark.parametrize("mixer", ["attention", "sliding_window"])
def test_baseline_asr_transformer_matches_budget_and_runs(mixer):
    config = preset_config("tiny", "ctc")
    target = count_parameters(LaCTAudioForCTC(config))
    model = BaselineASRTransformer.from_lact_config(config, mixer=mixer).eval()
    assert model.config.mixer == mixer
    assert abs(count_parameters(model) / target - 1) < 0.10
    x = torch.randn(2, 50, 80)
    out = model(input_features=x, labels=torch.tensor([[1, 2], [3, -100]]))
    assert out.logits.shape == (2, 13, config.vocab_size) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="from_lact_config"):
        BaselineASRTransformer(config)


def test_baseline_audio_transformer_matches_budget_and_generates():
    config = tester.lm_config()
    target = count_parameters(LaCTAudioForCausalLM(config))
    model = BaselineAudioTransformer.from_lact_config(config).eval()
    assert abs(count_parameters(model) / target - 1) < 0.10
    out = model.generate(input_ids=torch.randint(0, 13, (4, 5)), max_new_tokens=4, do_sample=False)
    assert out.shape == (4, 9)


@pytest.mark.parametrize("mixer", ["attention", "sliding_window"])
def test_baseline_audio_transformer_save_load_round_trip(tmp_path, mixer):
    model = BaselineAudioTransformer.from_lact_config(tester.lm_config(), mixer=mixer).eval()
    model.save_pretrained(tmp_path)
    loaded = BaselineAudioTransformer.from_pretrained(tmp_path).eval()
    assert loaded.config.mixer == mixer and loaded.config.architectures == ["BaselineAudioTransformer"]
    ids = torch.randint(0, 13, (4, 7))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


def test_wav2vec2_and_whisper_factories_match_budget_and_run():
    config = preset_config("tiny", "ctc", vocab_size=12)
    target = count_parameters(LaCTAudioForCTC(config))
    w2v = build_wav2vec2_for_ctc(config).eval()
    assert abs(count_parameters(w2v) / target - 1) < 0.10
    out = w2v(input_values=torch.randn(2, 8000), labels=torch.tensor([[1, 2], [3, -100]]))
    assert out.logits.shape[-1] == 12 and torch.isfinite(out.loss)
    whisper = build_whisper(config, max_source_positions=100).eval()
    assert abs(count_parameters(whisper) / target - 1) < 0.10
    out = whisper(input_features=torch.randn(2, 80, 200), labels=torch.tensor([[1, 2, 13], [3, 13, -100]]))
    assert torch.isfinite(out.loss)


def test_presets_sizes(capsys):
    sizes = {}
    for name in PRESETS:
        with torch.device("meta"):
            sizes[name] = count_parameters(LaCTAudioForCTC(preset_config(name, "ctc")))
    assert sizes["tiny"] < 1e6
    assert 8e6 < sizes["small"] < 12e6
    assert 80e6 < sizes["base"] < 120e6
    assert 0.8e9 < sizes["large"] < 1.2e9
    presets.main([])
    assert "| large |" in capsys.readouterr().out


def test_kernel_bundle_is_up_to_date(capsys):
    assert bundle.main(["--check"]) == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ctc", "lm"])
def test_trust_remote_code_export_loads_without_the_package(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "ctc":
        model, inputs = LaCTAudioForCTC(tester.ctc_config()).eval(), {"input_features": tester.features(T=24)[0]}
    else:
        model, inputs = LaCTAudioForCausalLM(tester.lm_config()).eval(), {"input_ids": torch.randint(0, 13, (4, 9))}
    with torch.no_grad():
        ref = model(**inputs).logits
    model.save_pretrained(tmp_path)
    torch.save(inputs, tmp_path / "inputs.pt")
    config = json.loads((tmp_path / "config.json").read_text())
    assert "auto_map" in config
    assert (tmp_path / "lact_kernels.py").exists() and (tmp_path / "modeling_lact_audio.py").exists()
    info = load_without_the_package(tmp_path, kind)
    assert not info["package_imported"] and info["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.load(tmp_path / "remote_logits.pt"), ref, rtol=1e-5, atol=1e-6)
