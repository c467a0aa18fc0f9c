"""LaCTCTCTokenizer: character-level CTC tokenizer; transformers' Wav2Vec2CTCTokenizer plus a normaliser."""

import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable

import numpy as np
import torch
from transformers import Wav2Vec2CTCTokenizer

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NOT_KEPT = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")
LABEL_PADDING = -100  # the label padding the CTC loss ignores; decode reads it as the blank


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

    def check_ids(self, token_ids, where: str = "token_ids") -> list[int]:
        """One sequence of CTC ids as a list of ints, ``-100`` (label padding) read as the blank.

        Args:
            token_ids: an int, or a 1-D list / numpy array / torch tensor of integer ids ``[T]``.
            where: names the sequence in error messages.

        Raises:
            ValueError: float ids (logits: take ``argmax(-1)`` first), strings or None, more than one
                dimension, or ids outside ``[0, len(tokenizer))`` other than ``-100``.
        """
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.detach().cpu().numpy()
        if isinstance(token_ids, (int, np.integer)) and not isinstance(token_ids, bool):
            token_ids = [int(token_ids)]
        try:
            array = np.asarray(token_ids)
        except ValueError as err:  # ragged nesting
            raise ValueError(f"{where}: CTC ids must be one sequence of ints ({err}).") from err
        if array.size == 0 and array.ndim == 1:
            return []  # an empty transcript (np.asarray([]) is float64)
        if array.dtype.kind == "f":
            hint = " These look like logits: pass logits.argmax(-1)." if array.ndim >= 2 else ""
            raise ValueError(f"{where}: CTC ids must be integers, got {array.dtype} values.{hint}")
        if array.size and array.dtype.kind not in "iu":
            raise ValueError(
                f"{where}: CTC ids must be integers, got {array.dtype} values (e.g. {array.flat[0]!r}); "
                "decode ids, not strings or None."
            )
        if array.ndim != 1:
            raise ValueError(f"{where}: expected one sequence of ids [T], got shape {array.shape}.")
        ids = array.astype(np.int64)
        bad = ((ids < 0) & (ids != LABEL_PADDING)) | (ids >= len(self))
        if bad.any():
            raise ValueError(
                f"{where}: id {int(ids[bad][0])} is outside the vocabulary [0, {len(self)}) "
                f"(-100 is read as label padding); was the tokenizer the model's?"
            )
        return np.where(ids == LABEL_PADDING, self.pad_token_id, ids).tolist()

    def decode(self, token_ids, *args, **kwargs):
        """Text of CTC ids ``[T]`` (see the class docstring); ids are checked by :meth:`check_ids`."""
        return super().decode(self.check_ids(token_ids), *args, **kwargs)

    def batch_decode(self, sequences, *args, **kwargs):
        """Texts of CTC ids ``[B, T]`` (a 2-D array or tensor, or a list of sequences of any lengths)."""
        if isinstance(sequences, (torch.Tensor, np.ndarray)) and sequences.ndim != 2:
            hint = " These look like logits: pass logits.argmax(-1)." if sequences.ndim == 3 else ""
            raise ValueError(f"batch_decode expects ids of shape [B, T], got {tuple(sequences.shape)}.{hint}")
        if not isinstance(sequences, (torch.Tensor, np.ndarray, list, tuple)):
            raise ValueError(f"batch_decode expects a batch of id sequences, got {type(sequences).__name__}.")
        checked = [self.check_ids(seq, where=f"sequences[{i}]") for i, seq in enumerate(sequences)]
        return super().batch_decode(checked, *args, **kwargs)
