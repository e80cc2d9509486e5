"""Transcript normalisation for scoring, and the GRID sentence code.

Both the reference and the recogniser's hypothesis go through `normalize` before WER/CER, so that
"Bin blue at F2 now." and "bin blue at f two now" are the same words:
NFKC, lower case; "&" → "and", "%" → "percent"; a letters+digits token is split ("p2" → "p 2",
"2nd" stays an ordinal); numbers become words ("25" → "twenty five", "3.5" → "three point five",
"1st" → "first", "1,000" → "one thousand"); other punctuation becomes a space, except apostrophes
inside words ("don't"); whitespace collapses.

`by_sound` goes one step further, for the whisper column that counts a word right when it sounds right:
each word becomes espeak-ng's en-us pronunciation of it said on its own, stress marks dropped. whisper
writes GRID's letter names and "bin" as the words that sound the same ("you", "why", "see", "been"); by
sound those are right, while "read" for "red" stays wrong (said alone, "read" is /ri:d/).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from functools import cache

from engines.grid import GRID_CODE, GRID_SLOTS, grid_sentence

__all__ = ["GRID_CODE", "GRID_SLOTS", "by_sound", "grid_jsgf", "grid_sentence", "is_grid_sentence",
           "normalize", "number_words", "pronunciation"]

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                 "nine": "ninth", "twelve": "twelfth"}

_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:st|nd|rd|th)?")
_LETTERS_DIGITS = re.compile(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])(?!(?:st|nd|rd|th)\b)")


def number_words(n: int) -> str:
    """Cardinal English words for a non-negative integer: 2024 → "two thousand twenty four"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    for value, name in SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")  # SCALES ends at 100 and n >= 100 here


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in ORDINAL_WORDS:
        last = ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _spell_number(match: re.Match[str]) -> str:
    token = match.group(0)
    suffix = token[-2:] if token[-2:] in ("st", "nd", "rd", "th") else ""
    number = token[: len(token) - len(suffix)].replace(",", "")
    whole, _, fraction = number.partition(".")
    words = number_words(int(whole))
    if suffix:
        return " " + _ordinal(words) + " "
    if fraction:
        words += " point " + " ".join(ONES[int(d)] for d in fraction)
    return " " + words + " "


def normalize(text: str) -> str:
    """Scoring form of a transcript (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("’", "'").replace("&", " and ").replace("%", " percent ")
    text = _LETTERS_DIGITS.sub(" ", text)
    text = _NUMBER.sub(_spell_number, text)
    text = re.sub(r"[^a-z0-9']+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes inside words
    return " ".join(text.split())


@cache
def pronunciation(word: str) -> str:
    """espeak-ng's en-us phonemes of one word said on its own, without stress marks: "been" → "bIn"."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("scoring by sound needs espeak-ng: make setup installs it")
    # "--": a word is never read as an option; -q: phonemes only, no audio.
    said = subprocess.run(["espeak-ng", "-v", "en-us", "-q", "-x", "--", word], capture_output=True,
                          text=True, check=True).stdout
    return "".join(said.split()).replace("'", "").replace(",", "") or word


def by_sound(text: str) -> str:
    """The normalised words of a transcript, each replaced by its pronunciation (see the module docstring)."""
    return " ".join(pronunciation(w) for w in normalize(text).split())


def is_grid_sentence(text: str) -> bool:
    """Whether a transcript is a sentence of the GRID grammar (after normalisation)."""
    words = normalize(text).split()
    if len(words) != len(GRID_SLOTS):
        return False
    return all(w in slot.values() for w, slot in zip(words, GRID_SLOTS, strict=True))


def grid_jsgf() -> str:
    """The GRID grammar as JSGF, for pocketsphinx."""
    names = ("command", "colour", "preposition", "letter", "digit", "adverb")
    rules = [f"<{name}> = {' | '.join(slot.values())};" for name, slot in zip(names, GRID_SLOTS, strict=True)]
    public = "public <sentence> = " + " ".join(f"<{name}>" for name in names) + ";"
    return "\n".join(["#JSGF V1.0;", "grammar grid;", public, *rules, ""])
