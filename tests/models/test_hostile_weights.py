"""Corrupt weight files: a NaN-filled tail or a changed byte is an error at load, never NaN logits."""

import json
import struct

import pytest
import torch

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.export.target import write_export_record

from ..model_testers import LaCTAudioModelTester


@pytest.fixture
def saved(tmp_path):
    model = LaCTAudioForCTC(LaCTAudioModelTester().ctc_config()).eval()
    model.save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_nan_tail_is_refused_naming_the_tensor(saved):
    _, folder = saved
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = b"\xff" * 64  # float32 0xffffffff is NaN
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="NaN or infinite values in .*weights file is corrupt"):
        LaCTAudioForCTC.from_pretrained(folder)


def test_export_record_checksum_is_verified(saved):
    model, folder = saved
    write_export_record(folder, tool="test")
    record = json.loads((folder / "lact_export.json").read_text())
    assert set(record["weights_sha256"]) == {"model.safetensors"}
    reloaded = LaCTAudioForCTC.from_pretrained(folder)  # untouched: loads
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)

    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + 1] ^= 0x01  # one low mantissa bit of the first tensor: finite, silently different
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or was changed after export: its sha256 is"):
        LaCTAudioForCTC.from_pretrained(folder)

    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing: lact_export.json lists it"):
        LaCTAudioForCTC.from_pretrained(folder)


def test_folder_without_record_is_not_checksummed_but_still_checked_for_nan(saved):
    model, folder = saved
    reloaded, info = LaCTAudioForCTC.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"]
    features, mask = LaCTAudioModelTester().features()
    with torch.inference_mode():
        got = reloaded.eval()(input_features=features, attention_mask=mask).logits
        torch.testing.assert_close(got, model(input_features=features, attention_mask=mask).logits)
