"""`modeling_lact_audio.export.checkpoint` (run_scripts/export_checkpoint.py) and the checkpoints shipped under
`model_cards/checkpoints/`."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCTC, AutoProcessor, pipeline

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.export import checkpoint
from modeling_lact_audio.export.checkpoint import export_checkpoint, refresh_code, stale_generated_files
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor
from tests.model_testers import load_without_the_package

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for p in (ROOT / "model_cards" / "checkpoints").iterdir() if (p / "config.json").is_file())
REFRESH = "python run_scripts/export_checkpoint.py --refresh-code " + " ".join(
    str(p.relative_to(ROOT)) for p in SHIPPED
)


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A tiny CTC model and its processor saved as run_scripts/train.py saves them."""
    folder = tmp_path_factory.mktemp("run") / "best"
    torch.manual_seed(0)
    tokenizer = LaCTCTCTokenizer.from_texts(["hello world", "a test"])
    model = LaCTAudioForCTC(preset_config("tiny", "ctc", vocab_size=tokenizer.vocab_size))
    model.save_pretrained(folder)
    LaCTProcessor(feature_extractor=LaCTFeatureExtractor(), tokenizer=tokenizer).save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize("storage", ["float32", "bfloat16"])
def test_export_reloads_in_float32_with_the_stored_dtype(trained_like, tmp_path, storage):
    source, model = trained_like
    export_checkpoint(source, tmp_path / "out", storage)
    (tmp_path / "out" / "README.md").write_text("card")  # an existing model card survives a re-export
    diff = export_checkpoint(source, tmp_path / "out", storage)
    reloaded = AutoModelForCTC.from_pretrained(tmp_path / "out")
    assert reloaded.dtype == torch.float32
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(n).get_dtype() for n in f.keys()}
    assert dtypes == ({"F32"} if storage == "float32" else {"BF16"})
    for name, p in reloaded.state_dict().items():
        want = model.state_dict()[name]
        want = want if storage == "float32" else want.to(torch.bfloat16).float()
        torch.testing.assert_close(p, want, rtol=0, atol=0, msg=name)
    assert (diff == 0) if storage == "float32" else (0 < diff < 0.5)
    assert (tmp_path / "out" / "README.md").read_text() == "card"
    assert (tmp_path / "out" / "modeling_lact_audio.py").is_file()  # trust_remote_code copies
    assert stale_generated_files(tmp_path / "out") == []  # what --refresh-code writes is what export wrote


def test_export_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_checkpoint(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="storage_dtype"):
        export_checkpoint(tmp_path, tmp_path / "out", "float16")
    with pytest.raises(SystemExit):
        checkpoint.main([str(tmp_path)])  # a target is needed
    with pytest.raises(SystemExit):
        checkpoint.main([str(tmp_path), str(tmp_path / "out"), "--refresh-code", str(tmp_path)])


def test_refresh_code_rewrites_the_generated_files_and_nothing_else(trained_like, tmp_path, capsys):
    source, _ = trained_like
    folder = tmp_path / "out"
    export_checkpoint(source, folder)
    (folder / "README.md").write_text("card")
    untouched = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix != ".py" and p.name != "config.json"}
    (folder / "mixer_lact_audio.py").write_text("# edited by hand\n")
    (folder / "old_module.py").write_text("")
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"task": "ctc",\n', ""))
    assert stale_generated_files(folder) == ["config.json", "mixer_lact_audio.py", "old_module.py"]
    checkpoint.main(["--refresh-code", str(folder)])
    assert "config.json, mixer_lact_audio.py, old_module.py" in capsys.readouterr().out
    assert stale_generated_files(folder) == [] and not (folder / "old_module.py").exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in untouched} == untouched
    assert refresh_code(folder) == []


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_code_and_config_are_what_export_writes_now(folder):
    """The code copies and config.json of a shipped folder are generated: byte-identical to a fresh export."""
    stale = stale_generated_files(folder)
    assert stale == [], f"{folder.name}: {stale} are stale; run `{REFRESH}`"


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_transcribes_through_the_pipeline(folder):
    """Every shipped checkpoint loads in float32 with its processor and turns speech-like audio into text."""
    assert (folder / "README.md").is_file(), "a shipped checkpoint needs its model card"
    model = AutoModelForCTC.from_pretrained(folder)
    assert model.dtype == torch.float32 and model.config.task == "ctc"
    processor = AutoProcessor.from_pretrained(folder)
    asr = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=processor.tokenizer,
        feature_extractor=processor.feature_extractor,
    )
    t = np.arange(32000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    text = asr(audio)["text"]
    assert isinstance(text, str)
    # the pipeline asks for the attention mask: a Whisper-encoder model then reads only the real frames
    features = processor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        ids = model(**features).logits.argmax(-1)
    assert processor.batch_decode(ids)[0] == text  # the pipeline is the manual path


@pytest.mark.slow
@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_loads_with_trust_remote_code_without_the_package(folder, tmp_path):
    """The code copies in a shipped folder run on their own, and agree with the installed package."""
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    model = AutoModelForCTC.from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    if model.config.frontend == "whisper_encoder":  # Whisper's padded 30 s window, 7 s of it real
        window = 2 * model.config.whisper_config["max_source_positions"]
        features = torch.randn(1, model.config.num_mel_bins, window, generator=generator)
        inputs = {"input_features": features, "attention_mask": (torch.arange(window) < 700)[None].long()}
    else:
        features = torch.randn(1, 120, model.config.num_mel_bins, generator=generator)
        inputs = {"input_features": features}
    with torch.inference_mode():
        ref = model(**inputs).logits
    torch.save(inputs, copy / "inputs.pt")
    info = load_without_the_package(copy, "ctc")
    assert not info["package_imported"]
    torch.testing.assert_close(torch.load(copy / "remote_logits.pt"), ref, rtol=1e-4, atol=1e-4)
