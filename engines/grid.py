"""The GRID sentence grammar (Cooke et al. 2006) and its file-name code, shared by the corpus maker,
the loaders and the judges: command colour preposition letter digit adverb, six slots; a GRID file name
carries one character per slot ("bbaf2n" → "bin blue at f two now")."""

from __future__ import annotations

import re

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

GRID_SLOTS: tuple[dict[str, str], ...] = (
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
    {c: c for c in "abcdefghijklmnopqrstuvxyz"},  # every letter but w
    {"z": "zero", **{str(d): _DIGITS[d] for d in range(1, 10)}},
    {"a": "again", "n": "now", "p": "please", "s": "soon"},
)
GRID_CODE = re.compile(r"^[blps][bgrw][abiw][a-vx-z][z1-9][anps]$")


def grid_sentence(code: str) -> str | None:
    """The sentence a GRID file name encodes ("bbaf2n" → "bin blue at f two now"), None if it is not one."""
    code = code.lower()
    if not GRID_CODE.match(code):
        return None
    return " ".join(slot[c] for slot, c in zip(GRID_SLOTS, code, strict=True))
