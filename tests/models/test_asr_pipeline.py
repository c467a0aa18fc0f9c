"""A saved LaCTAudioForCTC folder with its processor transcribes through transformers' ASR pipeline."""

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModelForCTC, AutoProcessor, pipeline

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.processors import LaCTCTCTokenizer, LaCTFeatureExtractor, LaCTProcessor
from tests.model_testers import LaCTAudioModelTester

TEXTS = ["hello world", "the quick brown fox", "lact adapts at test time"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lact_ctc")
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    extractor = LaCTFeatureExtractor(n_mels=8, sampling_rate=16000, hop_length=160)
    processor = LaCTProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    config = LaCTAudioModelTester(num_mel_bins=8, vocab_size=len(tokenizer)).ctc_config()
    torch.manual_seed(0)
    model = LaCTAudioForCTC(config).eval()
    # A random model emits one token everywhere; a non-trivial bias makes the transcript non-empty.
    with torch.no_grad():
        model.lm_head.bias.copy_(torch.linspace(0, 3, len(tokenizer)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _manual_transcript(folder, audio):
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForCTC.from_pretrained(folder).eval()
    inputs = processor(audio=audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model(**inputs).logits.argmax(-1)
    return processor.batch_decode(ids)[0]


def test_pipeline_transcribes_numpy_and_wav_path_like_the_manual_path(saved_model, tmp_path):
    rng = np.random.default_rng(0)
    # 3 s of audio: 75 model frames, far longer than the model's LaCT chunk of 4 frames.
    audio = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    asr = pipeline("automatic-speech-recognition", model=str(saved_model))
    expected = _manual_transcript(saved_model, audio)
    assert expected  # the biased head emits characters
    assert asr(audio)["text"] == expected
    assert asr({"raw": audio, "sampling_rate": 16000})["text"] == expected
    wav = tmp_path / "utt.wav"
    sf.write(wav, audio, 16000, subtype="FLOAT")
    assert asr(str(wav))["text"] == expected


def test_config_reports_samples_per_logit(saved_model):
    config = LaCTAudioForCTC.config_class.from_pretrained(saved_model)
    assert config.inputs_to_logits_ratio == 160 * 4
