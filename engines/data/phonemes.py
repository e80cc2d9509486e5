"""Phones with timings: the one timeline that drives both the speech and the talking face.

Source: `espeak-ng -v mb-XX -q --pho` (espeak-ng only prints phones for an mbrola voice, and only when
that mbrola voice is installed). Its output is mbrola's .pho format, one phone a line:
`SYMBOL DURATION_MS [PERCENT HZ]...`, where the optional pairs are pitch targets at a percentage of the
phone's duration; `;` starts a comment and a line starting with `#` is a flush command.

Symbols are SAMPA as the mbrola voice spells them: the US voices (us1/us2/us3) and the British en1 use
slightly different sets (US `i u A EI AI`, British `i: u: A: eI aI Q I@ e@ U@ 3: 5`). `PHONE_CLASSES`
covers both, with the articulatory classes a viseme mapping needs; `phone_class` also accepts the
aspiration (`_h`), syllabic (`=`) and length (`:`) variants of a known symbol. "_" is a pause.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Literal

PAUSE = "_"


@dataclass(frozen=True)
class Phone:
    symbol: str        # SAMPA as espeak-ng/mbrola .pho uses it ("_" = pause)
    start_s: float
    dur_s: float
    pitch: tuple[tuple[float, float], ...] = ()   # (percent of duration, Hz) points, as in .pho

    @property
    def end_s(self) -> float:
        return self.start_s + self.dur_s


@dataclass(frozen=True)
class PhoneClass:
    """Articulatory class of a phone.

    kind: "pause", "vowel", "diphthong" or "consonant". Vowels: `height` (close … open, see OPENNESS)
    and `backness` (front, central, back). Diphthongs: `glide` = (start vowel, end vowel), both in
    PHONE_CLASSES. Consonants: `place` (bilabial, labiodental, dental, alveolar, postalveolar,
    palatal, velar, labial-velar, glottal) and `manner` (plosive, nasal, fricative, affricate,
    approximant, lateral, flap). `rounded`: the lips round or protrude: rounded vowels, w, and the
    English r and postalveolars (S Z tS dZ), which are spoken with protruded lips.
    """

    kind: Literal["pause", "vowel", "diphthong", "consonant"]
    height: str = ""
    backness: str = ""
    place: str = ""
    manner: str = ""
    voiced: bool = False
    rounded: bool = False
    rhotic: bool = False
    glide: tuple[str, ...] = ()


# Vowel height as mouth openness in [0, 1] (close 0 … open 1).
OPENNESS = {"close": 0.0, "near-close": 0.17, "close-mid": 0.33, "mid": 0.5, "open-mid": 0.67,
            "near-open": 0.83, "open": 1.0}


def _v(height: str, backness: str, rounded: bool = False, rhotic: bool = False) -> PhoneClass:
    return PhoneClass("vowel", height=height, backness=backness, voiced=True, rounded=rounded, rhotic=rhotic)


def _d(start: str, end: str) -> PhoneClass:
    return PhoneClass("diphthong", voiced=True, glide=(start, end))


def _c(place: str, manner: str, voiced: bool, rounded: bool = False, rhotic: bool = False) -> PhoneClass:
    return PhoneClass("consonant", place=place, manner=manner, voiced=voiced, rounded=rounded, rhotic=rhotic)


PHONE_CLASSES: dict[str, PhoneClass] = {
    PAUSE: PhoneClass("pause"),
    # monophthongs (US and British spellings)
    "i": _v("close", "front"), "i:": _v("close", "front"), "I": _v("near-close", "front"),
    "e": _v("close-mid", "front"), "E": _v("open-mid", "front"), "{": _v("near-open", "front"),
    "a": _v("open", "front"), "A": _v("open", "back"), "A:": _v("open", "back"),
    "Q": _v("open", "back", rounded=True), "O": _v("open-mid", "back", rounded=True),
    "O:": _v("open-mid", "back", rounded=True), "o": _v("close-mid", "back", rounded=True),
    "U": _v("near-close", "back", rounded=True), "u": _v("close", "back", rounded=True),
    "u:": _v("close", "back", rounded=True), "V": _v("open-mid", "back"), "@": _v("mid", "central"),
    "3": _v("open-mid", "central"), "3:": _v("open-mid", "central"),
    # r-coloured vowels (US "her", "butter"): lips slightly rounded as for r
    **{symbol: _v("mid", "central", rounded=True, rhotic=True) for symbol in ("r=", "3`", "@`")},
    # diphthongs
    "EI": _d("E", "I"), "eI": _d("e", "I"), "AI": _d("A", "I"), "aI": _d("a", "I"), "OI": _d("O", "I"),
    "aU": _d("a", "U"), "@U": _d("@", "U"), "oU": _d("o", "U"), "I@": _d("I", "@"), "e@": _d("e", "@"),
    "E@": _d("E", "@"), "U@": _d("U", "@"), "i@": _d("i", "@"),
    # plosives (aspiration variants resolve through phone_class)
    "p": _c("bilabial", "plosive", False), "b": _c("bilabial", "plosive", True),
    "t": _c("alveolar", "plosive", False), "d": _c("alveolar", "plosive", True),
    "k": _c("velar", "plosive", False), "g": _c("velar", "plosive", True),
    "?": _c("glottal", "plosive", False), "4": _c("alveolar", "flap", True),
    # nasals
    "m": _c("bilabial", "nasal", True), "n": _c("alveolar", "nasal", True), "N": _c("velar", "nasal", True),
    # fricatives and affricates
    "f": _c("labiodental", "fricative", False), "v": _c("labiodental", "fricative", True),
    "T": _c("dental", "fricative", False), "D": _c("dental", "fricative", True),
    "s": _c("alveolar", "fricative", False), "z": _c("alveolar", "fricative", True),
    "S": _c("postalveolar", "fricative", False, rounded=True),
    "Z": _c("postalveolar", "fricative", True, rounded=True),
    "x": _c("velar", "fricative", False), "h": _c("glottal", "fricative", False),
    "tS": _c("postalveolar", "affricate", False, rounded=True),
    "dZ": _c("postalveolar", "affricate", True, rounded=True),
    # approximants and laterals ("5" is en1's dark l)
    "l": _c("alveolar", "lateral", True), "5": _c("alveolar", "lateral", True),
    "r": _c("postalveolar", "approximant", True, rounded=True, rhotic=True),
    "j": _c("palatal", "approximant", True), "w": _c("labial-velar", "approximant", True, rounded=True),
    "W": _c("labial-velar", "approximant", False, rounded=True),
}

_MODIFIERS = ("_h", "_0", "=", ":")

# espeak-ng's translation table for us3 writes "O2", which the us3 database lacks (it has "O"), and a
# few phone pairs for which us3 has no diphone (found by synthesizing every open sentence and every GRID
# word pair with every voice). A pair maps to its replacement; "" drops that phone and gives its
# duration to the other one.
SYMBOL_FIXES: dict[str, dict[str, str]] = {"us3": {"O2": "O"}}
PAIR_FIXES: dict[str, dict[tuple[str, str], tuple[str, str]]] = {
    "us3": {("aU", "l="): ("aU", "l"), ("h", "j"): ("", "j"), ("@", "@"): ("", "@")},
}


def phone_class(symbol: str) -> PhoneClass:
    """The class of a SAMPA symbol; `_h`/`_0`/`=`/`:` variants fall back to the plain symbol."""
    found = PHONE_CLASSES.get(symbol)
    base = symbol
    while found is None:
        modifier = next((m for m in _MODIFIERS if base.endswith(m) and len(base) > len(m)), None)
        if modifier is None:
            raise KeyError(f"unknown phone symbol {symbol!r}")
        base = base[: -len(modifier)]
        found = PHONE_CLASSES.get(base)
    return found


def parse_pho(text: str) -> list[Phone]:
    """Phones of a .pho text, timed from 0 in order; comments, flush lines and blank lines are skipped."""
    phones: list[Phone] = []
    t = 0.0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            dur_s = float(fields[1]) / 1000.0
            values = [float(v) for v in fields[2:]]
        except (IndexError, ValueError) as error:
            raise ValueError(f".pho line {number}: expected 'SYMBOL MS [PERCENT HZ]...', got {raw!r}") \
                from error
        if len(values) % 2 or dur_s < 0:
            raise ValueError(f".pho line {number}: odd pitch list or negative duration in {raw!r}")
        pitch = tuple(zip(values[0::2], values[1::2], strict=True))
        phones.append(Phone(fields[0], t, dur_s, pitch))
        t += dur_s
    return phones


def format_pho(phones: list[Phone]) -> str:
    """The .pho text mbrola reads for `phones` (their start times are implied by the order)."""
    lines = []
    for p in phones:
        points = "".join(f" {pct:g} {hz:.1f}" for pct, hz in p.pitch)
        lines.append(f"{p.symbol} {p.dur_s * 1000.0:.3f}{points}")
    return "\n".join(lines) + "\n"


def retime(phones: list[Phone], start_s: float = 0.0) -> list[Phone]:
    """The same phones laid end to end from `start_s`."""
    out = []
    t = start_s
    for p in phones:
        out.append(Phone(p.symbol, t, p.dur_s, p.pitch))
        t += p.dur_s
    return out


def tidy(phones: list[Phone]) -> list[Phone]:
    """Drop zero-length phones and merge runs of pauses (espeak-ng writes "_ 150" then "_ 1")."""
    out: list[Phone] = []
    for p in phones:
        if p.dur_s <= 0:
            continue
        if out and p.symbol == PAUSE and out[-1].symbol == PAUSE:
            out[-1] = Phone(PAUSE, out[-1].start_s, out[-1].dur_s + p.dur_s)
        else:
            out.append(p)
    return retime(out, phones[0].start_s if phones else 0.0)


def espeak_phones(text: str, voice_name: str, rate_wpm: int = 175) -> list[Phone]:
    """Phones of `text` for mbrola voice `voice_name` ("us1" or "mb-us1"), tidied, starting at 0."""
    voice = voice_name if voice_name.startswith("mb-") else f"mb-{voice_name}"
    try:
        result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rate_wpm)), "-q", "--pho", text],
                                capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as error:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng mbrola mbrola-us1 ...)") \
            from error
    name = voice.removeprefix("mb-")
    fixes = SYMBOL_FIXES.get(name, {})
    phones = _fix_pairs(tidy([Phone(fixes.get(p.symbol, p.symbol), p.start_s, p.dur_s, p.pitch)
                              for p in parse_pho(result.stdout)]), PAIR_FIXES.get(name, {}))
    if result.returncode != 0 or not phones:
        raise RuntimeError(f"espeak-ng --pho for voice {voice} gave no phones for {text!r} "
                           f"(exit {result.returncode}): {result.stderr.strip()[:300]}")
    return phones


def _fix_pairs(phones: list[Phone], fixes: dict[tuple[str, str], tuple[str, str]]) -> list[Phone]:
    out = list(phones)
    i = 0
    while i + 1 < len(out):
        pair = fixes.get((out[i].symbol, out[i + 1].symbol))
        if pair is None:
            i += 1
            continue
        left, right = out[i], out[i + 1]
        if not pair[0]:
            out[i:i + 2] = [Phone(pair[1], left.start_s, left.dur_s + right.dur_s, right.pitch)]
        elif not pair[1]:
            out[i:i + 2] = [Phone(pair[0], left.start_s, left.dur_s + right.dur_s, left.pitch)]
        else:
            out[i:i + 2] = [Phone(pair[0], left.start_s, left.dur_s, left.pitch),
                            Phone(pair[1], right.start_s, right.dur_s, right.pitch)]
            i += 1
    return out
