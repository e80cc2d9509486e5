"""Per-clip values → one figure with a 95 % confidence interval.

- A mean (STOI, DNSMOS, ...): Student-t interval over the clips that have a value (NaN = no value).
- A ratio of sums (corpus WER = all word errors / all reference words, as LipVoicer reports it):
  percentile bootstrap over clips (2000 resamples, fixed seed, so a report is reproducible).
- A paired difference of two systems scored on the same clips (A − B over the clips both have a value
  for): for a ratio, the difference of the two corpus ratios with both resampled on the same clips; for
  a mean, the Student-t interval of the per-clip differences. Pairing removes the clip-to-clip spread
  that the two systems share, so it resolves differences that two separate intervals cannot.
One clip gives the value with no interval (NaN bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP = 2000
SEED = 0


@dataclass(frozen=True)
class Summary:
    value: float
    low: float
    high: float
    n: int  # clips that had a value

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict[str, float | int | None]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {"value": clean(self.value), "ci_low": clean(self.low), "ci_high": clean(self.high),
                "n": self.n}


NONE = Summary(math.nan, math.nan, math.nan, 0)


def mean_ci(values: list[float] | np.ndarray, confidence: float = CONFIDENCE) -> Summary:
    """Mean and Student-t interval of the finite values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return NONE
    mean = float(x.mean())
    if len(x) == 1:
        return Summary(mean, math.nan, math.nan, 1)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Summary(mean, mean - half, mean + half, len(x))


def ratio_ci(numerators: list[float] | np.ndarray, denominators: list[float] | np.ndarray,
             confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP, seed: int = SEED) -> Summary:
    """sum(numerators) / sum(denominators) with a percentile-bootstrap interval over the pairs."""
    num, den = _per_clip(numerators, denominators)
    keep = _usable(num, den)
    num, den = num[keep], den[keep]
    if len(num) == 0:
        return NONE

    def ratio(picks: np.ndarray) -> np.ndarray:
        return num[picks].sum(axis=1) / den[picks].sum(axis=1)

    return _bootstrap(float(num.sum() / den.sum()), len(num), ratio, confidence, resamples, seed)


def paired_mean_ci(a: list[float] | np.ndarray, b: list[float] | np.ndarray,
                   confidence: float = CONFIDENCE) -> Summary:
    """Mean of the per-clip differences a − b (clips where both are finite) with its Student-t interval."""
    x, y = _per_clip(a, b)
    return mean_ci(x - y, confidence)  # NaN in either leaves the clip out


def paired_ratio_ci(numerators_a: list[float] | np.ndarray, denominators_a: list[float] | np.ndarray,
                    numerators_b: list[float] | np.ndarray, denominators_b: list[float] | np.ndarray,
                    confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP, seed: int = SEED) -> Summary:
    """sum(num_a)/sum(den_a) − sum(num_b)/sum(den_b) over the clips both have, with a percentile-bootstrap
    interval that resamples the same clips for both."""
    num_a, den_a, num_b, den_b = _per_clip(numerators_a, denominators_a, numerators_b, denominators_b)
    keep = _usable(num_a, den_a) & _usable(num_b, den_b)
    num_a, den_a, num_b, den_b = num_a[keep], den_a[keep], num_b[keep], den_b[keep]
    if len(num_a) == 0:
        return NONE

    def difference(picks: np.ndarray | slice) -> np.ndarray:
        return (num_a[picks].sum(axis=-1) / den_a[picks].sum(axis=-1)
                - num_b[picks].sum(axis=-1) / den_b[picks].sum(axis=-1))

    # slice(None): every clip once, the observed difference
    return _bootstrap(float(difference(slice(None))), len(num_a), difference, confidence, resamples, seed)


def _per_clip(*sequences: list[float] | np.ndarray) -> list[np.ndarray]:
    arrays = [np.asarray(x, dtype=np.float64) for x in sequences]
    shapes = [a.shape for a in arrays]
    if any(a.ndim != 1 for a in arrays) or len(set(shapes)) > 1:
        raise ValueError(f"expected 1-D per-clip sequences of one length, got shapes {shapes}")
    return arrays


def _usable(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.isfinite(num) & np.isfinite(den) & (den > 0)


def _bootstrap(value: float, n: int, statistic: Callable[[np.ndarray], np.ndarray], confidence: float,
               resamples: int, seed: int) -> Summary:
    """`value` with the percentile interval of `statistic` over resamples of the n clips' indices."""
    if n == 1:
        return Summary(value, math.nan, math.nan, 1)
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(statistic(picks), [tail, 100 - tail])
    return Summary(value, float(low), float(high), n)
