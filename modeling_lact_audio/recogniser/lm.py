"""A word n-gram language model from training text, and CTC prefix beam search with it.

The LM is estimated by IRSTLM (Debian's ``irstlm``; KenLM's ``lmplz`` is on neither PyPI nor Debian)
and written as ARPA; decoding is torchaudio's ``ctc_decoder`` (flashlight-text's lexicon beam search
with KenLM scoring), a maintained decoder: ``pyctcdecode`` pins numpy < 2 and is unmaintained.
The lexicon holds the words of the training text only, so a word never seen in training can only be
produced as ``<unk>``-free spelling when the LM is off: decoding with the LM trades out-of-vocabulary
words for in-vocabulary accuracy, which is why WER is reported with and without it.
"""

import json
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import torch

IRSTLM_BIN = Path("/usr/lib/irstlm/bin")
LM_FOLDER = "language_model"


def _irstlm(tool: str) -> str:
    path = IRSTLM_BIN / tool
    if not path.exists():
        found = shutil.which(tool)
        if found is None:
            raise FileNotFoundError(
                f"IRSTLM's {tool} is missing: install Debian's irstlm "
                "(`apt-get install irstlm`; `make install` does it)"
            )
        return found
    return str(path)


def build_word_lm(texts: list[str], output: str, order: int = 3, smoothing: str = "msb") -> Path:
    """Estimate an ``order``-gram word LM from ``texts`` and write ``output`` (ARPA).

    Args:
        texts: normalised sentences (lower case, words separated by single spaces), training text only.
        output: path of the ARPA file to write.
        order: n-gram order.
        smoothing: IRSTLM's method (``msb``: modified shift-beta, its Kneser-Ney; ``wb``: Witten-Bell,
            for texts too small to estimate count-of-counts).

    Returns:
        the ARPA path.
    """
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise ValueError("build_word_lm needs at least one non-empty sentence")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "text.txt"
        plain.write_text("\n".join(f"<s> {t} </s>" for t in texts) + "\n")
        command = [_irstlm("tlm"), f"-tr={plain}", f"-n={order}", f"-lm={smoothing}", f"-o={output}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not output.exists():
            raise RuntimeError(f"IRSTLM failed ({' '.join(command)}): {result.stdout[-500:]} {result.stderr[-500:]}")
    return output


def write_lexicon(texts: list[str], vocab: dict[str, int], output: str, word_delimiter: str = "|") -> Path:
    """Write the flashlight lexicon of every word in ``texts`` spelt with ``vocab``'s characters.

    Each line is ``word<TAB>c h a r s |``; words with a character outside ``vocab`` are left out.
    """
    words = Counter(w for t in texts for w in t.split())
    lines = [f"{w}\t{' '.join(w)} {word_delimiter}" for w in sorted(words) if all(c in vocab for c in w)]
    output = Path(output)
    output.write_text("\n".join(lines) + "\n")
    return output


def build_language_model(texts: list[str], vocab: dict[str, int], folder: str, order: int = 3) -> Path:
    """``folder/language_model/`` with ``lm.arpa``, ``lexicon.txt`` and ``decoder_config.json`` (weights unset)."""
    target = Path(folder) / LM_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    smoothing = "msb"
    try:
        build_word_lm(texts, target / "lm.arpa", order=order, smoothing=smoothing)
    except RuntimeError:
        smoothing = "wb"  # too little text for modified shift-beta's count-of-counts
        build_word_lm(texts, target / "lm.arpa", order=order, smoothing=smoothing)
    write_lexicon(texts, vocab, target / "lexicon.txt")
    config = {
        "order": order,
        "smoothing": smoothing,
        "sentences": len(texts),
        "lm_weight": 1.0,
        "word_score": 0.0,
        "beam_size": 50,
    }
    (target / "decoder_config.json").write_text(json.dumps(config, indent=1))
    return target


class CTCBeamSearchDecoder:
    """CTC prefix beam search with a word n-gram LM over a character CTC vocabulary.

    Args:
        vocab: token -> id of the CTC tokenizer (``<pad>`` is the blank, ``|`` the word delimiter).
        lm_folder: a folder written by :func:`build_language_model`, or None for beam search without an LM
            (lexicon-free: any spelling can come out).
        beam_size, lm_weight, word_score: decoder settings (default: ``decoder_config.json``'s).

    ``__call__(log_probs [B, T, V] float32, lengths [B]) -> list[str]``: the best hypothesis per row.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        lm_folder: str | None = None,
        beam_size: int | None = None,
        lm_weight: float | None = None,
        word_score: float | None = None,
    ):
        from torchaudio.models.decoder import ctc_decoder

        tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if [vocab[t] for t in tokens] != list(range(len(tokens))):
            raise ValueError("vocab ids must be 0..V-1 without gaps")
        config = {"beam_size": 50, "lm_weight": 0.0, "word_score": 0.0}
        lexicon = lm = None
        if lm_folder is not None:
            folder = Path(lm_folder)
            config.update(json.loads((folder / "decoder_config.json").read_text()))
            lexicon, lm = str(folder / "lexicon.txt"), str(folder / "lm.arpa")
        for name, value in (("beam_size", beam_size), ("lm_weight", lm_weight), ("word_score", word_score)):
            if value is not None:
                config[name] = value
        self.config = config
        self.decoder = ctc_decoder(
            lexicon=lexicon,
            tokens=tokens,
            lm=lm,
            beam_size=int(config["beam_size"]),
            lm_weight=float(config["lm_weight"]),
            word_score=float(config["word_score"]),
            blank_token="<pad>",
            sil_token="|",
            unk_word="<unk>",
        )
        self.tokens = tokens

    @classmethod
    def from_pretrained(cls, folder: str, **overrides) -> "CTCBeamSearchDecoder":
        """The decoder of a saved recogniser folder: its ``vocab.json`` and, when shipped, its ``language_model/``."""
        folder = Path(folder)
        vocab = json.loads((folder / "vocab.json").read_text())
        lm = folder / LM_FOLDER
        return cls(vocab, str(lm) if (lm / "lm.arpa").exists() else None, **overrides)

    def decode_beams(self, logits, **unused) -> list[tuple]:
        """pyctcdecode's interface, which transformers' ASR pipeline calls for ``decoder=``: ``logits [T, V]``
        (numpy or tensor) -> ``[(text, None, [], score, score)]`` (only the text is filled in)."""
        logits = torch.as_tensor(logits, dtype=torch.float32)
        text = self(torch.log_softmax(logits, -1)[None], torch.tensor([logits.shape[0]]))[0]
        return [(text, None, [], 0.0, 0.0)]

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        results = self.decoder(log_probs.float().cpu().contiguous(), lengths.to(torch.int32).cpu())
        out = []
        for hyps in results:
            if not hyps:
                out.append("")
            elif hyps[0].words:
                out.append(" ".join(hyps[0].words))
            else:  # lexicon-free: spell the tokens, "|" between words
                chars = [self.tokens[i] for i in hyps[0].tokens.tolist()]
                text = "".join(" " if c == "|" else c for c in chars if c not in ("<pad>", "<unk>"))
                out.append(" ".join(text.split()))
        return out
