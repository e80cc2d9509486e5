"""What is judged: a System turns a clip into speech. The reference and "reference → mel → vocoder"
are the first two rows of every report; a folder of generated WAVs and any model are systems too.

A model plugs in as a factory: `--system NAME[,key=value...]` where NAME is a key of SYSTEMS or
`package.module:callable`; the callable gets the key=value pairs (numbers parsed) and returns a System.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engines.eval import mel
from engines.eval.clips import Clip, read_audio, wav_for


class MissingOutput(Exception):
    """The system has nothing for this clip (e.g. no WAV in the folder): the clip is left out of its row."""


@runtime_checkable
class System(Protocol):
    """`name` is the row's name in the report; optional: `about` says what the row is, and `notes`, a list the
    system appends to when it did something else than asked for a clip (a fallback), which evaluate moves
    into the report's problems after each clip."""

    name: str

    def generate(self, clip: Clip) -> np.ndarray:
        """Speech for the clip: 16 kHz mono float32 (raise MissingOutput when there is none)."""


class Reference:
    name = "reference"
    about = "the clip's own audio (16 kHz mono)"

    def generate(self, clip: Clip) -> np.ndarray:
        return clip.reference()


class GriffinLimVocoder:
    """The zero-weight fallback vocoder: the reference's log-mel (ARCHITECTURE §4) through Griffin-Lim.
    Our trained vocoder takes this row's place once it exists."""

    name = "vocoder (Griffin-Lim)"

    def __init__(self, n_iter: int = 32) -> None:
        self.n_iter = n_iter
        self.about = (f"reference → log-mel (ARCHITECTURE §4) → Griffin-Lim, {n_iter} iterations: the "
                      "zero-weight fallback vocoder, until our trained vocoder takes this row")

    def generate(self, clip: Clip) -> np.ndarray:
        reference = clip.reference()
        return mel.griffin_lim(mel.log_mel(reference), len(reference), n_iter=self.n_iter)


class WavFolder:
    """Already generated speech: FOLDER/CLIP_ID.wav (or FOLDER/BASENAME.wav), any rate, mixed to mono."""

    def __init__(self, folder: Path | str, name: str | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"{self.folder}: not a folder")
        self.name = name or self.folder.name
        self.about = f"WAVs from {self.folder}"

    def generate(self, clip: Clip) -> np.ndarray:
        path = wav_for(self.folder, clip)
        if path is None:
            raise MissingOutput(f"no {clip.id}.wav in {self.folder}")
        return read_audio(path)


SYSTEMS: dict[str, Callable[..., System]] = {
    "reference": Reference,
    "vocoder": GriffinLimVocoder,
}


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_system(spec: str) -> System:
    """A System from `NAME[,key=value...]` (see the module docstring)."""
    target, *pairs = spec.split(",")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"system {spec!r}: expected key=value, got {pair!r}")
        options[key.strip()] = _value(value.strip())
    if target in SYSTEMS:
        factory = SYSTEMS[target]
    elif ":" in target:
        module, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    else:
        raise ValueError(f"unknown system {target!r}: one of {', '.join(SYSTEMS)} or package.module:callable")
    system = factory(**options)
    if not isinstance(system, System):
        raise TypeError(f"{target} did not return a System (needs .name and .generate(clip))")
    # Rows of one model with different settings must not share a name; where features are cached
    # changes nothing in the output, so it stays out of the name.
    named = [pair for pair in pairs if not pair.strip().startswith("cache=")]
    if named:
        system.name = f"{system.name} ({', '.join(named)})"
    return system
