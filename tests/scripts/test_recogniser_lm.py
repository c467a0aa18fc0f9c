"""Word n-gram LM building (IRSTLM) and CTC beam search with it (torchaudio + flashlight-text)."""

import shutil
from pathlib import Path

import pytest
import torch

from modeling_lact_audio.recogniser.lm import CTCBeamSearchDecoder, build_language_model, write_lexicon

pytestmark = pytest.mark.skipif(
    shutil.which("tlm") is None and not Path("/usr/lib/irstlm/bin/tlm").exists(),
    reason="Debian's irstlm is not installed (make install installs it)",
)

VOCAB = {"<pad>": 0, "<unk>": 1, "|": 2, "'": 3, **{c: 4 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog sat", "the cat and the dog"] * 3


def emissions(spelling: list[list[str]], confidence: float = 8.0) -> torch.Tensor:
    """Log-probabilities ``[1, T, V]``: one frame per entry, its tokens sharing the mass, a blank between."""
    frames = []
    for options in spelling:
        row = torch.full((len(VOCAB),), -confidence)
        for token in options:
            row[VOCAB[token]] = 0.0
        frames += [row, torch.full((len(VOCAB),), -confidence).index_fill(0, torch.tensor([0]), 0.0)]
    return torch.log_softmax(torch.stack(frames), -1)[None]


def spell(text: str) -> list[list[str]]:
    return [["|"] if c == " " else [c] for c in text]


def test_lexicon_lists_training_words_spelt_with_the_vocabulary(tmp_path):
    path = write_lexicon(["the cat", "naïve cat"], VOCAB, tmp_path / "lexicon.txt")
    assert path.read_text().splitlines() == ["cat\tc a t |", "the\tt h e |"]


def test_beam_search_without_lm_spells_the_best_path(tmp_path):
    decoder = CTCBeamSearchDecoder(VOCAB, None, beam_size=8)
    log_probs = emissions(spell("the cat"))
    assert decoder(log_probs, torch.tensor([log_probs.shape[1]])) == ["the cat"]


def test_lm_resolves_an_acoustically_ambiguous_word(tmp_path):
    folder = build_language_model(TEXTS, VOCAB, tmp_path)
    assert "\\data\\" in (folder / "lm.arpa").read_text()
    # "the c?t sat": 'a' and 'u' equally likely; the LM knows "cat", the lexicon has no "cut"
    spelling = spell("the ") + [["c"], ["a", "u"], ["t"]] + spell(" sat")
    log_probs = emissions(spelling)
    with_lm = CTCBeamSearchDecoder(VOCAB, str(folder), beam_size=16, lm_weight=1.0, word_score=0.0)
    assert with_lm(log_probs, torch.tensor([log_probs.shape[1]])) == ["the cat sat"]
    assert with_lm.decode_beams(log_probs[0].exp().log())[0][0] == "the cat sat"
