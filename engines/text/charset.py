"""The character set of every CTC model (lip reader, ASR) and of the text guidance.

Index 0 is the CTC blank "_"; then space, apostrophe and a–z. `encode` normalises first
(engines.text.normalize: "p2" → "p two"), so any text can be encoded; `decode` skips blanks.
"""

from __future__ import annotations

from collections.abc import Iterable

from engines.text.normalize import normalize

CHARSET = "_ 'abcdefghijklmnopqrstuvwxyz"
BLANK = 0
SPACE = CHARSET.index(" ")
VOCAB_SIZE = len(CHARSET)
_INDEX = {c: i for i, c in enumerate(CHARSET)}


def encode(text: str) -> list[int]:
    """Token ids of the normalised text: "Bin F2" → ids of "bin f two"."""
    return [_INDEX[c] for c in normalize(text)]


def decode(ids: Iterable[int]) -> str:
    """Text of token ids; blanks are skipped (no CTC collapsing: see engines.text.ctc for that)."""
    out = []
    for i in ids:
        i = int(i)
        if not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"token id {i} outside the charset (0..{VOCAB_SIZE - 1})")
        if i != BLANK:
            out.append(CHARSET[i])
    return "".join(out)
