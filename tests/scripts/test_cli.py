"""``lact-audio`` (``modeling_lact_audio.cli``): every subcommand's help, transcription, adaptation, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_lact_audio.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "model_cards" / "checkpoints" / "lact_tiny_ctc"


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (rate, freq) in enumerate(((16000, 220.0), (22050, 330.0))):
        path = tmp_path / f"utt{i}.wav"
        t = np.arange(rate * 3 // 4) / rate
        samples = 0.1 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(path, samples.astype(np.float32), rate)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("command", ["transcribe", "adapt", "generate", "train", "bench", "report"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_top_level_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(c in out for c in ("transcribe", "adapt", "generate", "train", "bench", "report"))


def test_transcribe(wavs, capsys):
    texts = main(["transcribe", *wavs, "--model", str(TINY)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == wavs


def test_adapt_carries_the_state_and_writes_a_preset(wavs, tmp_path):
    preset = tmp_path / "preset"
    texts = main(["adapt", *wavs, "--model", str(TINY), "--preset-out", str(preset)])
    assert len(texts) == 2
    info = json.loads((preset / "lact_cache.json").read_text())
    assert info["layers_with_state"] and (preset / "fast_weights.safetensors").is_file()
    assert len(main(["adapt", wavs[0], "--model", str(TINY), "--preset-in", str(preset)])) == 1


def test_a_bad_file_exits_with_a_message(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(bad), "--model", str(TINY)])
    assert "cannot read" in str(exit_info.value.code) and str(bad) in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", str(tmp_path / "missing.wav"), "--model", str(TINY)])
    assert "no audio file" in str(exit_info.value.code)


def test_generate_without_a_generator_names_what_to_pass():
    with pytest.raises(SystemExit) as exit_info:
        main(["generate"])
    assert "--model" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", str(TINY)])
    assert "task='ctc'" in str(exit_info.value.code)


def test_generate_with_a_generator(tmp_path):
    from modeling_lact_audio import LaCTAudioForCausalLM
    from modeling_lact_audio.presets import preset_config

    config = preset_config("tiny", task="lm")
    LaCTAudioForCausalLM(config).save_pretrained(tmp_path / "gen")
    out = tmp_path / "codes.npy"
    main(["generate", "--model", str(tmp_path / "gen"), "--max-new-tokens", "4", "--output", str(out)])
    codes = np.load(out)
    assert codes.shape == (config.num_codebooks, 5)


def test_report_paper_markdown(tmp_path):
    paths = main(["report", "paper", "--output", str(tmp_path), "--no-pdf"])
    assert "## 3. Results" in paths["markdown"].read_text()


def test_console_script_entry_point():
    setup = (ROOT / "setup.py").read_text()
    if "lact-audio = modeling_lact_audio.cli:main" not in setup:
        pytest.skip("setup.py does not declare the console script yet")
    assert callable(main)
