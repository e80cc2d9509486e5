"""Spoken form of a text for the models: what the lip reader, the ASR and the text guidance see.

`normalize("Bin blue at F2 now.")` → "bin blue at f two now". Steps: NFKC, accents dropped ("café" →
"cafe"), lower case; "&" → "and", "%" → "percent"; letters glued to digits are split ("p2" → "p 2",
while "2nd" stays an ordinal); numbers become words ("25" → "twenty five", "3.5" → "three point five",
"1st" → "first", "1,000" → "one thousand"); every other character becomes a space, except apostrophes
inside words ("don't"); whitespace collapses. The result holds only a–z, apostrophe and single spaces,
so every character is in engines.text.charset.CHARSET.

The judges (engines.eval) keep their own normaliser on purpose: a scorer must not share code with
the system it scores.
"""

from __future__ import annotations

import re
import unicodedata

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_IRREGULAR_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                       "nine": "ninth", "twelve": "twelfth"}

# A number: digits with optional thousands commas, then a decimal part or an ordinal suffix.
_NUMBER = re.compile(r"(\d+(?:,\d{3})*)(?:(\.\d+)|(st|nd|rd|th))?")
# Boundaries between letters and digits, except before an ordinal suffix ("2nd").
_LETTER_DIGIT = re.compile(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])(?!(?:st|nd|rd|th)\b)")


def cardinal(n: int) -> str:
    """English words of a non-negative integer: 2024 → "two thousand twenty four"."""
    if n < 0:
        raise ValueError(f"negative number {n}")
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, units = divmod(n, 10)
        return _TENS[tens] + (f" {_UNITS[units]}" if units else "")
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{cardinal(head)} {name}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable: _SCALES ends at 100")


def ordinal(n: int) -> str:
    """English ordinal words: 21 → "twenty first", 40 → "fortieth"."""
    *head, last = cardinal(n).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _number_words(match: re.Match[str]) -> str:
    whole, fraction, suffix = match.group(1), match.group(2), match.group(3)
    n = int(whole.replace(",", ""))
    if suffix:
        return f" {ordinal(n)} "
    words = cardinal(n)
    if fraction:
        words += " point " + " ".join(_UNITS[int(d)] for d in fraction[1:])
    return f" {words} "


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize(text: str) -> str:
    """The spoken, charset-only form of `text` (see the module docstring)."""
    text = _strip_accents(unicodedata.normalize("NFKC", text)).lower()
    text = text.replace("’", "'").replace("&", " and ").replace("%", " percent ")
    text = _LETTER_DIGIT.sub(" ", text)
    text = _NUMBER.sub(_number_words, text)
    text = re.sub(r"[^a-z']+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes go; apostrophes inside words stay
    return " ".join(text.split())
