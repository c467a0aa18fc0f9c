"""``frontend="whisper_encoder"``: a pretrained Whisper encoder under the LaCT blocks, and the recogniser folder
assembled from a head trained on cached encoder states."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCTC,
    AutoProcessor,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    pipeline,
)

from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCTC
from modeling_lact_audio.processors import LaCTCTCTokenizer
from modeling_lact_audio.recogniser.encoder_cache import encode_waveforms, load_whisper_encoder
from modeling_lact_audio.recogniser.export import assemble_recogniser, export_recogniser
from modeling_lact_audio.recogniser.heads import CachedStatesCTC, recogniser_config
from modeling_lact_audio.recogniser.lm import LM_FOLDER
from modeling_lact_audio.recogniser.training import save_recogniser
from modeling_lact_audio.whisper_frontend_lact_audio import whisper_encoder_config, whisper_output_lengths

TEXTS = ["a cat sat", "the dog ran", "hello there"]
QUANTIZATION_EVAL = Path(__file__).resolve().parents[2] / "eval" / "quantization_eval.py"


def tiny_whisper_config() -> WhisperConfig:
    return WhisperConfig(
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )


def tiny_config(**overrides) -> LaCTAudioConfig:
    fields = dict(
        frontend="whisper_encoder",
        whisper_config=tiny_whisper_config(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_lact_heads=2,
        intermediate_size=64,
        lact_chunk_size=16,
        window_size=8,
        lact_order="bidirectional",
        attention_pattern="bidirectional",
        vocab_size=12,
    )
    return LaCTAudioConfig(**(fields | overrides))


def features_and_mask(seconds: list[float]):
    rng = np.random.default_rng(0)
    audio = [0.1 * rng.standard_normal(int(16000 * s)).astype(np.float32) for s in seconds]
    out = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    return audio, out["input_features"], out["attention_mask"]


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    WhisperForConditionalGeneration(tiny_whisper_config()).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    return folder


def test_config_needs_a_whisper_config_and_round_trips():
    with pytest.raises(ValueError, match="whisper_config"):
        LaCTAudioConfig(frontend="whisper_encoder")
    with pytest.raises(ValueError, match="conv_strides is not a field"):
        tiny_config(conv_strides=[2, 2])
    with pytest.raises(ValueError, match="whisper_trainable_layers"):
        tiny_config(whisper_trainable_layers=3)  # the tiny encoder has 2 layers
    with pytest.raises(ValueError, match="whisper_config is not a field"):
        LaCTAudioConfig(whisper_config=tiny_whisper_config())  # the default front end is log_mel
    config = tiny_config(whisper_trainable_layers=1)
    again = LaCTAudioConfig.from_dict(json.loads(config.to_json_string()))
    assert again.whisper_config == config.whisper_config and again.whisper_trainable_layers == 1
    assert config.total_stride == 2 and config.inputs_to_logits_ratio == 320
    kept = whisper_encoder_config(tiny_whisper_config())  # what an export stores: no decoder bookkeeping
    assert "suppress_tokens" not in kept and tiny_config(whisper_config=kept).whisper_config["d_model"] == 16


def test_output_lengths_match_the_encoder_convs():
    conv = tiny_whisper_config()
    encoder = WhisperForConditionalGeneration(conv).get_encoder()
    for mel in (1, 2, 3, 200, 2999, 3000):
        x = torch.zeros(1, 80, mel)
        out = encoder.conv2(encoder.conv1(x))
        assert out.shape[-1] == whisper_output_lengths(mel)


def test_forward_crops_to_real_frames_and_equals_the_states_path():
    torch.manual_seed(0)
    model = LaCTAudioForCTC(tiny_config()).eval()
    _, features, mask = features_and_mask([1.0, 0.55])
    with torch.inference_mode():
        out = model(input_features=features, attention_mask=mask)
        states = model.model.frontend.encoder(features).last_hidden_state
        lengths = whisper_output_lengths(mask.sum(-1))
        T = int(lengths.max())
        frame_mask = (torch.arange(T)[None] < lengths[:, None]).long()
        again = model(frontend_states=states[:, :T], attention_mask=frame_mask)
    assert out.logits.shape == (2, 50, 12) and out.output_lengths.tolist() == [50, 28]
    torch.testing.assert_close(out.logits, again.logits, rtol=0, atol=0)
    assert again.output_lengths.tolist() == [50, 28]
    # a padded row equals the row alone on its real frames
    with torch.inference_mode():
        alone = model(input_features=features[1:], attention_mask=mask[1:]).logits
    torch.testing.assert_close(out.logits[1, :28], alone[0], rtol=1e-5, atol=1e-5)


def test_encoder_is_frozen_except_the_trainable_top_layers():
    model = LaCTAudioForCTC(tiny_config(whisper_trainable_layers=1))
    encoder = model.model.frontend.encoder
    assert not any(p.requires_grad for p in encoder.layers[0].parameters())
    assert all(p.requires_grad for p in encoder.layers[1].parameters())
    assert encoder.layer_norm.weight.requires_grad and not encoder.conv1.weight.requires_grad
    frozen = LaCTAudioForCTC(tiny_config())
    assert not any(p.requires_grad for p in frozen.model.frontend.encoder.parameters())
    assert frozen.model.frontend.projection.weight.requires_grad
    # a frozen encoder gets no gradient; the layers on top do
    _, features, mask = features_and_mask([0.5])
    loss = frozen(input_features=features, attention_mask=mask, labels=torch.tensor([[1, 2, 3]])).loss
    loss.backward()
    assert frozen.model.frontend.encoder.conv1.weight.grad is None
    assert frozen.model.frontend.projection.weight.grad is not None


def test_bad_inputs_say_what_is_expected():
    model = LaCTAudioForCTC(tiny_config())
    with pytest.raises(ValueError, match=r"\[B, num_mel_bins=80, 3000\]"):
        model(input_features=torch.zeros(1, 200, 80))
    with pytest.raises(ValueError, match="d_model=16"):
        model(frontend_states=torch.zeros(1, 10, 32))
    log_mel = LaCTAudioForCTC(LaCTAudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(ValueError, match="frontend_states needs frontend='whisper_encoder'"):
        log_mel(frontend_states=torch.zeros(1, 10, 32))


def _trained_looking_head(folder, whisper_folder):
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    config = recogniser_config(
        len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        lact_chunk_size=16,
        window_size=8,
    )
    torch.manual_seed(1)
    head = CachedStatesCTC(config, tiny_whisper_config().d_model).eval()
    with torch.no_grad():
        head.ctc.lm_head.bias[tokenizer.convert_tokens_to_ids("a")] += 3.0  # a non-trivial transcript
    save_recogniser(head, tokenizer, folder)
    return head, tokenizer


def test_assembled_model_on_audio_equals_the_head_on_cached_states(tmp_path, whisper_folder):
    head, _ = _trained_looking_head(tmp_path / "head", whisper_folder)
    model = assemble_recogniser(head, str(whisper_folder))
    encoder, fe = load_whisper_encoder(str(whisper_folder))
    audio, features, mask = features_and_mask([0.8, 0.3])
    with torch.inference_mode():
        got = model(input_features=features, attention_mask=mask)
        for i, states in enumerate(encode_waveforms(encoder, fe, audio)):
            want = head(torch.as_tensor(states)[None], torch.ones(1, len(states), dtype=torch.long)).logits[0]
            n = int(got.output_lengths[i])
            assert n == len(states)
            torch.testing.assert_close(got.logits[i, :n], want, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for n, p in head.named_parameters() if not n.startswith("ctc.model.frontend")
    )


def test_the_head_read_back_from_an_assembled_recogniser_is_the_head(tmp_path, whisper_folder):
    """``head_from_recogniser`` inverts ``assemble_recogniser``, and ``load_head`` reads a recogniser folder that
    way (the adaptation protocols run a shipped folder on cached states)."""
    from modeling_lact_audio.recogniser.evaluation import load_head
    from modeling_lact_audio.recogniser.heads import head_from_recogniser

    head, _ = _trained_looking_head(tmp_path / "head", whisper_folder)
    model = assemble_recogniser(head, str(whisper_folder))
    model.save_pretrained(tmp_path / "recogniser")
    states = torch.randn(2, 20, tiny_whisper_config().d_model)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0
    with torch.no_grad():
        expected = head(states, mask).logits
        for back in (head_from_recogniser(model), load_head(str(tmp_path / "recogniser"))):
            assert isinstance(back, CachedStatesCTC) and not back.training
            assert torch.equal(back(states, mask).logits, expected)
    with pytest.raises(ValueError, match="whisper_encoder"):
        head_from_recogniser(head.ctc)
    with pytest.raises(FileNotFoundError, match="neither a trained head"):
        load_head(str(tmp_path / "nothing"))


def test_exported_folder_loads_with_auto_classes_and_the_pipeline(tmp_path, whisper_folder):
    head, tokenizer = _trained_looking_head(tmp_path / "head", whisper_folder)
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "decoder_config.json").write_text(json.dumps({"order": 3, "lm_weight": 1.0, "word_score": 0.0}))
    folder = export_recogniser(
        str(tmp_path / "head"),
        str(whisper_folder),
        str(tmp_path / "out"),
        lm_folder=str(lm),
        decoder_settings={"lm_weight": 0.5, "word_score": 1.0, "beam_size": 20},
    )
    settings = json.loads((folder / LM_FOLDER / "decoder_config.json").read_text())
    assert (settings["lm_weight"], settings["word_score"], settings["beam_size"]) == (0.5, 1.0, 20)
    model = AutoModelForCTC.from_pretrained(folder).eval()
    assert model.config.frontend == "whisper_encoder"
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(processor.feature_extractor, WhisperFeatureExtractor)
    audio, _, _ = features_and_mask([0.7])
    inputs = processor(audio=audio[0], sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        ids = model(**inputs).logits.argmax(-1)
    text = processor.batch_decode(ids)[0]
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    assert asr(audio[0])["text"] == text and "a" in text


def _bigram_lm(folder, words):
    """A hand-written word bigram ARPA LM (KenLM needs order >= 2), its lexicon and decoder settings."""
    from modeling_lact_audio.recogniser.lm import write_lexicon

    folder.mkdir(parents=True)
    p = -np.log10(len(words) + 2)
    unigrams = [f"{p:.4f}\t{w}\t-0.3" for w in ["<unk>", *words]] + [f"{p:.4f}\t</s>", "-99\t<s>\t-0.3"]
    bigrams = [f"{p:.4f}\t<s> {w}" for w in words] + [f"{p:.4f}\t{w} </s>" for w in words]
    arpa = (
        f"\\data\\\nngram 1={len(unigrams)}\nngram 2={len(bigrams)}\n\n\\1-grams:\n"
        + "\n".join(unigrams)
        + "\n\n\\2-grams:\n"
        + "\n".join(bigrams)
        + "\n\n\\end\\\n"
    )
    (folder / "lm.arpa").write_text(arpa)
    tokenizer = LaCTCTCTokenizer.from_texts(TEXTS)
    write_lexicon(TEXTS, tokenizer.get_vocab(), folder / "lexicon.txt")
    (folder / "decoder_config.json").write_text(json.dumps({"lm_weight": 1.0, "word_score": 0.0, "beam_size": 8}))
    return folder


def test_transcriber_reads_long_audio_in_windows_and_decodes_with_the_shipped_lm(tmp_path, whisper_folder):
    from modeling_lact_audio.asr import Transcriber

    _trained_looking_head(tmp_path / "head", whisper_folder)
    lm = _bigram_lm(tmp_path / "lm", sorted({w for t in TEXTS for w in t.split()}))
    folder = export_recogniser(str(tmp_path / "head"), str(whisper_folder), str(tmp_path / "out"), lm_folder=str(lm))
    transcriber = Transcriber.from_pretrained(folder)
    rng = np.random.default_rng(1)
    long = (0.1 * rng.standard_normal(16000 * 31)).astype(np.float32)  # 30 s window + 1 s
    short = long[:8000]
    first, rest = transcriber([long[: 16000 * 30]])[0], transcriber([long[16000 * 30 :]])[0]
    assert transcriber([long, short]) == [" ".join(t for t in (first, rest) if t), transcriber([short])[0]]
    with_lm = Transcriber.from_pretrained(folder, use_lm=True)
    words = {w for t in TEXTS for w in t.split()}
    for text in with_lm([short, long]):
        assert set(text.split()) <= words  # the lexicon only spells the LM's words
    from modeling_lact_audio.recogniser.lm import CTCBeamSearchDecoder

    asr = pipeline(
        "automatic-speech-recognition", model=str(folder), decoder=CTCBeamSearchDecoder.from_pretrained(folder)
    )
    assert asr(short)["text"] == with_lm([short])[0]
    with pytest.raises(FileNotFoundError, match="language_model"):
        export_recogniser(str(tmp_path / "head"), str(whisper_folder), str(tmp_path / "bare"))
        Transcriber.from_pretrained(tmp_path / "bare", use_lm=True)


def test_quantization_eval_decodes_a_long_utterance_from_all_its_windows(tmp_path, whisper_folder):
    from modeling_lact_audio.asr import Transcriber

    transcribe = runpy.run_path(str(QUANTIZATION_EVAL), run_name="quantization_eval")["transcribe"]
    _trained_looking_head(tmp_path / "head", whisper_folder)
    folder = export_recogniser(str(tmp_path / "head"), str(whisper_folder), str(tmp_path / "out"))
    transcriber = Transcriber.from_pretrained(folder)
    rng = np.random.default_rng(2)
    long = (0.1 * rng.standard_normal(16000 * 31)).astype(np.float32)  # two windows: 30 s and 1 s
    short = long[:8000]
    model, processor = transcriber.model, transcriber.processor
    out = transcribe(model, processor, [short, long], batch_size=2)
    parts = transcribe(model, processor, [long[: 16000 * 30], long[16000 * 30 :]], batch_size=1)
    assert out["frames"] == [transcribe(model, processor, [short], 1)["frames"][0], sum(parts["frames"])]
    assert out["greedy"][0] == transcriber([short])[0]
