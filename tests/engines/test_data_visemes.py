"""Viseme tracks from phones: targets per phone class, coarticulation, sampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from engines.data.phonemes import PHONE_CLASSES, Phone
from engines.data.visemes import (
    JAW,
    LOOKAHEAD_S,
    PROTRUDE,
    RAISE,
    ROUND,
    SPREAD,
    VISEME_PARAMS,
    curve,
    targets,
    track,
)

FPS = 25.0


def phones(spec: str) -> list[Phone]:
    """'_:200 b:80 A:150' → phones laid end to end from 0 (durations in ms)."""
    out, t = [], 0.0
    for item in spec.split():
        symbol, ms = item.rsplit(":", 1)
        out.append(Phone(symbol, t, float(ms) / 1000))
        t += float(ms) / 1000
    return out


def frames_of(seq: list[Phone], index: int) -> tuple[int, int]:
    """First and last frame whose timestamp lies inside phone `index`."""
    p = seq[index]
    return int(np.ceil(p.start_s * FPS)), int(np.floor(p.end_s * FPS - 1e-9))


def n_frames(seq: list[Phone]) -> int:
    return int(np.ceil(seq[-1].end_s * FPS))


def middle(seq: list[Phone], index: int) -> int:
    return round((seq[index].start_s + seq[index].dur_s / 2) * FPS)


def test_shape_range_and_empty():
    seq = phones("_:200 b:80 A:200 t:80 i:150 _:200")
    v = track(seq, n_frames(seq))
    assert v.shape == (n_frames(seq), len(VISEME_PARAMS)) and v.dtype == np.float32
    assert v.min() >= 0 and v.max() <= 1
    assert track(seq, 0).shape == (0, 5)
    # past the last phone the mouth settles at rest
    assert np.allclose(track(seq, n_frames(seq) + 25)[-1], 0, atol=1e-3)
    with pytest.raises(ValueError):
        track(seq, -1)


@pytest.mark.parametrize("consonant", ["p", "b", "m"])
def test_bilabials_close_the_mouth_between_open_vowels(consonant):
    seq = phones(f"_:200 A:180 {consonant}:90 A:180 _:200")
    v = track(seq, n_frames(seq))
    assert v[middle(seq, 2), JAW] < 0.08
    assert v[middle(seq, 1), JAW] > 0.5 and v[middle(seq, 3), JAW] > 0.5


def test_open_vowels_open_more_than_close_ones_and_rounding_and_spreading():
    values = {}
    for vowel in ("A:", "{", "E", "I", "i:", "u:", "O:"):
        seq = phones(f"_:200 {vowel}:250 _:200")
        values[vowel] = track(seq, n_frames(seq))[middle(seq, 1)]
    assert values["A:"][JAW] > values["E"][JAW] > values["I"][JAW] > values["i:"][JAW]
    assert values["{"][JAW] > 0.5
    assert values["u:"][ROUND] > 0.6 and values["u:"][PROTRUDE] > 0.5 and values["i:"][ROUND] < 0.05
    assert values["i:"][SPREAD] > 0.5 and values["u:"][SPREAD] < 0.05
    assert values["O:"][ROUND] > values["A:"][ROUND]


def test_labiodentals_tuck_the_lower_lip_under_raised_upper_teeth():
    seq = phones("_:200 A:180 f:110 A:180 _:200")
    v = track(seq, n_frames(seq))[middle(seq, 2)]
    assert v[JAW] < 0.15 and v[RAISE] > 0.4


@pytest.mark.parametrize("consonant", ["w", "S", "tS"])
def test_rounded_consonants_round_and_protrude(consonant):
    seq = phones(f"_:200 i:150 {consonant}:120 i:150 _:200")
    v = track(seq, n_frames(seq))[middle(seq, 2)]
    assert v[ROUND] > 0.35 and v[PROTRUDE] > 0.35


def test_weak_consonants_take_their_neighbours_lip_shape():
    """Coarticulation: /k/, /h/, /t/ between rounded vowels are rounded, between spread vowels spread."""
    for consonant in ("k", "h", "t"):
        rounded = phones(f"_:200 u:150 {consonant}:80 u:150 _:200")
        spread = phones(f"_:200 i:150 {consonant}:80 i:150 _:200")
        r = track(rounded, n_frames(rounded))[middle(rounded, 2)]
        s = track(spread, n_frames(spread))[middle(spread, 2)]
        assert r[ROUND] > 0.5 and s[SPREAD] > 0.4, consonant


def test_anticipation_rounds_the_lips_before_a_rounded_vowel():
    seq = phones("_:300 s:150 t:100 u:200 _:200")
    v = track(seq, n_frames(seq))
    onset = round(seq[3].start_s * FPS)
    assert v[onset - 2, ROUND] > 0.1  # 80 ms before the vowel starts
    assert v[round(0.1 * FPS), ROUND] < 0.01


def test_motion_is_smooth():
    seq = phones("_:200 b:70 I:60 n:60 b:70 l:60 u:90 {:60 t:50 E:80 f:90 t:70 u:80 n:60 aU:170 _:300")
    times = np.arange(0, seq[-1].end_s, 0.001)
    fine = curve(seq, times)
    assert np.abs(np.diff(fine, axis=0)).max() < 0.05  # no steps at 1 ms resolution
    v = track(seq, n_frames(seq))
    assert np.abs(np.diff(v, axis=0)).max() < 0.5  # under half the range between frames, even at closures


def test_look_ahead_is_bounded():
    """Other phones from time T on leave every frame before T - LOOKAHEAD_S - half a frame as it was."""
    a = phones("_:200 A:150 t:80 i:150 s:100 A:200 _:200")
    tail = phones("u:100 w:200 O:200 _:100")
    b = a[:4] + [Phone(p.symbol, p.start_s + a[4].start_s, p.dur_s) for p in tail]
    n = n_frames(a)
    va, vb = track(a, n), track(b, n)
    safe = int(np.floor((a[4].start_s - LOOKAHEAD_S - 0.5 / FPS) * FPS))
    assert safe > 5
    np.testing.assert_array_equal(va[:safe], vb[:safe])
    assert not np.allclose(va[safe + 8:], vb[safe + 8:])


def test_rest_open_parts_the_lips_in_pauses_but_bilabials_still_close():
    seq = phones("_:300 A:150 m:100 A:150 _:400")
    v = track(seq, n_frames(seq), rest_open=0.25)
    assert abs(v[2, JAW] - 0.25) < 0.01 and abs(v[-1, JAW] - 0.25) < 0.01
    assert v[middle(seq, 2), JAW] < 0.08
    with pytest.raises(ValueError):
        track(seq, 5, rest_open=1.5)


def test_every_known_symbol_has_targets_in_range():
    for symbol in [*PHONE_CLASSES, "t_h", "k_h", "r=", "l=", "n="]:
        for segment in targets(symbol):
            assert segment.target.shape == (5,) and segment.target.min() >= 0 and segment.target.max() <= 1
            assert (segment.alpha > 0).all()
    assert len(targets("aI")) == 2


def test_unknown_symbol_is_logged_not_fatal(caplog):
    with caplog.at_level(logging.WARNING, logger="engines.data.visemes"):
        seq = phones("_:200 A:150 ~X:100 A:150 _:200")
        v = track(seq, n_frames(seq))
    assert np.isfinite(v).all()
    assert "unknown phone" in caplog.text


@pytest.mark.parametrize("consonant", ["t", "d", "n", "s", "k", "S"])
def test_closure_closes_the_mouth_on_tongue_consonants_between_open_vowels(consonant):
    """Real jaws rise for consonants behind the lips: at closure 1 the mouth nearly closes between two open
    vowels, at 0 (the corpus default, as older corpora were made) it stays open."""
    seq = phones(f"_:200 A:180 {consonant}:80 A:180 _:200")
    open_, closing = track(seq, n_frames(seq)), track(seq, n_frames(seq), closure=1.0)
    at = middle(seq, 2)
    assert closing[at, JAW] < 0.25 and open_[at, JAW] > 0.4
    assert closing[middle(seq, 1), JAW] > 0.5 and closing[middle(seq, 3), JAW] > 0.5  # the vowels still open
    half = track(seq, n_frames(seq), closure=0.5)[at, JAW]
    assert closing[at, JAW] < half < open_[at, JAW]


def test_closure_leaves_glottal_and_lip_consonants_and_the_other_parameters_alone():
    for consonant in ("h", "p", "f", "w"):
        seq = phones(f"_:200 A:180 {consonant}:80 A:180 _:200")
        np.testing.assert_array_equal(track(seq, n_frames(seq)), track(seq, n_frames(seq), closure=1.0))
    seq = phones("_:200 u:150 t:80 u:150 _:200")
    assert track(seq, n_frames(seq), closure=1.0)[middle(seq, 2), ROUND] > 0.5  # still coarticulated
    with pytest.raises(ValueError, match="closure"):
        track(seq, 5, closure=1.5)
