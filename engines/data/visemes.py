"""Phones → mouth shape over time: five viseme parameters per video frame, with coarticulation.

Parameters (VISEME_PARAMS, each in [0, 1], 0 = the closed, relaxed mouth):
    jaw_open         lip opening (inner-lip gap) from the jaw and lower lip; 0 = lips closed
    lip_spread       mouth corners drawn out and up (i, e), beyond the relaxed width
    rounding         corners drawn in: a narrower, rounder mouth (u, o, w, r)
    protrusion       lips pushed forward, which from the front shows as everted, fuller lips (u, S, w)
    upper_lip_raise  upper lip lifted off the teeth (f, v; some open vowels)

Targets come from the phone's articulatory class (engines.data.phonemes.phone_class): vowels by height,
backness and rounding; consonants by place (bilabials close the lips, labiodentals tuck the lower lip
under raised upper teeth, postalveolars and w round and protrude) — see `targets`.

Coarticulation: Cohen & Massaro's dominance model (1993). Each phone (each half of a diphthong) has a
target and, per parameter, a dominance: `alpha` (how strongly it claims the parameter: bilabial
closure, labiodental and rounded-consonant shapes are near-hard targets; alveolars, velars and h barely
constrain the lips, so they take their neighbours' shape), full inside the phone and falling off as
exp(-(d / tau)^2) with the distance d before it (anticipation, TAU_BEFORE_S) and after it (carry-over,
TAU_AFTER_S), cut to zero beyond 3 tau. The parameter at time t is the dominance-weighted mean of the
targets, so transitions are smooth, short phones undershoot their targets as real ones do, and the
mouth never reacts to a phone more than LOOKAHEAD_S ahead (a bounded, "causal-ish" look-ahead). A faint
rest target everywhere settles the mouth where there are no phones (closed, or a little open: `rest_open`).

Closure between syllables (`closure`, 0 … 1): consonants made by the tongue (alveolar, dental,
postalveolar, palatal, velar) are spoken with the jaw raised, so real lips nearly meet on them and a real
mouth closes between most syllables (the inner-lip gap of three real GRID speakers dips 1.8-2.8 times a
second of speech). At 0 these consonants barely claim the jaw and the mouth stays open through a word
between bilabials (0.5 dips a second: session 23 of notes/history.md); at 1 they close it to JAW_CLOSING
with a near-hard dominance, as quick and local as a lip closure.

Sampling: the curve is evaluated at SUBSTEPS points per frame and frame i (time i / fps, as the video's
presentation timestamp) is the mean over [i - 1/2, i + 1/2) frame periods, as a camera integrates
motion over its exposure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

import numpy as np

from engines.data.phonemes import OPENNESS, PAUSE, Phone, PhoneClass, phone_class

log = logging.getLogger(__name__)

VISEME_PARAMS = ("jaw_open", "lip_spread", "rounding", "protrusion", "upper_lip_raise")
JAW, SPREAD, ROUND, PROTRUDE, RAISE = range(len(VISEME_PARAMS))
TAU_BEFORE_S = 0.05  # anticipation: lips start moving towards a phone ~100-200 ms before it
TAU_AFTER_S = 0.04
CUTOFF = 3.0  # dominance is zero beyond CUTOFF * tau
LOOKAHEAD_S = CUTOFF * TAU_BEFORE_S
SUBSTEPS = 8
REST = np.zeros(len(VISEME_PARAMS), np.float32)
REST_ALPHA = 1e-3
HARD_TAU_SCALE = 0.6

_WEAK, _SOFT, _NORMAL, _HARD = 0.15, 0.5, 1.0, 20.0
CLOSING_PLACES = frozenset({"alveolar", "dental", "postalveolar", "palatal", "velar"})
JAW_CLOSING = {"plosive": 0.03, "nasal": 0.03, "fricative": 0.03, "affricate": 0.03, "flap": 0.08,
               "lateral": 0.1, "approximant": 0.12}  # by manner: a stop seals, an approximant leaves a gap
CLOSING_ALPHA = 4.0


def _vowel(cls: PhoneClass) -> tuple[np.ndarray, np.ndarray, float]:
    openness = OPENNESS.get(cls.height, 0.5)
    target = np.zeros(5, np.float32)
    target[JAW] = 0.15 + 0.7 * openness
    if cls.rounded:
        target[ROUND] = 0.95 - 0.55 * openness
        target[PROTRUDE] = 0.8 - 0.6 * openness
        target[JAW] *= 0.85  # rounding narrows the opening too
    elif cls.backness == "front":
        target[SPREAD] = 0.75 - 0.5 * openness
    else:
        target[SPREAD] = 0.15
    if cls.rhotic:
        target[ROUND], target[PROTRUDE] = 0.45, 0.35
    target[RAISE] = 0.2 * openness
    return target, np.full(5, _NORMAL, np.float32), 1.0


def _consonant(cls: PhoneClass, closure: float) -> tuple[np.ndarray, np.ndarray, float]:
    target = np.zeros(5, np.float32)
    alpha = np.full(5, _SOFT, np.float32)
    place = cls.place
    if place == "bilabial":
        alpha[:] = (_HARD, _WEAK, _WEAK, _SOFT, _HARD)  # lips pressed shut; their shape follows the vowels
    elif place == "labiodental":
        target[JAW], target[RAISE] = 0.08, 0.6
        alpha[:] = (_HARD, _SOFT, _SOFT, _SOFT, _HARD)
    elif place == "dental":
        target[JAW], target[SPREAD], target[RAISE] = 0.2, 0.2, 0.25
        alpha[:] = (2.0, _SOFT, _SOFT, _SOFT, _SOFT)
    elif place == "postalveolar":
        target[JAW], target[ROUND], target[PROTRUDE] = 0.15, 0.5, 0.8
        alpha[:] = (1.5, _SOFT, 3.0, 3.0, _SOFT)
        if cls.rhotic:  # English r: rounder, less protruded, a little more open
            target[JAW], target[ROUND], target[PROTRUDE] = 0.2, 0.55, 0.4
    elif place == "labial-velar":
        target[JAW], target[ROUND], target[PROTRUDE] = 0.08, 1.0, 0.9
        alpha[:] = (3.0, 3.0, _HARD, _HARD, _SOFT)
    elif place == "palatal":
        target[JAW], target[SPREAD] = 0.12, 0.5
        alpha[:] = (1.0, 1.0, _SOFT, _SOFT, _SOFT)
    elif place == "alveolar":
        target[JAW], target[SPREAD] = 0.15, 0.2
        alpha[:] = (1.0, _WEAK, _WEAK, _WEAK, _WEAK)
    else:  # velar, glottal and anything else: the tongue or larynx works, the lips take the neighbours'
        target[JAW] = 0.25
        alpha[:] = (_WEAK, _WEAK, _WEAK, _WEAK, _WEAK)
    if closure and place in CLOSING_PLACES:
        target[JAW] += closure * (JAW_CLOSING.get(cls.manner, target[JAW]) - target[JAW])
        alpha[JAW] += closure * (CLOSING_ALPHA - alpha[JAW])
        return target, alpha, 1.0 - closure * (1.0 - HARD_TAU_SCALE)
    # A lip closure is quick and local: a hard target with a wide reach would swallow a short vowel.
    return target, alpha, (HARD_TAU_SCALE if place in ("bilabial", "labiodental") else 1.0)


class Segment(NamedTuple):
    target: np.ndarray  # (5,) float32
    alpha: np.ndarray  # (5,) float32 dominance strength per parameter
    tau_scale: float  # multiplies TAU_BEFORE_S / TAU_AFTER_S


def _neutral() -> Segment:
    return Segment(REST.copy(), np.full(5, _NORMAL, np.float32), 1.0)


@cache
def targets(symbol: str, closure: float = 0.0) -> tuple[Segment, ...]:
    """The segments of `symbol`: one, or two for a diphthong (its halves); `closure` as in the module
    docstring.

    An unknown symbol is logged once and treated as a weakly constraining, slightly open phone.
    """
    if symbol == PAUSE:
        return (_neutral(),)
    try:
        cls = phone_class(symbol)
    except KeyError:
        log.warning("unknown phone %r: no viseme target, the mouth takes its neighbours' shape", symbol)
        target = REST.copy()
        target[JAW] = 0.2
        return (Segment(target, np.full(5, _WEAK, np.float32), 1.0),)
    if cls.kind == "diphthong":
        return tuple(targets(part, closure)[0] for part in cls.glide)
    if cls.kind == "vowel":
        return (Segment(*_vowel(cls)),)
    if cls.kind == "pause":
        return (_neutral(),)
    return (Segment(*_consonant(cls, closure)),)


def _segments(phones: Sequence[Phone], rest: np.ndarray,
              closure: float) -> list[tuple[float, float, Segment]]:
    """(start_s, end_s, segment) of every segment, in order; pauses aim at `rest`."""
    out = []
    for phone in phones:
        parts = targets(phone.symbol, closure)
        if phone.symbol == PAUSE:
            parts = (parts[0]._replace(target=rest),)
        step = phone.dur_s / len(parts)
        out.extend((phone.start_s + k * step, phone.start_s + (k + 1) * step, segment)
                   for k, segment in enumerate(parts))
    return out


def _unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _rest(rest_open: float) -> np.ndarray:
    rest = REST.copy()
    rest[JAW] = rest_open
    return rest


def curve(phones: Sequence[Phone], times_s: np.ndarray, rest_open: float = 0.0,
          closure: float = 0.0) -> np.ndarray:
    """Viseme parameters (len(times_s), 5) float32 at arbitrary times (the model of the docstring)."""
    times = np.asarray(times_s, np.float64)
    rest = _rest(_unit("rest_open", rest_open))
    closure = _unit("closure", closure)
    weighted = np.zeros((len(times), 5), np.float64) + REST_ALPHA * rest
    total = np.full((len(times), 5), REST_ALPHA, np.float64)
    for start, end, (target, alpha, tau_scale) in _segments(phones, rest, closure):
        tau_before, tau_after = TAU_BEFORE_S * tau_scale, TAU_AFTER_S * tau_scale
        lo = np.searchsorted(times, start - CUTOFF * tau_before)
        hi = np.searchsorted(times, end + CUTOFF * tau_after)
        if lo >= hi:
            continue
        t = times[lo:hi]
        before = np.clip(start - t, 0.0, None) / tau_before
        after = np.clip(t - end, 0.0, None) / tau_after
        d = before + after  # at most one of them is non-zero
        shape = np.where(d < CUTOFF, np.exp(-np.square(d)), 0.0)[:, None] * alpha[None, :]
        weighted[lo:hi] += shape * target[None, :]
        total[lo:hi] += shape
    return (weighted / total).astype(np.float32)


def track(phones: Sequence[Phone], n_frames: int, fps: float = 25.0, rest_open: float = 0.0,
          closure: float = 0.0) -> np.ndarray:
    """Viseme parameters per video frame, (n_frames, 5) float32 in [0, 1] (module docstring).

    `rest_open` is the jaw_open of the mouth at rest (pauses, before and after speech): 0 keeps the lips
    closed; many speakers rest with them a little apart (0.1-0.3). Bilabials close the lips regardless.
    `closure` is how far tongue consonants close the mouth between syllables (module docstring).
    """
    if n_frames < 0 or fps <= 0:
        raise ValueError(f"need n_frames >= 0 and fps > 0, got {n_frames}, {fps}")
    if n_frames == 0:
        return np.zeros((0, 5), np.float32)
    offsets = (np.arange(SUBSTEPS) + 0.5) / SUBSTEPS - 0.5
    times = ((np.arange(n_frames)[:, None] + offsets[None, :]) / fps).reshape(-1)
    values = curve(phones, times, rest_open, closure).reshape(n_frames, SUBSTEPS, 5).mean(axis=1)
    return np.clip(values, 0.0, 1.0).astype(np.float32)
