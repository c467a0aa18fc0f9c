"""Whisper's decoder shipped in a recogniser folder: save/load round trip, the shared encoder, clear errors, and
joint greedy decoding against a hand-written loop of the same rule."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import WhisperFeatureExtractor, WhisperTokenizer

from modeling_lact_audio import LaCTAudioForCTC
from modeling_lact_audio.asr import load_whisper
from modeling_lact_audio.processors import normalize_text
from modeling_lact_audio.recogniser.attention_decoder import (
    ATTENTION_DECODER_FOLDER,
    DECODER_WEIGHTS,
    JointCTCAttentionDecoder,
    joint_transcripts,
    load_attention_decoder,
    save_attention_decoder,
)
from modeling_lact_audio.recogniser.ctc_prefix_score import CTCPrefixScorer
from tests.recogniser_heads import save_tiny_whisper_recogniser

ROOT = Path(__file__).resolve().parents[2]
PRETRAINED_WHISPER = Path(os.environ.get("LACT_WHISPER_HF", Path.home() / ".cache/lact-audio/whisper-tiny.en-hf"))
SHIPPED_VOCAB = ROOT / "model_cards/checkpoints/lact_whisper_ctc/vocab.json"
SPEECH = ROOT / "eval/results/audio_tokenizer/examples/test_real-000533__original.wav"

pytestmark = pytest.mark.skipif(
    not (PRETRAINED_WHISPER / "model.safetensors").exists(),
    reason="no converted Whisper folder (`make whisper-baseline` writes one; or set LACT_WHISPER_HF)",
)


@pytest.fixture(scope="module")
def whisper():
    return load_whisper(str(PRETRAINED_WHISPER)).eval()


@pytest.fixture(scope="module")
def recogniser_folder(whisper, tmp_path_factory):
    """A small untrained LaCT recogniser on Whisper tiny.en's own encoder, with the shipped processor."""
    folder = save_tiny_whisper_recogniser(tmp_path_factory.mktemp("recogniser"), whisper, SHIPPED_VOCAB.parent)
    save_attention_decoder(
        whisper, WhisperTokenizer.from_pretrained(PRETRAINED_WHISPER), str(folder), {"ctc_weight": 0.4}
    )
    return folder


def test_round_trip_keeps_the_decoder_in_float16_and_shares_the_encoder(whisper, recogniser_folder):
    stored = recogniser_folder / ATTENTION_DECODER_FOLDER
    assert json.loads((stored / "joint_config.json").read_text())["ctc_weight"] == 0.4
    recogniser = LaCTAudioForCTC.from_pretrained(recogniser_folder)
    loaded, tokenizer, config = load_attention_decoder(str(recogniser_folder), recogniser.model.frontend.encoder)
    assert loaded.model.encoder is recogniser.model.frontend.encoder
    assert config == {"ctc_weight": 0.4, "num_beams": 5, "candidates": 10, "max_new_tokens": 200}
    original = whisper.state_dict()
    for key, value in loaded.state_dict().items():
        if key.startswith("model.decoder.") or key == "proj_out.weight":
            assert torch.equal(value, original[key].half().float()), key
    assert loaded.proj_out.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()  # still tied
    assert tokenizer.eos_token_id == 50256


def test_errors_name_the_problem(whisper, recogniser_folder, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(recogniser_folder, plain)
    shutil.rmtree(plain / ATTENTION_DECODER_FOLDER)
    with pytest.raises(FileNotFoundError, match="ships no attention_decoder"):
        JointCTCAttentionDecoder.from_pretrained(str(plain))
    other = LaCTAudioForCTC.from_pretrained(plain)
    with torch.no_grad():
        other.model.frontend.encoder.layers[0].fc1.weight.add_(1.0)
    other.save_pretrained(plain)
    with pytest.raises(ValueError, match="another encoder"):
        save_attention_decoder(whisper, WhisperTokenizer.from_pretrained(PRETRAINED_WHISPER), str(plain))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(recogniser_folder, corrupt)
    from safetensors.torch import load_file, save_file

    weights = load_file(corrupt / ATTENTION_DECODER_FOLDER / DECODER_WEIGHTS)
    weights.pop("model.decoder.layer_norm.weight")
    save_file(weights, corrupt / ATTENTION_DECODER_FOLDER / DECODER_WEIGHTS)
    with pytest.raises(ValueError, match="does not hold the decoder"):
        JointCTCAttentionDecoder.from_pretrained(str(corrupt))


def _speech():
    audio, rate = soundfile.read(SPEECH, dtype="float32")
    assert rate == 16000
    return [audio, audio[: len(audio) // 2]]


@torch.inference_mode()
def _greedy_joint_reference(decoder, features, mask, weight):
    """Greedy joint decoding written out: the decoder's log-probs of the whole prefix recomputed each step (no
    cache) with Whisper's suppressed tokens (and, on the first step, its begin-suppressed ones) removed, its
    ``candidates`` best tokens and the end of text scored with a fresh CTC prefix scorer."""
    states, log_probs, lengths = decoder.ctc_log_probs(features, mask)
    vocab, tokenizer, whisper = decoder.ctc_vocab, decoder.tokenizer, decoder.whisper
    config = whisper.generation_config
    start = [config.decoder_start_token_id, tokenizer.convert_tokens_to_ids("<|notimestamps|>")]

    def labels(ids):
        text = normalize_text(tokenizer.decode(ids, skip_special_tokens=True))
        out = [vocab["|"] if c == " " else vocab.get(c) for c in text]
        return None if None in out else tuple(out)

    texts = []
    for b in range(features.shape[0]):
        scorer = CTCPrefixScorer(log_probs[b, : int(lengths[b])])
        ids = list(start)
        for _ in range(decoder.max_new_tokens):
            logits = whisper(encoder_outputs=(states[b : b + 1],), decoder_input_ids=torch.tensor([ids])).logits[0, -1]
            suppressed = list(config.suppress_tokens) + (list(config.begin_suppress_tokens) if ids == start else [])
            logits[suppressed] = -float("inf")
            att = torch.log_softmax(logits.float(), -1)
            prefix = labels(ids)
            best, best_token = -float("inf"), None
            for token in set(att.topk(decoder.candidates).indices.tolist()) | {tokenizer.eos_token_id}:
                if token == tokenizer.eos_token_id:
                    gain = scorer.full(prefix) - scorer.prefix(prefix)
                else:
                    new = labels(ids + [token])
                    if new is None or new == prefix:
                        continue
                    gain = scorer.prefix(new) - scorer.prefix(prefix)
                score = (1 - weight) * float(att[token]) + weight * gain
                if score > best:
                    best, best_token = score, token
            if best_token == tokenizer.eos_token_id:
                break
            ids.append(best_token)
        texts.append(normalize_text(tokenizer.decode(ids, skip_special_tokens=True)))
    return texts


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_greedy_joint_decoding_equals_the_written_out_rule(recogniser_folder, weight):
    decoder = JointCTCAttentionDecoder.from_pretrained(str(recogniser_folder), num_beams=1, max_new_tokens=30)
    batch = WhisperFeatureExtractor.from_pretrained(PRETRAINED_WHISPER)(
        _speech(), sampling_rate=16000, return_tensors="pt", return_attention_mask=True
    )
    got = decoder.decode(batch["input_features"], batch["attention_mask"], ctc_weight=weight)
    expected = _greedy_joint_reference(decoder, batch["input_features"], batch["attention_mask"], weight)
    assert got == expected
    assert all(set(t) <= set("abcdefghijklmnopqrstuvwxyz' ") for t in got)
    if weight == 0.0:  # Whisper alone, spelt: the recording's words come out
        assert got[0]


def test_joint_transcripts_decode_every_weight_and_read_long_audio_in_30_s_windows(recogniser_folder):
    decoder = JointCTCAttentionDecoder.from_pretrained(str(recogniser_folder), num_beams=2, max_new_tokens=20)
    extractor = WhisperFeatureExtractor.from_pretrained(PRETRAINED_WHISPER)
    speech = _speech()
    out = joint_transcripts(decoder, extractor, speech, [0.0, 0.3], batch_size=1)
    assert list(out) == [0.0, 0.3] and all(len(v) == 2 for v in out.values())
    # 30 s of the recording padded with silence, then the recording again: two windows, their texts joined.
    first = np.concatenate([speech[0], np.zeros(extractor.n_samples - len(speech[0]), dtype=np.float32)])
    long = joint_transcripts(decoder, extractor, [np.concatenate([first, speech[1]])], [0.3], batch_size=2)[0.3]
    pieces = joint_transcripts(decoder, extractor, [first, speech[1]], [0.3], batch_size=2)[0.3]
    assert long == [" ".join(t for t in pieces if t)]


def test_transcriber_decodes_with_the_shipped_attention_decoder(recogniser_folder):
    from modeling_lact_audio.asr import Transcriber

    transcriber = Transcriber.from_pretrained(str(recogniser_folder), use_attention_decoder=True)
    joint = transcriber.joint
    joint.num_beams, joint.max_new_tokens = 2, 20
    audio = _speech()
    batch = WhisperFeatureExtractor.from_pretrained(PRETRAINED_WHISPER)(
        audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True
    )
    assert transcriber(audio) == joint.decode(batch["input_features"], batch["attention_mask"])
    with pytest.raises(ValueError, match="choose one"):
        Transcriber.from_pretrained(str(recogniser_folder), use_lm=True, use_attention_decoder=True)
