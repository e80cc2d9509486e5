"""Per-clip values → one figure with a 95 % confidence interval.

- A mean (STOI, DNSMOS, ...): Student-t interval over the clips that have a value (NaN = no value).
- A ratio of sums (corpus WER = all word errors / all reference words, as LipVoicer reports it):
  percentile bootstrap over clips (2000 resamples, fixed seed, so a report is reproducible).
One clip gives the value with no interval (NaN bounds).
"""

from __future__ import annotations

import math
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
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    keep = np.isfinite(num) & np.isfinite(den) & (den > 0)
    num, den = num[keep], den[keep]
    if len(num) == 0:
        return NONE
    value = float(num.sum() / den.sum())
    if len(num) == 1:
        return Summary(value, math.nan, math.nan, 1)
    picks = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    ratios = num[picks].sum(axis=1) / den[picks].sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Summary(value, float(low), float(high), len(num))
