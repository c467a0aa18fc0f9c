"""eval/audio_tokenizer_quality.py end to end on a tiny espeak-ng corpus (every tokenizer, every metric)."""

import json
import runpy
import shutil
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from modeling_lact_audio.whisper_conversion.baseline import default_output_dir

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the cat sat on the mat", "seven green boats sail home", "she reads a book at night"]


def _espeak_split(folder: Path, name: str, voices: list[str]) -> datasets.Dataset:
    rows = {"uid": [], "audio": [], "text": [], "speaker": [], "duration": []}
    for i, (text, voice) in enumerate(zip(TEXTS, voices)):
        wav = folder / f"{name}{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, timeout=60)
        audio, rate = sf.read(wav, dtype="float32")
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000).numpy()  # the corpus' rate
        sf.write(wav, audio, 16000)
        rate = 16000
        rows["uid"].append(f"{name}{i}")
        rows["audio"].append(str(wav))
        rows["text"].append(text)
        rows["speaker"].append(voice)
        rows["duration"].append(len(audio) / rate)
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(sampling_rate=16000))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (make corpus-deps)")
@pytest.mark.skipif(not default_output_dir().is_dir(), reason="needs the converted Whisper (make whisper-baseline)")
def test_every_tokenizer_is_scored_with_every_metric(tmp_path):
    pytest.importorskip("resemblyzer")
    pytest.importorskip("speechmos")
    pytest.importorskip("pycodec2")
    corpus = tmp_path / "corpus"
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    datasets.DatasetDict(
        {
            "train": _espeak_split(wavs, "train", ["en-us", "en", "en-us+f3"]),
            "test_unseen_speakers": _espeak_split(wavs, "test", ["en+m3", "en-us+f2", "en+m3"]),
        }
    ).save_to_disk(str(corpus))
    out = tmp_path / "out"
    script = runpy.run_path(str(ROOT / "eval" / "audio_tokenizer_quality.py"))
    args = ["--corpus", str(corpus), "--splits", "test_unseen_speakers:3", "--fit-rows", "3", "--codebooks", "1", "2",
            "--codebook-size", "16", "--iters", "2", "--griffin-lim-iters", "2", "--codec2-modes", "1300",
            "--examples", "1", "--output", str(out)]  # fmt: skip
    script["main"](args)
    results = json.loads((out / "results.json").read_text())
    systems = results["systems"]
    assert set(systems) == {
        "mel_rvq K=1 + Griffin-Lim",
        "mel_rvq K=2 + Griffin-Lim",
        "log-mel + Griffin-Lim (no quantisation)",
        "codec2 1300",
    }
    for name, row in systems.items():
        w = row["whisper"]
        assert 0 <= w["decoded_wer"] and np.isfinite(row["speaker_similarity"]["mean"]), name
        assert -1 <= row["speaker_similarity"]["mean"] <= 1 and 1 <= row["dnsmos"]["ovrl_mos"]["mean"] <= 5, name
        assert isinstance(row["meets_targets"], bool) or isinstance(row["meets_targets"], dict), name
    assert systems["codec2 1300"]["bits_per_second"] == 1300
    assert results["utterances"] == 3 and "python eval/audio_tokenizer_quality.py" in results["command"]
    assert (out / "REPORT.md").read_text().count("codec2 1300") >= 1
    assert (out / "round_trip.png").stat().st_size > 0
