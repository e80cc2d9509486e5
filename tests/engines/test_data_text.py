"""The corpus sentences: the GRID grammar and the open-vocabulary set."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import numpy as np

from engines.data import text
from engines.eval.text import is_grid_sentence
from tests.helpers import REPO


def test_grid_words_are_the_51_of_the_grammar() -> None:
    assert len(text.GRID_WORDS) == 51
    assert len(set(text.GRID_WORDS)) == 51
    assert "w" not in text.GRID_SLOTS[3]


def test_grid_sentences_follow_the_grammar_and_cover_every_word() -> None:
    rng = np.random.default_rng(0)
    sentences = [text.grid_sentence(rng) for _ in range(2000)]
    assert all(is_grid_sentence(s) and text.is_grid(s) for s in sentences)
    used = {w for s in sentences for w in s.split()}
    assert used == set(text.GRID_WORDS)
    again = np.random.default_rng(0)
    assert [text.grid_sentence(again) for _ in range(2000)] == sentences


def test_grid_letter_a_is_spelt_for_the_synthesizers() -> None:
    assert text.speakable("bin blue at a two now", "espeak") == "bin blue at [['eI]] two now"
    assert text.speakable("bin blue at a two now", "ipa") == "bin blue at [[ˈeɪ]] two now"
    assert text.speakable("set red by f one soon", "espeak") == "set red by f one soon"
    # the article in an open sentence stays an article
    assert text.speakable("My sister bought a new lamp.", "espeak") == "My sister bought a new lamp."


def test_open_sentences_are_many_distinct_and_of_everyday_length() -> None:
    sentences = text.open_sentences()
    assert len(sentences) >= 500
    assert len(set(sentences)) == len(sentences)
    lengths = [text.word_count(s) for s in sentences]
    assert min(lengths) >= 4
    assert max(lengths) <= 12
    assert len(set(lengths)) >= 5
    # only words espeak-ng reads as written: letters, apostrophes, spaces, sentence punctuation
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ' ,.?!") for s in sentences)


def test_open_sentences_mix_questions_requests_and_statements() -> None:
    sentences = text.open_sentences()
    questions = sum(s.endswith("?") for s in sentences)
    requests = sum(s.startswith(("Please", "Could you", "Can you", "Don't")) for s in sentences)
    statements = sum(s.endswith(".") for s in sentences) - requests
    assert questions >= 0.2 * len(sentences)
    assert requests >= 0.1 * len(sentences)
    assert statements >= 0.2 * len(sentences)
    # no template dominates, and any short prefix is already varied
    first_words = collections.Counter(" ".join(s.split()[:2]) for s in sentences)
    assert first_words.most_common(1)[0][1] <= 0.1 * len(sentences)
    assert len({" ".join(s.split()[:2]) for s in sentences[:30]}) >= 20


def test_open_sentences_are_the_same_in_every_process() -> None:
    code = "from engines.data import text; print('\\n'.join(text.open_sentences()))"
    outputs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2")}
    assert outputs == {"\n".join(text.open_sentences()) + "\n"}
