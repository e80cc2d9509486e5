"""The causal One Euro filter: less jitter, bounded lag, irregular frame times, no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.face.smoothing import OneEuroFilter, OneEuroParams, jitter, smooth_sequence


def _irregular_times(n: int, fps: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.uniform(0.5, 1.5, n) / fps)


def test_reduces_jitter_on_a_noisy_constant() -> None:
    rng = np.random.default_rng(0)
    times = _irregular_times(300, 30)
    # Landmarks of a still face whose eyes are 100 px apart, jittering by 1 px.
    noisy = 100 + rng.normal(0, 1.0, (300, 478, 3)).astype(np.float32)
    out = smooth_sequence(noisy, times, scales=np.full(len(times), 100.0))
    assert out.shape == noisy.shape and out.dtype == np.float32
    settled = out[60:]
    assert settled.std(axis=0).mean() < 0.5 * noisy[60:].std(axis=0).mean()
    assert abs(settled.mean() - 100) < 0.1


@pytest.mark.parametrize("speed", [0.5, 2.0, 10.0])
def test_follows_a_ramp_with_bounded_lag(speed: float) -> None:
    params = OneEuroParams()
    times = _irregular_times(400, 25, seed=1)
    ramp = speed * times[:, None]
    out = smooth_sequence(ramp, times, params)
    lag = ramp[-100:, 0] - out[-100:, 0]
    # First-order low-pass at cutoff fc lags a ramp by speed / (2 pi fc), and fc >= min_cutoff + beta * speed
    # up to the speed estimate's own smoothing, which has settled by now.
    bound = speed / (2 * math.pi * (params.min_cutoff + params.beta * speed))
    assert (lag > 0).all()  # causal: it can only trail
    assert lag.max() < 1.2 * bound
    assert lag.max() < 1.2 / (2 * math.pi * params.beta)  # never more than this, however fast
    slow = smooth_sequence(ramp, times, OneEuroParams(beta=0.0))
    assert (ramp[-1, 0] - slow[-1, 0]) > 2 * lag[-1]  # beta is what keeps the lag down


def test_scale_makes_beta_size_free() -> None:
    times = _irregular_times(200, 25, seed=2)
    track = np.sin(2 * math.pi * 0.7 * times)[:, None]
    small = smooth_sequence(track, times, scales=np.ones(len(times)))
    big = smooth_sequence(track * 40, times, scales=np.full(len(times), 40.0))
    np.testing.assert_allclose(big / 40, small, atol=1e-9)


def test_output_never_depends_on_later_input() -> None:
    rng = np.random.default_rng(3)
    times = _irregular_times(120, 30, seed=3)
    first = rng.normal(size=(120, 5))
    second = first.copy()
    second[60:] = rng.normal(size=(60, 5)) * 50  # a different future
    a = smooth_sequence(first, times)
    b = smooth_sequence(second, times)
    np.testing.assert_array_equal(a[:60], b[:60])
    assert not np.allclose(a[60:], b[60:])


def test_frame_times_not_the_frame_count_set_the_smoothing() -> None:
    params = OneEuroParams(beta=0.0)  # a plain low-pass: its step response depends on time only
    results = []
    for fps in (15, 30, 60):
        times = np.arange(1, int(2 * fps) + 1) / fps
        step = (times >= 1.0).astype(np.float64)[:, None]
        out = smooth_sequence(step, times, params)
        results.append(float(np.interp(1.3, times, out[:, 0])))
    expected = 1 - math.exp(-2 * math.pi * params.min_cutoff * 0.3)
    for value in results:
        assert value == pytest.approx(expected, abs=0.06)


def test_first_sample_passes_and_reset_forgets() -> None:
    filt = OneEuroFilter()
    assert not filt.started
    np.testing.assert_array_equal(filt.update(np.array([3.0, 4.0]), 0.0), [3.0, 4.0])
    moved = filt.update(np.array([10.0, 10.0]), 0.04)
    assert (moved < 10).all() and (moved > [3, 4]).all()
    filt.reset()
    np.testing.assert_array_equal(filt.update(np.array([10.0, 10.0]), 0.08), [10.0, 10.0])


def test_repeated_or_backward_times_keep_the_last_output() -> None:
    filt = OneEuroFilter()
    filt.update(np.zeros(3), 1.0)
    last = filt.update(np.ones(3), 1.04)
    for t in (1.04, 0.5):
        np.testing.assert_array_equal(filt.update(np.full(3, 99.0), t), last)
    assert (filt.update(np.full(3, 2.0), 1.08) < 2.0).all()  # and carries on from where it was


def test_bad_inputs_and_parameters_are_value_errors() -> None:
    filt = OneEuroFilter()
    filt.update(np.zeros((478, 3)), 0.0)
    with pytest.raises(ValueError, match="shape"):
        filt.update(np.zeros((468, 3)), 0.1)
    for bad in ({"min_cutoff": 0.0}, {"beta": -1.0}, {"d_cutoff": math.nan}):
        with pytest.raises(ValueError):
            OneEuroParams(**bad)
    for t, scale in ((math.nan, 1.0), (0.2, 0.0)):
        with pytest.raises(ValueError):
            filt.update(np.zeros((478, 3)), t, scale)


def test_params_carry_help_for_a_node() -> None:
    from dataclasses import fields

    for f in fields(OneEuroParams):
        assert f.metadata["help"]


def test_jitter_measures_fast_motion_only() -> None:
    t = np.arange(100, dtype=np.float64)
    slow = np.c_[0.5 * t, 10 * np.sin(t / 30)]
    assert jitter(slow) < 0.05
    shaky = slow + np.c_[np.where(t % 2 == 0, 1.0, -1.0), np.zeros_like(t)]
    assert jitter(shaky) == pytest.approx(2 * 8 / 9, rel=0.05)  # +-1 alternation, less what the average keeps
    assert jitter(np.zeros((1, 2))) == 0.0
    with pytest.raises(ValueError):
        jitter(np.zeros(5))
