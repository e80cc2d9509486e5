from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engines.text.charset import BLANK, CHARSET, SPACE, VOCAB_SIZE, decode, encode
from engines.text.ctc import (
    GRID_GRAMMAR,
    CtcForward,
    WordGrammar,
    beam_search,
    best_sentence,
    greedy_decode,
    sequence_log_prob,
    text_confidence,
)
from engines.text.normalize import cardinal, normalize, ordinal


@pytest.mark.parametrize(("text", "expected"), [
    ("Bin blue at F2 now.", "bin blue at f two now"),
    ("place green in p2, please!", "place green in p two please"),
    ("Set white with Z0 soon", "set white with z zero soon"),
    ("It's 25 past 3", "it's twenty five past three"),
    ("1,250 at 3.5%", "one thousand two hundred fifty at three point five percent"),
    ("the 21st and the 2nd", "the twenty first and the second"),
    ("Café crème at 2pm", "cafe creme at two pm"),
    ("“Hello” — world…", "hello world"),
    ("rock & roll", "rock and roll"),
    ("'quoted' don’t", "quoted don't"),
    ("", ""),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(40) == "forty"
    assert cardinal(117) == "one hundred seventeen"
    assert cardinal(2024) == "two thousand twenty four"
    assert cardinal(3_000_005) == "three million five"
    assert ordinal(40) == "fortieth"
    assert ordinal(12) == "twelfth"
    assert ordinal(103) == "one hundred third"
    with pytest.raises(ValueError):
        cardinal(-1)


def test_charset_encode_decode() -> None:
    assert CHARSET[BLANK] == "_" and CHARSET[SPACE] == " " and VOCAB_SIZE == 29
    ids = encode("Bin F2!")
    assert decode(ids) == "bin f two"
    assert BLANK not in ids
    assert decode([BLANK, *ids, BLANK]) == "bin f two"
    with pytest.raises(ValueError):
        decode([VOCAB_SIZE])


def frames_for(text: str, confuse: dict[int, dict[str, float]] | None = None) -> np.ndarray:
    """Log-probabilities that spell `text`: two frames per character (a blank frame between
    repeated characters), a blank frame at both ends; each frame gives 0.8 to its token and shares the
    rest. `confuse[i]` overrides the distribution of character i's frames."""
    tokens = [BLANK]
    for i, ch in enumerate(text):
        if i and ch == text[i - 1]:
            tokens.append(BLANK)
        tokens += [(i, CHARSET.index(ch))] * 2
    tokens.append(BLANK)
    rows = []
    for token in tokens:
        p = np.full(VOCAB_SIZE, 0.2 / (VOCAB_SIZE - 1))
        if token == BLANK:
            p[BLANK] = 0.8
        else:
            i, ch_id = token
            p[ch_id] = 0.8
            if confuse and i in confuse:
                p[:] = 0.01
                for ch, prob in confuse[i].items():
                    p[CHARSET.index(ch)] = prob
        rows.append(np.log(p / p.sum()))
    return np.array(rows)


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    a, b = CHARSET.index("a"), CHARSET.index("b")
    path = [a, a, BLANK, a, b, b, BLANK, BLANK, b]
    lp = np.log(np.full((len(path), VOCAB_SIZE), 0.01))
    lp[np.arange(len(path)), path] = 0.0
    assert decode(greedy_decode(lp)) == "aabb"
    assert decode(greedy_decode(torch.from_numpy(lp))) == "aabb"
    assert decode(greedy_decode(frames_for("bin blue"))) == "bin blue"


def test_sequence_log_prob_sums_every_path_that_collapses_to_the_text() -> None:
    rng = np.random.default_rng(0)
    lp = np.log(rng.dirichlet(np.ones(VOCAB_SIZE), size=3))
    a, b = CHARSET.index("a"), CHARSET.index("b")
    for ids in ([a], [a, a], [a, b], [], [a, b, a]):
        total = -math.inf
        for path in itertools.product(range(VOCAB_SIZE), repeat=len(lp)):
            collapsed = [k for i, k in enumerate(path) if k != BLANK and (i == 0 or path[i - 1] != k)]
            if collapsed == ids:
                total = np.logaddexp(total, sum(lp[i, k] for i, k in enumerate(path)))
        assert sequence_log_prob(lp, ids) == pytest.approx(total, abs=1e-9)
    assert sequence_log_prob(lp[:2], [a, a]) == -math.inf  # a repeat needs a blank between: 3 frames
    assert sequence_log_prob(lp[:0], [a]) == -math.inf


def test_ctc_forward_read_hop_by_hop_gives_what_the_whole_utterance_gives() -> None:
    """A live utterance: each hop adds frames and perhaps characters (repeats among them); the carried
    forward variables must give what a pass over everything so far gives, and start over on another text."""
    rng = np.random.default_rng(1)
    lp = np.log(rng.dirichlet(np.full(VOCAB_SIZE, 0.3), size=80))
    text = [CHARSET.index(c) for c in "bin blue at ff"]
    forward = CtcForward()
    for frames, chars in ((0, 0), (4, 0), (4, 2), (10, 2), (17, 5), (30, 5), (31, 9), (52, 12), (80, 14)):
        ids = text[:chars]
        whole = sequence_log_prob(lp[:frames], ids)
        assert forward.log_prob(lp[:frames], ids) == pytest.approx(whole, abs=1e-9)
        assert forward.log_prob(lp[:frames], ids) == pytest.approx(whole, abs=1e-9)  # asked again: the same
    other = [*text[:3], CHARSET.index("x")]
    assert forward.log_prob(lp, other) == pytest.approx(sequence_log_prob(lp, other), abs=1e-9)
    assert forward.log_prob(lp[:20], other) == pytest.approx(sequence_log_prob(lp[:20], other), abs=1e-9)
    assert text_confidence(lp, "bin", CtcForward()) == pytest.approx(text_confidence(lp, "bin"))


def test_text_confidence_is_high_for_what_the_frames_spell_and_low_otherwise() -> None:
    lp = frames_for("bin blue")
    assert text_confidence(lp, "bin blue") > 0.5  # two frames of 0.8 a character, and their other paths
    assert text_confidence(torch.from_numpy(lp), "bin blue") == pytest.approx(text_confidence(lp, "bin blue"))
    assert text_confidence(lp, "lay green") < 0.01
    flat = np.log(np.full((40, VOCAB_SIZE), 1 / VOCAB_SIZE))  # frames that favour nothing
    assert text_confidence(flat, "bin blue") < 0.1
    assert text_confidence(lp, "") == 0.0  # nothing was read


def test_beam_sums_paths_where_greedy_does_not() -> None:
    # Two frames, p(blank) = 0.6 and p(a) = 0.4 each: the best path is "" (0.36), but "a" has three
    # paths (aa, a_, _a) worth 0.16 + 0.24 + 0.24 = 0.64.
    p = np.full((2, VOCAB_SIZE), 1e-12)
    p[:, BLANK], p[:, CHARSET.index("a")] = 0.6, 0.4
    lp = np.log(p)
    assert greedy_decode(lp) == []
    best = beam_search(lp, beam_width=4)[0]
    assert best.text == "a"
    assert best.log_prob == pytest.approx(math.log(0.64), abs=1e-6)


def test_beam_score_is_the_ctc_probability() -> None:
    # Three live tokens over 8 frames: few enough prefixes for a beam that never prunes, so each
    # hypothesis' score must be the exact sum over its CTC paths.
    rng = np.random.default_rng(0)
    logits = np.full((8, VOCAB_SIZE), -80.0)
    live = [BLANK, CHARSET.index("a"), CHARSET.index("b")]
    logits[:, live] = rng.normal(size=(8, 3)) * 2
    lp = torch.from_numpy(logits).log_softmax(-1)
    for hyp in beam_search(lp, beam_width=1000, prune_log_prob=-50.0)[:10]:
        loss = torch.nn.functional.ctc_loss(lp[:, None], torch.tensor([hyp.ids]), torch.tensor([8]),
                                            torch.tensor([len(hyp.ids)]), reduction="sum")
        assert hyp.log_prob == pytest.approx(-loss.item(), abs=1e-5)


def test_beam_keeps_repeated_letters_apart() -> None:
    assert beam_search(frames_for("soon"), beam_width=8)[0].text == "soon"


def test_grid_grammar_corrects_a_misread_letter() -> None:
    text = "bin blue at f two now"
    misread = frames_for(text, confuse={text.rindex("n"): {"m": 0.5, "n": 0.3}})
    assert decode(greedy_decode(misread)) == "bin blue at f two mow"
    assert beam_search(misread, beam_width=8)[0].text == "bin blue at f two mow"
    best = beam_search(misread, beam_width=8, grammar=GRID_GRAMMAR)[0]
    assert best.text == text and best.complete


def test_grammar_ranks_complete_sentences_first_and_reports_incomplete_ones() -> None:
    short = frames_for("bin blue")
    hyps = beam_search(short, beam_width=8, grammar=GRID_GRAMMAR)
    assert not hyps[0].complete
    assert hyps[0].text == "bin blue"
    two_slots = WordGrammar([("bin", "lay"), ("blue", "red")])
    best = beam_search(short, beam_width=8, grammar=two_slots)[0]
    assert best.complete and best.text == "bin blue"


def test_best_sentence_completes_a_command_the_frames_barely_say() -> None:
    text = "bin blue at f two now"
    assert best_sentence(frames_for(text), 8, GRID_GRAMMAR) == text  # a clear reading stays as it is
    # Frames that say "bin blue" and then only spaces, long enough to spell a whole sentence: the plain beam
    # stops at the prefix, the completion gives a whole sentence that starts the same way.
    faint = np.concatenate([frames_for("bin blue"), frames_for(" " * 40)])
    assert not beam_search(faint, 8, GRID_GRAMMAR)[0].complete
    sentence = best_sentence(faint, 8, GRID_GRAMMAR)
    assert sentence in GRID_GRAMMAR and sentence.startswith("bin blue ")
    # A sentence still being said is not completed: what the frames say of it.
    assert best_sentence(faint, 8, GRID_GRAMMAR, whole=False) == "bin blue "  # the space it heard too
    assert best_sentence(frames_for(text), 8, GRID_GRAMMAR, whole=False) == text
    # Too few frames for any whole sentence: the best prefix, as before.
    assert best_sentence(frames_for("bin"), 8, GRID_GRAMMAR) == "bin"


def test_a_grammar_completes_a_word_in_progress_only_where_one_word_of_its_slot_begins_so() -> None:
    assert GRID_GRAMMAR.complete_word("lay whi") == "lay white"
    assert GRID_GRAMMAR.complete_word("place green in j nin") == "place green in j nine"
    assert GRID_GRAMMAR.complete_word("p") == "place"  # the first slot's only word with a p
    assert GRID_GRAMMAR.complete_word("bin red at s s") == "bin red at s s"  # six or seven
    assert GRID_GRAMMAR.complete_word("bin red at s") == "bin red at s"  # a whole letter
    assert GRID_GRAMMAR.complete_word("place green in ") == "place green in "  # between words
    assert GRID_GRAMMAR.complete_word("") == ""
    assert GRID_GRAMMAR.complete_word("bin blue at f two now again") == "bin blue at f two now again"


def test_best_sentence_lets_a_second_view_re_rank_its_whole_sentences() -> None:
    text = "bin blue at f two now"
    frames = frames_for(text)
    whole = [h.text for h in beam_search(frames, 8, GRID_GRAMMAR) if h.complete]
    assert whole[0] == text and len(whole) > 1
    runner_up = whole[1]
    calls = []

    def favour(texts: list[str]) -> list[float]:
        calls.append(texts)
        return [50.0 if t == runner_up else 0.0 for t in texts]

    assert best_sentence(frames, 8, GRID_GRAMMAR, favour) == runner_up
    assert calls == [whole]  # only whole sentences are scored
    assert best_sentence(frames, 8, GRID_GRAMMAR, lambda texts: [0.0] * len(texts)) == text
    assert best_sentence(frames, 8, GRID_GRAMMAR, lambda texts: [-np.inf] * len(texts)) == text
    assert best_sentence(frames_for("bin"), 8, GRID_GRAMMAR, favour) == "bin"  # no whole sentence to rank


def test_word_grammar() -> None:
    assert "set white with z zero soon" in GRID_GRAMMAR
    assert "set white with w zero soon" not in GRID_GRAMMAR  # no w in GRID's letter slot
    assert "set white with z zero" not in GRID_GRAMMAR
    with pytest.raises(ValueError):
        WordGrammar([("ok",), ("two words",)])
    with pytest.raises(ValueError):
        WordGrammar([])


def test_decoders_check_shapes() -> None:
    with pytest.raises(ValueError):
        greedy_decode(np.zeros((4, VOCAB_SIZE - 1)))
    with pytest.raises(ValueError):
        beam_search(np.zeros((4, VOCAB_SIZE)), beam_width=0)
