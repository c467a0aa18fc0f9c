"""Written English to the words a TTS voice says: the corpus' transcripts and the voices' input.

Not the scoring normaliser (``modeling_lact_audio.asr.normalize_for_scoring``) nor the tokenizer's
``processors.normalize_text``: this one rewrites numbers, money, times and abbreviations as words, so
that a synthetic voice reads exactly the transcript stored with its audio.
"""

import re
import unicodedata

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_SUFFIX = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
# Spoken forms a TTS voice would produce for these tokens; the transcript must say the same.
_ABBREVIATIONS = {
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "st": "saint",
    "vs": "versus",
    "etc": "et cetera",
    "jr": "junior",
    "sr": "senior",
    "prof": "professor",
}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number "}

_MONEY = re.compile(r"\$(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d\d))?")
_GROUPED = re.compile(r"\b\d{1,3}(?:,\d{3})+\b")
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_TIME = re.compile(r"\b(\d{1,2}):(\d\d)\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_NUMBER = re.compile(r"\d+")
_ABBREV = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)


def number_to_words(n: int) -> str:
    """Spell out a non-negative integer.

    Takes: ``n`` (0 <= n < 10**12). Returns: the cardinal in words, e.g. 342 -> "three hundred forty two".
    """
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            words = number_to_words(head) + " " + name
            return words if rest == 0 else words + " " + number_to_words(rest)
    raise ValueError(f"cannot spell {n}")


def ordinal_to_words(n: int) -> str:
    """Spell out an ordinal. Takes: ``n`` >= 0. Returns: e.g. 21 -> "twenty first"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_SUFFIX:
        words[-1] = _ORDINAL_SUFFIX[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_to_words(n: int) -> str:
    """Spell a year as spoken. Takes: 1000 <= n <= 2099. Returns: 1984 -> "nineteen eighty four"."""
    century, rest = divmod(n, 100)
    if 2000 <= n < 2010 or rest == 0 and century % 10 == 0:
        return number_to_words(n)
    if rest == 0:
        return number_to_words(century) + " hundred"
    if rest < 10:
        return number_to_words(century) + " oh " + number_to_words(rest)
    return number_to_words(century) + " " + number_to_words(rest)


def _spell_integer(digits: str) -> str:
    n = int(digits)
    # A leading zero (phone numbers, codes) is read digit by digit; so are very long numbers.
    if digits.startswith("0") and len(digits) > 1 or len(digits) > 12:
        return " ".join(_ONES[int(d)] for d in digits)
    if len(digits) == 4 and 1100 <= n <= 2099:
        return year_to_words(n)
    return number_to_words(n)


def _money(match: re.Match) -> str:
    dollars, cents = match.group(1).replace(",", ""), match.group(2)
    words = number_to_words(int(dollars)) + (" dollar" if dollars == "1" else " dollars")
    if cents and int(cents):
        words += " and " + number_to_words(int(cents)) + (" cent" if cents == "01" else " cents")
    return " " + words + " "


def _time(match: re.Match) -> str:
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute == 0:
        return f" {number_to_words(hour)} o'clock "
    if minute < 10:
        return f" {number_to_words(hour)} oh {number_to_words(minute)} "
    return f" {number_to_words(hour)} {number_to_words(minute)} "


def spell_out_for_tts(text: str) -> str:
    """Spell a sentence out as a voice reads it, in the character-CTC alphabet (a-z, ``'``, space).

    Takes: raw English text. Returns: lower-case words of a-z and apostrophes separated by single
    spaces. Numbers are spelled out (money, times, ordinals, decimals, years 1100-2099 as spoken;
    numbers with a leading zero digit by digit), common abbreviations and symbols are expanded,
    accents are stripped, hyphens and other punctuation become word breaks, and apostrophes survive
    only inside a word.
    """
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.replace("`", "'")
    text = _ABBREV.sub(lambda m: " " + _ABBREVIATIONS[m.group(1).lower()] + " ", text)
    text = _MONEY.sub(_money, text)
    text = _TIME.sub(_time, text)
    text = _ORDINAL.sub(lambda m: " " + ordinal_to_words(int(m.group(1))) + " ", text)
    text = _DECIMAL.sub(
        lambda m: f" {_spell_integer(m.group(1))} point {' '.join(_ONES[int(d)] for d in m.group(2))} ", text
    )
    # Digit groups mark a cardinal ("1,200" is never a year).
    text = _GROUPED.sub(lambda m: " " + number_to_words(int(m.group(0).replace(",", ""))) + " ", text)
    text = _NUMBER.sub(lambda m: " " + _spell_integer(m.group(0)) + " ", text)
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = text.lower()
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())
