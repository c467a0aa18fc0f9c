"""`run_scripts/export_checkpoint.py` and the checkpoints shipped under `model_cards/checkpoints/`."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCTC, AutoProcessor, pipeline

import modeling_lact_audio  # noqa: F401
from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.presets import preset_config
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "run_scripts"))
from export_checkpoint import export_checkpoint  # noqa: E402

SHIPPED = sorted(p for p in (ROOT / "model_cards" / "checkpoints").iterdir() if (p / "config.json").is_file())


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
    (tmp_path / "out").mkdir()
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


def test_export_rejects_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_checkpoint(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="storage_dtype"):
        export_checkpoint(tmp_path, tmp_path / "out", "float16")


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_transcribes_through_the_pipeline(folder):
    """Every shipped checkpoint loads in float32 with its processor and turns speech-like audio into text."""
    assert (folder / "README.md").is_file(), "a shipped checkpoint needs its model card"
    model = AutoModelForCTC.from_pretrained(folder)
    assert model.dtype == torch.float32
    processor = AutoProcessor.from_pretrained(folder)
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor)
    t = np.arange(32000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    text = asr(audio)["text"]
    assert isinstance(text, str)
    features = processor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        ids = model(**features).logits.argmax(-1)
    assert processor.batch_decode(ids)[0] == text  # the pipeline is the manual path


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_loads_with_trust_remote_code_without_the_package(folder, tmp_path):
    """The code copies in a shipped folder run on their own, and agree with the installed package."""
    import shutil
    import subprocess

    from test_baselines_and_export import REMOTE_SCRIPT

    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    model = AutoModelForCTC.from_pretrained(folder).eval()
    features = torch.randn(1, 120, model.config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    inputs = {"input_features": features}
    with torch.inference_mode():
        ref = model(**inputs).logits
    torch.save(inputs, copy / "inputs.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    out = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(copy), "ctc"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    torch.testing.assert_close(torch.load(copy / "remote_logits.pt"), ref, rtol=1e-4, atol=1e-4)
