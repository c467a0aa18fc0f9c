"""LaCTCTCTokenizer: character-level CTC tokenizer; transformers' Wav2Vec2CTCTokenizer plus a normaliser."""

import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable

from transformers import Wav2Vec2CTCTokenizer

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_KEPT = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str, lowercase: bool = True) -> str:
    """The text normalisation applied before tokenisation and when building a vocabulary.

    1. Unicode NFKC (full-width and compatibility characters become their plain forms);
    2. typographic apostrophes become ``'``;
    3. lower-case, if ``lowercase``;
    4. every character that is not a letter, a digit, an apostrophe or whitespace becomes a space
       (so "well-known, ok?" gives "well known ok");
    5. runs of whitespace become one space; leading and trailing spaces are dropped.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if lowercase:
        text = text.lower()
    return _SPACES.sub(" ", _NOT_KEPT.sub(" ", text)).strip()


class LaCTCTCTokenizer(Wav2Vec2CTCTokenizer):
    """Character-level CTC tokenizer.

    Special tokens: ``pad_token`` (``"<pad>"``) is also the CTC blank, ``unk_token`` (``"<unk>"``)
    stands for characters outside the vocabulary, ``word_delimiter_token`` (``"|"``) stands for a
    space. No BOS/EOS is added. With ``normalize=True`` every text goes through
    :func:`normalize_text` first (lower-cased if ``lowercase``).

    ``tokenizer(text)`` gives ``input_ids`` (one id per character). ``decode(ids)`` /
    ``batch_decode(ids [B, T])`` read CTC output: repeats are collapsed, blanks dropped, the
    delimiter becomes a space. To read label sequences back (no collapsing), pass
    ``group_tokens=False``.

    Args:
        vocab_file: path to ``vocab.json`` (token -> id). Build one with :meth:`from_texts`.
        unk_token, pad_token, word_delimiter_token: see above.
        lowercase: lower-case texts when normalising.
        normalize: apply :func:`normalize_text` before tokenisation.
    """

    def __init__(
        self,
        vocab_file: str,
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        word_delimiter_token: str = "|",
        lowercase: bool = True,
        normalize: bool = True,
        **kwargs,
    ):
        self.lowercase, self.normalize = lowercase, normalize
        kwargs.setdefault("bos_token", None)
        kwargs.setdefault("eos_token", None)
        # Wav2Vec2's do_lower_case upper-cases the input; our normaliser owns casing instead.
        kwargs["do_lower_case"] = False
        super().__init__(
            vocab_file,
            unk_token=unk_token,
            pad_token=pad_token,
            word_delimiter_token=word_delimiter_token,
            lowercase=lowercase,
            normalize=normalize,
            **kwargs,
        )

    def prepare_for_tokenization(self, text: str, is_split_into_words: bool = False, **kwargs):
        """Normalise ``text`` (see :func:`normalize_text`) before Wav2Vec2's character split."""
        if self.normalize:
            text = normalize_text(text, self.lowercase)
        return super().prepare_for_tokenization(text, is_split_into_words=is_split_into_words, **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        word_delimiter_token: str = "|",
        lowercase: bool = True,
        normalize: bool = True,
        **kwargs,
    ) -> "LaCTCTCTokenizer":
        """Build the vocabulary from the characters of ``texts`` (after normalisation).

        Ids: ``pad_token`` 0 (the CTC blank), ``unk_token`` 1, ``word_delimiter_token`` 2, then the
        characters in sorted order. Save it with ``save_pretrained`` (writes ``vocab.json``).
        """
        chars = set()
        for text in texts:
            chars.update(normalize_text(text, lowercase) if normalize else text)
        chars.discard(" ")
        specials = [pad_token, unk_token, word_delimiter_token]
        vocab = {token: i for i, token in enumerate(specials + sorted(chars - set(specials)))}
        with tempfile.TemporaryDirectory() as folder:
            vocab_file = os.path.join(folder, "vocab.json")
            with open(vocab_file, "w", encoding="utf-8") as handle:
                json.dump(vocab, handle, ensure_ascii=False)
            return cls(
                vocab_file,
                unk_token=unk_token,
                pad_token=pad_token,
                word_delimiter_token=word_delimiter_token,
                lowercase=lowercase,
                normalize=normalize,
                **kwargs,
            )
