"""LaCTCTCTokenizer: normalisation, vocabulary building, CTC decoding, save/load and AutoTokenizer."""

import json

import pytest
import torch
from transformers import AutoTokenizer, PretrainedConfig

from modeling_lact_audio.processors import LaCTCTCTokenizer, normalize_text, register_auto_classes

TEXTS = ["Hello World!", "It’s a well-known café.", "the quick brown fox"]


class _TokenizerTestConfig(PretrainedConfig):
    model_type = "lact_audio_ctc_tokenizer_test"


@pytest.mark.parametrize(
    "text, lowercase, expected",
    [
        ("Hello,   World!", True, "hello world"),
        ("It’s well-known", True, "it's well known"),
        ("ＡＢＣ café", True, "abc café"),
        ("  MiXeD\tCase\n", False, "MiXeD Case"),
        ("snake_case...", True, "snake case"),
    ],
)
def test_normalize_text(text, lowercase, expected):
    assert normalize_text(text, lowercase) == expected


def test_vocabulary_layout_and_encoding():
    tok = LaCTCTCTokenizer.from_texts(TEXTS)
    vocab = tok.get_vocab()
    assert [vocab["<pad>"], vocab["<unk>"], vocab["|"]] == [0, 1, 2]
    assert tok.pad_token_id == 0 and tok.unk_token_id == 1 and tok.word_delimiter_token_id == 2
    assert set(vocab) == {"<pad>", "<unk>", "|"} | set("".join(normalize_text(t) for t in TEXTS)) - {" "}
    ids = tok("Hello, FOX")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == list("hello") + ["|"] + list("fox")
    assert tok("zz")["input_ids"] == [tok.unk_token_id] * 2


def test_ctc_decode_collapses_repeats_and_drops_blanks():
    tok = LaCTCTCTokenizer.from_texts(TEXTS)
    ids = {c: tok.convert_tokens_to_ids(c) for c in "helo|"}
    blank = tok.pad_token_id
    frames = [
        blank,
        ids["h"],
        ids["h"],
        ids["e"],
        blank,
        ids["l"],
        ids["l"],
        blank,
        ids["l"],
        ids["o"],
        ids["|"],
        ids["|"],
        blank,
        ids["h"],
        ids["e"],
        blank,
    ]
    assert tok.decode(frames) == "hello he"
    assert tok.batch_decode(torch.tensor([frames, frames])) == ["hello he", "hello he"]
    labels = tok(["hello", "well"], padding=True, return_tensors="pt")["input_ids"]
    assert tok.batch_decode(labels, group_tokens=False) == ["hello", "well"]
    assert tok.batch_decode(labels) == ["helo", "wel"]


def test_lowercase_off_keeps_case():
    tok = LaCTCTCTokenizer.from_texts(["Hi there"], lowercase=False)
    assert "H" in tok.get_vocab() and "h" in tok.get_vocab()
    assert tok.decode(tok("Hi there")["input_ids"], group_tokens=False) == "Hi there"


def test_save_load_round_trip_and_auto_tokenizer(tmp_path):
    register_auto_classes(_TokenizerTestConfig)
    tok = LaCTCTCTokenizer.from_texts(TEXTS, lowercase=True)
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text()) == tok.get_vocab()
    for loaded in (LaCTCTCTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is LaCTCTCTokenizer
        assert loaded.get_vocab() == tok.get_vocab()
        assert (loaded.lowercase, loaded.normalize) == (True, True)
        assert loaded("It's A FOX")["input_ids"] == tok("It's A FOX")["input_ids"]
        assert loaded.bos_token is None and loaded.eos_token is None
