"""The bank of voice settings the corpus draws its speakers from.

Each base voice (an mbrola diphone voice, or the piper voice joe-us) is varied in pitch and speaking
rate; every (base voice, pitch factor, rate factor) is one `Voice` with a stable id such as
"mbrola-us2-p1.15-r0.90", so a corpus made from a seed always pairs the same faces with the same voices.

Left out on purpose: plain espeak-ng voices (formant synthesis). espeak-ng gives no phone timings for
them (`--pho` needs an mbrola voice), so their mouth movements could not be in sync by construction,
and pocketsphinx-GRID finds them far less intelligible (bench/corpus_audio.py, 180 words each: en-us
24 %, en-gb+m3 41 %, en-us+f3 8 % WER against 1 to 3 % for the mbrola voices; whisper tiny.en rates
them about as the mbrola voices, 8 to 17 %; tests/engines/test_data_speech.py checks the gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Engine = Literal["mbrola", "espeak", "piper"]
Gender = Literal["female", "male"]


@dataclass(frozen=True)
class Voice:
    id: str
    engine: Engine
    name: str              # mbrola database ("us1"), espeak-ng voice ("en-us+f3") or piper voice ("joe-us")
    gender: Gender
    pitch_factor: float    # multiplies the fundamental frequency
    rate_factor: float     # > 1 speaks faster (phone durations divided by it)


# (engine, name, gender): us1 is the only female mbrola voice, so it gets more pitch settings.
BASE_VOICES: tuple[tuple[Engine, str, Gender, tuple[float, ...]], ...] = (
    ("mbrola", "us1", "female", (0.85, 0.92, 1.0, 1.08, 1.15)),
    ("mbrola", "us2", "male", (0.85, 1.0, 1.15)),
    ("mbrola", "us3", "male", (0.85, 1.0, 1.15)),
    ("mbrola", "en1", "male", (0.85, 1.0, 1.15)),
    # piper has no pitch control; its pitch factor is a resampling shift (pitch and formants together),
    # kept small so the voice stays natural.
    ("piper", "joe-us", "male", (0.92, 1.0, 1.08)),
)
RATE_FACTORS = (0.9, 1.0, 1.1)


def voice_id(engine: str, name: str, pitch_factor: float, rate_factor: float) -> str:
    return f"{engine}-{name}-p{pitch_factor:.2f}-r{rate_factor:.2f}"


def make_voice(engine: Engine, name: str, gender: Gender, pitch_factor: float = 1.0,
               rate_factor: float = 1.0) -> Voice:
    return Voice(voice_id(engine, name, pitch_factor, rate_factor), engine, name, gender, pitch_factor,
                 rate_factor)


def voice_bank(engines: tuple[str, ...] = ("mbrola", "piper")) -> list[Voice]:
    """Every base voice of `engines` × its pitch factors × RATE_FACTORS, in a fixed order."""
    return [make_voice(engine, name, gender, pitch, rate)
            for engine, name, gender, pitches in BASE_VOICES if engine in engines
            for pitch in pitches for rate in RATE_FACTORS]


def by_id(voice_id_: str) -> Voice:
    """The bank's voice with this id."""
    for voice in voice_bank():
        if voice.id == voice_id_:
            return voice
    raise KeyError(f"no voice {voice_id_!r} in the bank")
