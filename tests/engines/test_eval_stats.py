from __future__ import annotations

import math

import numpy as np

from engines.eval.stats import mean_ci, ratio_ci


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
