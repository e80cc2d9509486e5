from __future__ import annotations

import math

import numpy as np
import pytest

from engines.eval.stats import mean_ci, paired_mean_ci, paired_ratio_ci, ratio_ci


def test_mean_ci_is_the_student_t_interval() -> None:
    s = mean_ci([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd 1.2910, t(0.975, 3) = 3.1824 → half width 2.0543
    assert s.value == 2.5 and s.n == 4
    assert math.isclose(s.half_width, 3.182446 * 1.290994 / 2, rel_tol=1e-5)
    assert math.isclose(s.low + s.high, 5.0)


def test_mean_ci_skips_missing_values_and_degenerate_sets() -> None:
    assert mean_ci([1.0, float("nan"), 3.0]).n == 2
    one = mean_ci([0.7])
    assert one.value == 0.7 and math.isnan(one.low) and math.isnan(one.half_width)
    none = mean_ci([float("nan")])
    assert none.n == 0 and math.isnan(none.value)
    assert none.as_dict() == {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    assert mean_ci([2.0, 2.0, 2.0]).half_width == 0.0


def test_ratio_ci_is_corpus_level_with_a_reproducible_bootstrap() -> None:
    errors, words = [0, 3, 1, 6], [6, 6, 6, 6]
    s = ratio_ci(errors, words)
    assert s.value == 10 / 24 and s.n == 4
    assert 0.0 <= s.low < s.value < s.high <= 1.0
    assert ratio_ci(errors, words) == s  # fixed seed
    assert ratio_ci(errors, words, seed=1).value == s.value


def test_ratio_ci_weights_clips_by_their_words() -> None:
    s = ratio_ci([1, 0], [1, 9])  # one error in ten words, though one clip is 100 % wrong
    assert s.value == 0.1
    assert ratio_ci([np.nan, 2], [6, 0]).n == 0  # no usable pair


def test_paired_difference_of_identical_systems_is_exactly_zero() -> None:
    errors, words = [0, 3, 1, 6, 2], [6, 7, 6, 9, 5]
    s = paired_ratio_ci(errors, words, errors, words)
    assert (s.value, s.low, s.high, s.n) == (0.0, 0.0, 0.0, 5)
    m = paired_mean_ci([0.2, 0.9, 0.5], [0.2, 0.9, 0.5])
    assert (m.value, m.half_width, m.n) == (0.0, 0.0, 3)


def test_a_system_better_on_every_clip_has_an_interval_below_zero() -> None:
    words = [6, 6, 6, 6, 6, 6]
    s = paired_ratio_ci([0, 1, 0, 2, 1, 0], words, [2, 2, 1, 4, 3, 2], words)
    assert s.value == pytest.approx(4 / 36 - 14 / 36)
    assert s.low <= s.value <= s.high < 0
    assert paired_ratio_ci([0, 1, 0, 2, 1, 0], words, [2, 2, 1, 4, 3, 2], words) == s  # fixed seed
    stoi_a = np.array([0.8, 0.9, 0.6, 0.7, 0.5, 0.75])
    m = paired_mean_ci(stoi_a, stoi_a - [0.1, 0.08, 0.12, 0.1, 0.09, 0.11])
    assert m.value == pytest.approx(0.1) and m.n == 6 and m.low > 0


def test_pairing_resolves_what_separate_intervals_cannot() -> None:
    """Clips range from easy to hopeless, and A makes one error fewer than B on each: the clip-to-clip
    spread swamps the gap in either row's own interval, but cancels in the per-clip difference."""
    rng = np.random.default_rng(1)
    words = rng.integers(5, 15, size=30)
    errors_b = np.minimum(words, rng.integers(1, 15, size=30))
    errors_a = errors_b - 1
    a, b = ratio_ci(errors_a, words), ratio_ci(errors_b, words)
    assert a.high > b.value and b.low < a.value  # each interval holds the other row's WER
    paired = paired_ratio_ci(errors_a, words, errors_b, words)
    assert paired.value == pytest.approx(a.value - b.value)
    assert paired.high < 0 and paired.half_width < a.half_width / 3
    quality_b = rng.uniform(0.2, 0.95, size=30)  # per-clip STOI: same story for a mean
    quality_a = quality_b + 0.02 + rng.normal(0, 0.005, size=30)
    assert mean_ci(quality_a).low < mean_ci(quality_b).value
    assert paired_mean_ci(quality_a, quality_b).low > 0


def test_paired_difference_counts_only_clips_both_systems_have() -> None:
    nan = float("nan")
    s = paired_ratio_ci([1, nan, 2, 0], [5, 5, 5, 5], [2, 1, nan, 1], [5, 5, 5, 0])
    assert s.n == 1 and s.value == -1 / 5 and math.isnan(s.half_width)  # only the first clip is in both
    m = paired_mean_ci([0.5, nan, 0.7, 0.9], [0.4, 0.3, nan, 0.6])
    assert m.n == 2 and m.value == pytest.approx(0.2)
    assert paired_mean_ci([nan], [1.0]).n == 0
    assert paired_ratio_ci([1], [0], [1], [4]).n == 0  # a clip with no reference words has no WER
    with pytest.raises(ValueError, match="one length"):
        paired_mean_ci([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="one length"):
        paired_ratio_ci([1, 2], [5, 5], [1, 2], [5])
