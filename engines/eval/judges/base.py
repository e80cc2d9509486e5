"""What every judge shares. Each judge scores one generated signal against its clip's reference and returns
per-clip values; a judge that needs every clip (speaker identification) completes its values in
`finish`. Heavy packages (faster-whisper, pocketsphinx, pystoi, speechmos, silero-vad, mediapipe)
are imported inside the judge that uses them, when it is first used.

Keys starting with "_" are a judge's working data (embeddings, error counts): kept out of the report
tables, and out of the JSON when they are arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.eval.clips import Clip

Scores = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    key: str
    label: str  # table header
    better: str  # "lower", "higher", or "" (a description, e.g. F0 in Hz)
    digits: int = 2
    ratio: tuple[str, str] | None = None  # aggregate as sum(numerator) / sum(denominator), e.g. corpus WER
    percent: bool = False  # shown ×100 with a %
    table: bool = True  # in the markdown table (always in the JSON)
    group: str = "quality"  # summary table: "quality" (intelligibility, quality) or "match" (timing, voice)


@dataclass
class RefClip:
    """A clip's reference, shared by every row: the judges memoise what they derive from it."""

    clip: Clip
    audio: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


class Judge:
    name: str = ""
    metrics: tuple[Metric, ...] = ()

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        """Values for one generated signal (16 kHz mono float32 in [-1, 1]); missing ones are NaN/None."""
        raise NotImplementedError

    def finish(self, rows: dict[str, dict[str, Scores]], refs: dict[str, RefClip]) -> None:
        """Set-level values, written into rows[system][clip_id] (most judges need none)."""


def fit(audio: np.ndarray, length: int) -> np.ndarray:
    """`audio` cut or zero-padded to `length` samples: outputs are compared on the reference's clock."""
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros(length - len(audio), audio.dtype)])
