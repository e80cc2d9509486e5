from __future__ import annotations

import pytest

from engines.eval.judges.asr import errors, sound_errors
from engines.eval.text import by_sound, grid_jsgf, grid_sentence, is_grid_sentence, normalize, number_words


@pytest.mark.parametrize(("text", "expected"), [
    ("Bin blue at F2 now.", "bin blue at f two now"),
    ("Been read by K7 now.", "been read by k seven now"),
    ("bin blue at F. 2 now", "bin blue at f two now"),
    ("place green in p2, please!", "place green in p two please"),
    ("Set white with Z0 soon", "set white with z zero soon"),
    ("It's 25 past 3", "it's twenty five past three"),
    ("1,250 at 3.5%", "one thousand two hundred fifty at three point five percent"),
    ("the 21st and the 2nd", "the twenty first and the second"),
    ("“Hello” — world…", "hello world"),
    ("rock & roll", "rock and roll"),
    ("'quoted' don't", "quoted don't"),
    ("", ""),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(40) == "forty"
    assert number_words(117) == "one hundred seventeen"
    assert number_words(2024) == "two thousand twenty four"
    assert number_words(3_000_015) == "three million fifteen"


def test_grid_file_names_decode_to_sentences() -> None:
    assert grid_sentence("bbaf2n") == "bin blue at f two now"
    assert grid_sentence("brbk7n") == "bin red by k seven now"
    assert grid_sentence("lbax4n") == "lay blue at x four now"
    assert grid_sentence("SWWZZA") == "set white with z zero again"
    assert grid_sentence("bbaw2n") is None  # w is not a GRID letter
    assert grid_sentence("bbaf2") is None
    assert grid_sentence("hello1") is None


def test_grid_grammar_membership() -> None:
    assert is_grid_sentence("Place red in A9 please.")
    assert not is_grid_sentence("place red in a nine")
    assert not is_grid_sentence("the quick brown fox jumps over")
    grammar = grid_jsgf()
    assert "public <sentence> = <command> <colour> <preposition> <letter> <digit> <adverb>;" in grammar
    assert "| w |" not in grammar and "<adverb> = again | now | please | soon;" in grammar


def test_word_and_character_errors_use_the_normalised_text() -> None:
    assert errors("bin blue at f two now", "Bin blue at F2 now.") == (0, 6, 0, 21)
    w_err, w_n, c_err, c_n = errors("bin blue at f two now", "")
    assert (w_err, w_n, c_err, c_n) == (6, 6, 21, 21)
    assert errors("bin blue at f two now", "been blue at f two now now")[:2] == (2, 6)
    assert errors("", "anything") == (0, 0, 0, 0)


def test_words_that_sound_alike_are_right_by_sound_and_others_stay_wrong() -> None:
    # whisper's usual spellings of GRID words: "been" for "bin", "you" for "u", "to" for "two", "see" for "c"
    assert by_sound("Been blue at you to now.") == by_sound("bin blue at u two now")
    assert sound_errors("bin white with c nine now", "Been white with see nine now.") == 0
    assert errors("bin white with c nine now", "Been white with see nine now.")[0] == 2
    # "read" said on its own is /ri:d/, not "red"; "white" is not "y"
    assert sound_errors("bin red at y two now", "been read at white to now") == 2
    assert sound_errors("bin blue at f two now", "") == 6 and sound_errors("", "anything") == 0
