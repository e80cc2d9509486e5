"""Phones of lip-read text (engines.text.phones) and the phone aligner (engines.models.aligner)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.data.text import GRID_WORDS
from engines.models.aligner import PhoneAligner, PhoneAlignerConfig
from engines.text import phones
from engines.text.normalize import normalize
from engines.text.phones import (
    N_CLASSES,
    PHONES,
    SILENCE,
    force_align,
    phone_rescorer,
    phone_sequence,
    short_phone_share,
    text_log_likelihood,
    timeline_labels,
    us1_symbol,
    word_ends,
    word_phones,
)

HAVE_US1 = bool(shutil.which("espeak-ng")) and Path("/usr/share/mbrola/us1").exists()


def cls(symbol: str) -> int:
    return PHONES.index(symbol) + 1


def test_the_lexicon_speaks_every_grid_word_in_the_phone_set() -> None:
    lexicon = json.loads(phones.LEXICON_FILE.read_text())
    grid_words = {w for word in GRID_WORDS for w in normalize(word).split()}
    assert grid_words <= set(lexicon)
    assert all(lexicon[w] and set(lexicon[w]) <= set(PHONES) for w in lexicon)
    assert word_phones("h") == ("EI", "tS")  # GRID letters are spoken as their names


def test_phone_sequence_has_optional_silences_around_words() -> None:
    classes, optional = phone_sequence("Bin H")
    assert classes == [SILENCE, cls("b"), cls("I"), cls("n"), SILENCE, cls("EI"), cls("tS"), SILENCE]
    assert optional == [True, False, False, False, True, False, False, True]
    assert phone_sequence("") == ([SILENCE], [True])


def test_an_unknown_word_without_espeak_goes_unspoken_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def no_espeak(word: str) -> tuple[str, ...]:
        raise RuntimeError("espeak-ng is not installed")

    monkeypatch.setattr(phones, "_espeak", no_espeak)
    word_phones.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="engines.text.phones"):
            classes, _ = phone_sequence("bin zorblax")
        assert classes == [SILENCE, cls("b"), cls("I"), cls("n"), SILENCE, SILENCE]
        assert "zorblax" in caplog.text
    finally:
        word_phones.cache_clear()


@pytest.mark.skipif(not HAVE_US1, reason="espeak-ng and the mbrola us1 voice needed")
def test_an_unknown_word_is_asked_of_espeak() -> None:
    word_phones.cache_clear()
    assert set(word_phones("robot")) <= set(PHONES) and len(word_phones("robot")) >= 4


def test_other_voices_symbols_map_onto_us1() -> None:
    assert us1_symbol("i:") == "i" and us1_symbol("eI") == "EI" and us1_symbol("5") == "l"
    assert us1_symbol("b") == "b" and us1_symbol("_") is None
    labels = timeline_labels([("_", 0.0, 0.05), ("b", 0.05, 0.03), ("i:", 0.08, 0.04)], 14)
    assert labels.tolist() == [0] * 5 + [cls("b")] * 3 + [cls("i")] * 4 + [0] * 2


def test_each_word_ends_where_its_phones_end_in_a_timeline_that_differs_a_little() -> None:
    # "lay blue by p" as another voice says it: a pause first, p unaspirated, a linking phone after "blue",
    # the en1 voice's i: for i; each phone 0.1 s
    said = ["_", "l", "EI", "b", "l", "u", "r", "b", "AI", "p", "i:", "_"]
    timeline = [(symbol, 0.1 * k, 0.1) for k, symbol in enumerate(said)]
    assert word_ends("Lay blue by P.", timeline) == pytest.approx([0.3, 0.6, 0.9, 1.1])
    assert word_ends("lay blue", [("_", 0.0, 0.5)]) == [0.0, 0.0]  # nothing said: nothing ended after 0


def posteriors(path: list[int], sure: float = 0.9) -> np.ndarray:
    """(N, C) log-posteriors that put `sure` on each step's class of `path`."""
    p = np.full((len(path), N_CLASSES), (1 - sure) / (N_CLASSES - 1))
    p[np.arange(len(path)), path] = sure
    return np.log(p)


def test_force_align_follows_the_posteriors_and_skips_unspoken_silences() -> None:
    b, i, n = cls("b"), cls("I"), cls("n")
    truth = [0, 0, b, b, i, i, i, n, n, n]  # no silence at the end
    classes, optional = [0, b, i, n, 0], [True, False, False, False, True]
    assert force_align(posteriors(truth), classes, optional).tolist() == truth
    # Every phone is said, in order, even where the posteriors favour another class.
    noisy = posteriors([0, 0, b, b, n, n, n, n, n, n])
    path = force_align(noisy, classes, optional).tolist()
    assert [c for k, c in enumerate(path) if k == 0 or path[k - 1] != c if c] == [b, i, n]
    assert force_align(posteriors([0, b]), classes, optional) is None  # too few steps for three phones


def test_text_log_likelihood_prefers_the_text_the_steps_say() -> None:
    b, i, n = cls("b"), cls("I"), cls("n")
    said = posteriors([0, 0, b, b, i, i, i, n, n, n])
    assert text_log_likelihood(said, "bin") > text_log_likelihood(said, "in")
    assert text_log_likelihood(said, "bin") > text_log_likelihood(said, "b")  # the letter: b i
    assert text_log_likelihood(said, "bin") == pytest.approx(10 * np.log(0.9))  # every step on its class
    assert text_log_likelihood(said[:2], "bin") == -np.inf  # too few steps to say it


def test_short_phone_share_counts_spoken_phones_of_at_most_two_steps() -> None:
    b, i, n = cls("b"), cls("I"), cls("n")
    assert short_phone_share([0, 0, b, b, b, i, i, i, n, n, n, 0]) == 0.0  # silences never count
    assert short_phone_share([0, b, i, i, i, n, 0, 0]) == pytest.approx(2 / 3)
    assert short_phone_share([0, 0, 0]) == 0.0 and short_phone_share([]) == 0.0
    assert short_phone_share([b, i, i, n, n, n], max_steps=1) == pytest.approx(1 / 3)


def test_the_aligner_gives_steps_per_frame_posteriors_and_aligns_text() -> None:
    config = PhoneAlignerConfig(feature_dim=12, hidden=16, layers=1)
    aligner = PhoneAligner(config).eval()
    features = torch.randn(2, 9, 12)
    out = aligner(features)
    assert out.shape == (2, 36, N_CLASSES)
    assert torch.allclose(out.exp().sum(dim=2), torch.ones(2, 36), atol=1e-5)
    labels = aligner.align(features[0], "bin")
    assert labels.shape == (36,)
    spoken = [c for k, c in enumerate(labels) if c and (k == 0 or labels[k - 1] != c)]
    assert spoken == [cls("b"), cls("I"), cls("n")]
    assert (aligner.align(features[0, :0], "bin") == SILENCE).all()
    assert (aligner.align(features[0], "") == SILENCE).all()
    with torch.no_grad():
        log_probs = aligner(features[:1])[0].numpy()
    np.testing.assert_allclose(aligner.posteriors(features[0]), log_probs, atol=1e-6)
    assert phone_rescorer(log_probs, 0.5)(["bin", "lay"]) == pytest.approx(
        [0.5 * text_log_likelihood(log_probs, "bin"), 0.5 * text_log_likelihood(log_probs, "lay")])
    with pytest.raises(ValueError):
        PhoneAlignerConfig(kernel_size=4)


def test_a_padded_row_reads_as_a_sequence_ending_at_its_length() -> None:
    # A stream's window ends mid-speech; training cuts rows there, and batch padding must not read as frames.
    aligner = PhoneAligner(PhoneAlignerConfig(feature_dim=12, hidden=16, layers=2)).eval()
    features = torch.randn(2, 10, 12)
    with torch.no_grad():
        padded = aligner(features, torch.tensor([6, 10]))
        cut = aligner(features[:1, :6])
        whole = aligner(features)
    torch.testing.assert_close(padded[0, :24], cut[0])
    torch.testing.assert_close(padded[1], whole[1])
    assert not torch.allclose(whole[0, :24], cut[0])  # the frames past the cut do change its last steps


def test_the_mel_prior_speaks_labels_in_a_voice_as_a_normalised_mel() -> None:
    from engines.models.mel_prior import MelPrior, MelPriorConfig

    prior = MelPrior(MelPriorConfig(channels=8, dilations=(1, 2))).eval()
    labels = torch.tensor([[0, 0, cls("b"), cls("b"), cls("I"), cls("n"), 0]])
    a, b = prior(labels, torch.zeros(1, 128)), prior(labels, torch.ones(1, 128))
    assert a.shape == (1, 80, 7) and a.abs().max() <= 1.0
    assert not torch.allclose(a, b)  # the voice follows the face
    with pytest.raises(ValueError):
        MelPriorConfig(dilations=(0,))


@pytest.mark.parametrize("lookahead", [-1, 0, 3, 5])
def test_a_mel_prior_sees_as_many_steps_of_phones_ahead_as_its_config_allows(lookahead: int) -> None:
    from engines.models.mel_prior import MelPrior, MelPriorConfig

    torch.manual_seed(0)
    prior = MelPrior(MelPriorConfig(channels=8, dilations=(1, 2), lookahead_steps=lookahead)).eval()
    past, future = prior.receptive_field()
    assert (past, future) == ((6, 6) if lookahead < 0 else (12 - lookahead, lookahead))
    labels = torch.randint(1, 40, (1, 40))
    changed = labels.clone()
    changed[0, 10] = 0  # one step's phone
    with torch.no_grad():
        diff = (prior(labels, torch.zeros(1, 128)) - prior(changed, torch.zeros(1, 128))).abs().amax(dim=1)[0]
    moved = torch.nonzero(diff > 0)[:, 0]
    assert moved.min() == 10 - future and moved.max() == 10 + past  # frames that see step 10, and no others
