"""Causal One Euro filter (Casiez, Roussel & Vogel, CHI 2012) over arrays, e.g. (478, 3) landmarks.

A first-order low-pass filter whose cutoff rises with speed: cutoff = min_cutoff + beta * |speed|, the
speed itself low-passed at d_cutoff. Slow movement is smoothed hard (no jitter), fast movement passes
with little lag. Every element (coordinate) is filtered on its own, each with its own speed. Updates
carry their own time stamps, so irregular frame times give the right smoothing; nothing ever looks at a
later sample.

Tuning (Casiez): beta = 0, lower min_cutoff until a still face stops jittering; then raise beta until
fast motion stops lagging. Pass `scale` (e.g. the face's inter-ocular distance in pixels) to update() to
measure speed in face sizes per second, so one beta suits near and far faces alike; the defaults are set
for that scale. Smoothing all landmarks at the defaults steadies the crop but also damps the lips' own
motion (speech moves them at 2-8 Hz): place crops with smoothed landmarks, measure lips on raw ones (or
with a much higher min_cutoff).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from engines.params import param


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = param(1.0, "cutoff (Hz) when still: lower removes more jitter from a still face")
    beta: float = param(5.0, "cutoff rise (Hz) per unit of speed, speed in `scale` units per second "
                              "(the default suits scale = inter-ocular distance): higher follows fast "
                              "motion with less lag; a steady motion lags by at most 1/(2 pi beta) units")
    d_cutoff: float = param(1.0, "cutoff (Hz) of the low-pass on the speed estimate")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be finite and >= 0, got {value}")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0")


def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters a stream of same-shaped arrays stamped with times in seconds."""

    def __init__(self, params: OneEuroParams | None = None) -> None:
        self.params = params or OneEuroParams()
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next update passes through unchanged."""
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._t = 0.0

    @property
    def started(self) -> bool:
        return self._value is not None

    def update(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value at time `t` (seconds) given the new sample `x`.

        The first sample after construction or reset() passes through. A sample whose time is not
        after the previous one's (a repeated frame, a clock going back) cannot be placed in time: it
        is ignored and the previous output returned. A sample of another shape raises ValueError.
        The output has x's dtype when that is floating, float64 otherwise.
        """
        src = np.asarray(x)
        out_dtype = src.dtype if np.issubdtype(src.dtype, np.floating) else np.dtype(np.float64)
        value = src.astype(np.float64)
        if not math.isfinite(t):
            raise ValueError(f"time stamp must be finite, got {t}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        if self._value is None:
            self._value, self._speed, self._t = value.copy(), np.zeros_like(value), t
            return value.astype(out_dtype)
        if value.shape != self._value.shape:
            raise ValueError(f"sample of shape {value.shape} after samples of shape {self._value.shape}")
        dt = t - self._t
        if dt <= 0:
            return self._value.astype(out_dtype)
        p = self.params
        speed = (value - self._value) / dt
        self._speed = self._speed + _alpha(dt, p.d_cutoff) * (speed - self._speed)
        cutoff = p.min_cutoff + p.beta * np.abs(self._speed) / scale
        self._value = self._value + _alpha(dt, cutoff) * (value - self._value)
        self._t = t
        return self._value.astype(out_dtype)


def smooth_sequence(samples: np.ndarray, times: np.ndarray, params: OneEuroParams | None = None,
                    scales: np.ndarray | None = None) -> np.ndarray:
    """One Euro over a recorded sequence (axis 0 is time), exactly as it would run live."""
    filt = OneEuroFilter(params)
    samples = np.asarray(samples)
    scales = np.ones(len(samples)) if scales is None else np.asarray(scales, dtype=np.float64)
    return np.stack([filt.update(s, float(t), float(k))
                     for s, t, k in zip(samples, times, scales, strict=True)])


def jitter(track: np.ndarray, window: int = 9) -> float:
    """Mean frame-to-frame displacement of a (T, D) track once its slow motion is removed: the residual
    from a centred moving average over `window` frames (an offline measurement; it looks ahead).
    Same units as the track; 0.0 for fewer than two frames."""
    track = np.asarray(track, dtype=np.float64)
    if track.ndim != 2:
        raise ValueError(f"expected a (T, D) track, got shape {track.shape}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    if len(track) < 2:
        return 0.0
    half = window // 2
    # Odd reflection at the ends keeps a steady motion steady there too.
    padded = np.pad(track, ((half, half), (0, 0)), mode="reflect", reflect_type="odd")
    sums = np.cumsum(np.vstack([np.zeros((1, track.shape[1])), padded]), axis=0)
    slow = (sums[window:] - sums[:-window]) / window
    return float(np.linalg.norm(np.diff(track - slow, axis=0), axis=1).mean())
