"""Phones of a text, and their timing against per-step phone posteriors.

Lip-read text is spoken by way of phones: each word as espeak-ng's mbrola-us1 phones of the word alone
(`lexicon.json` holds them for every word of our corpora; other words ask espeak-ng when it is installed).
`PHONES` is that voice's SAMPA set; class 0 of a phone-class sequence is silence, class k > 0 is
PHONES[k − 1]. `us1_symbol` maps the other corpus voices' symbols onto it, so a corpus clip's true phone
timeline (`timeline_labels`) speaks the same set.

`force_align` times a text's phones against (steps, classes) log-posteriors (a phone aligner's over the
lips): the monotonic path that visits every phone of `phone_sequence`, each for ≥ 1 step, with an optional
silence before, between and after the words (Viterbi); `text_log_likelihood` is that path's log-posterior,
which ranks candidate texts of the same steps.

Rebuild the lexicon: `python -m engines.text.phones CORPUS [CORPUS ...]` (reads each manifest.jsonl).
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from engines.text.normalize import normalize

log = logging.getLogger(__name__)

LEXICON_FILE = Path(__file__).with_name("lexicon.json")
VOICE = "us1"
PHONES = ("4", "@", "@U", "A", "AI", "D", "E", "EI", "I", "N", "O", "OI", "S", "T", "U", "V", "Z", "aU",
          "b", "d", "dZ", "f", "g", "h", "i", "j", "k", "k_h", "l", "m", "n", "p", "p_h", "r", "r=", "s", "t",
          "tS", "t_h", "u", "v", "w", "z", "{")
SILENCE = 0
N_CLASSES = len(PHONES) + 1
_CLASS = {p: i + 1 for i, p in enumerate(PHONES)}
# The British en1 voice's symbols (and syllabic l) as their nearest us1 ones.
_TO_US1 = {"i:": "i", "u:": "u", "aI": "AI", "eI": "EI", "e": "E", "Q": "A", "5": "l", "O:": "O", "A:": "A",
           "I@": "I", "e@": "E", "3:": "r=", "l=": "l"}


def us1_symbol(symbol: str) -> str | None:
    """The PHONES symbol of a corpus voice's phone, None for a pause or a symbol with no counterpart."""
    symbol = _TO_US1.get(symbol, symbol)
    return symbol if symbol in _CLASS else None


@lru_cache(maxsize=1)
def _shipped() -> dict[str, list[str]]:
    return json.loads(LEXICON_FILE.read_text())


@lru_cache(maxsize=4096)
def word_phones(word: str) -> tuple[str, ...]:
    """The phones of one normalised word; () when neither the lexicon nor espeak-ng knows it."""
    known = _shipped().get(word)
    if known is not None:
        return tuple(known)
    try:
        return _espeak(word)
    except RuntimeError as exc:  # no espeak-ng or no us1 voice: the word goes unspoken, loudly
        log.warning("no phones for %r: %s", word, exc)
        return ()


def _espeak(word: str) -> tuple[str, ...]:
    from engines.data.phonemes import espeak_phones

    return tuple(s for s in (us1_symbol(p.symbol) for p in espeak_phones(word, VOICE)) if s is not None)


def phone_sequence(text: str) -> tuple[list[int], list[bool]]:
    """Phone classes of `text` with a silence (class 0) before, between and after its words, and which of
    them are optional (the silences)."""
    classes, optional = [SILENCE], [True]
    for word in normalize(text).split():
        phones = word_phones(word)
        classes += [_CLASS[p] for p in phones]
        optional += [False] * len(phones)
        classes.append(SILENCE)
        optional.append(True)
    return classes, optional


def force_align(log_probs: Any, classes: Sequence[int], optional: Sequence[bool]) -> np.ndarray | None:
    """The class of every step (N,) on the most probable monotonic path through `classes` under (N, C)
    log-posteriors: each state held ≥ 1 step, optional states skippable; None when the steps are too few."""
    lp = np.asarray(log_probs, np.float64)
    n, s_len = lp.shape[0], len(classes)
    if s_len == 0 or n == 0:
        return None
    neg = -np.inf
    emit = lp[:, list(classes)]
    skippable = np.zeros(s_len, bool)
    skippable[2:] = np.asarray(optional, bool)[1:-1]  # s−2 → s passes over an optional s−1
    score = np.full(s_len, neg)
    score[0] = emit[0, 0]
    if s_len > 1 and optional[0]:
        score[1] = emit[0, 1]
    # each step's move into each state: 0 stay, 1 from the state before, 2 from two before (over an
    # optional one); ties go to the first, as argmax gives them
    back = np.zeros((n, s_len), np.int8)
    states = np.arange(s_len)
    moves = np.full((3, s_len), neg)
    for t in range(1, n):
        moves[0] = score
        moves[1, 1:] = score[:-1]
        np.copyto(moves[2, 2:], score[:-2], where=skippable[2:])
        choice = moves.argmax(axis=0)
        score = moves[choice, states] + emit[t]
        back[t] = choice
    ends = [s_len - 1] + ([s_len - 2] if s_len > 1 and optional[-1] else [])
    end = max(ends, key=lambda s: score[s])
    if not np.isfinite(score[end]):
        return None
    path = np.empty(n, np.int64)
    for t in range(n - 1, -1, -1):
        path[t] = classes[end]
        end -= int(back[t, end])
    return path


def align_text(log_probs: Any, text: str) -> np.ndarray:
    """Per-step phone classes (N,) of `text` spoken over (N, C) log-posteriors (force_align): all silence
    when the text has no phones or the steps are too few to say them."""
    lp = np.asarray(log_probs)
    classes, optional = phone_sequence(text)
    path = force_align(lp, classes, optional) if len(classes) > 1 and len(lp) else None
    return path if path is not None else np.full(len(lp), SILENCE, np.int64)


def short_phone_share(labels: Any, max_steps: int = 2) -> float:
    """The share of a timing's spoken phones (runs of one non-silence class in per-step labels) that last at
    most `max_steps` steps. Speech has few: in the corpora's true timelines at most 0.18 of a clip's phones
    last 25 ms or less. A timing with many says the steps do not say the text (the aligner crammed it in)."""
    labels = np.asarray(labels)
    if not len(labels):
        return 0.0
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1]
    lengths = np.diff(np.r_[starts, len(labels)])
    spoken = labels[starts] != SILENCE
    return float((lengths[spoken] <= max_steps).mean()) if spoken.any() else 0.0


def phone_rescorer(log_probs: Any, weight: float) -> Callable[[list[str]], list[float]]:
    """`weight` × text_log_likelihood of each text under the same log-posteriors: the second view with which
    engines.text.ctc.best_sentence re-ranks a beam's whole sentences."""
    return lambda texts: [weight * text_log_likelihood(log_probs, text) for text in texts]


def text_log_likelihood(log_probs: Any, text: str) -> float:
    """Log-posterior of `text`'s phones on their best path (force_align) through (N, C) log-posteriors:
    how well the steps say the text; −inf when they are too few to say it."""
    lp = np.asarray(log_probs, np.float64)
    path = force_align(lp, *phone_sequence(text))
    return -np.inf if path is None else float(lp[np.arange(len(path)), path].sum())


def timeline_labels(phones: Iterable[Sequence[Any]], n_steps: int, steps_per_s: float = 100.0) -> np.ndarray:
    """Per-step classes (n_steps,) of a true phone timeline [(symbol, start_s, dur_s), ...] (a corpus clip's
    `phones`); pauses and unmapped symbols are silence."""
    labels = np.full(n_steps, SILENCE, np.int64)
    for symbol, start, dur in phones:
        mapped = us1_symbol(symbol)
        if mapped is not None:
            labels[round(start * steps_per_s):round((start + dur) * steps_per_s)] = _CLASS[mapped]
    return labels


def word_ends(text: str, phones: Iterable[Sequence[Any]]) -> list[float]:
    """When each word of normalised `text` ends (s) in a true phone timeline [(symbol, start_s, dur_s), ...]:
    the words' phones aligned to the timeline's (a voice links, reduces and renames some, so they differ a
    little; a run of differing phones is matched in proportion); a word none of whose phones is found ends
    with the word before it."""
    spoken = [(us1_symbol(symbol), start + dur) for symbol, start, dur in phones if us1_symbol(symbol)]
    words = normalize(text).split()
    lexicon = [(k, q) for k, w in enumerate(words) for q in word_phones(w)]
    matcher = difflib.SequenceMatcher(None, [q for _, q in lexicon], [q for q, _ in spoken], autojunk=False)
    last = [-1] * len(words)  # each word's last phone in the timeline
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            for i in range(i1, i2):
                last[lexicon[i][0]] = j1 + (i - i1) * (j2 - j1) // (i2 - i1)
    return list(itertools.accumulate((spoken[j][1] if j >= 0 else 0.0 for j in last), max, initial=0.0))[1:]


def build_lexicon(corpora: Sequence[str | Path]) -> dict[str, list[str]]:
    """Every normalised word of the corpora's manifests, as espeak-ng's us1 phones."""
    words: set[str] = set()
    for corpus in corpora:
        for line in (Path(corpus) / "manifest.jsonl").read_text().splitlines():
            words.update(normalize(json.loads(line)["text"]).split())
    return {w: list(_espeak(w)) for w in sorted(words)}


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m engines.text.phones CORPUS [CORPUS ...]")
    lexicon = build_lexicon(sys.argv[1:])
    entries = (f"{json.dumps(word)}: {json.dumps(said)}" for word, said in lexicon.items())
    LEXICON_FILE.write_text("{\n" + ",\n".join(entries) + "\n}\n")
    print(f"{len(lexicon)} words → {LEXICON_FILE}")
