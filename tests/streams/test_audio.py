"""PCM helpers: format conversion, channel mapping, and the chunked stream resampler."""

from __future__ import annotations

import numpy as np
import pytest

from streams.audio import StreamResampler, map_channels, to_float32, to_int16

RATE_PAIRS = [(8000, 16000), (48000, 16000), (44100, 16000), (22050, 16000), (11025, 16000),
              (16000, 48000), (16000, 16000)]


def _sine(hz: float, rate: int, n: int, channels: int = 1) -> np.ndarray:
    t = np.arange(n) / rate
    waves = [0.5 * np.sin(2 * np.pi * hz * t + c) for c in range(channels)]
    return np.stack(waves, axis=1).astype(np.float32)


def _chunked(r: StreamResampler, x: np.ndarray, rng: np.random.Generator, most: int = 700) -> np.ndarray:
    parts, i = [], 0
    while i < x.shape[0]:
        k = int(rng.integers(0, most))  # zero-length chunks included
        parts.append(r.process(x[i:i + k]))
        i += k
    parts.append(r.flush())
    return np.concatenate(parts)


def test_int16_float_round_trip_is_exact() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16).reshape(-1, 1)
    f = to_float32(every)
    assert f.dtype == np.float32 and f.min() == -1.0 and f.max() < 1.0
    assert np.array_equal(to_int16(f), every)


def test_float_to_int16_clips_instead_of_wrapping() -> None:
    f = np.array([[1.5], [1.0], [-1.0], [-7.0], [0.25], [-0.5]], dtype=np.float32)
    assert to_int16(f)[:, 0].tolist() == [32767, 32767, -32768, -32768, 8192, -16384]


def test_to_float32_rejects_other_integer_types() -> None:
    with pytest.raises(TypeError):
        to_float32(np.zeros((4, 1), np.int32))


def test_channel_mapping() -> None:
    mono = np.array([[1.0], [-0.5]], np.float32)
    assert np.array_equal(map_channels(mono, 2), [[1.0, 1.0], [-0.5, -0.5]])
    stereo = np.array([[1.0, 0.0], [0.5, -0.5]], np.float32)
    assert np.array_equal(map_channels(stereo, 1), [[0.5], [0.0]])
    three = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert np.array_equal(map_channels(three, 2), [[2.0, 2.0]])  # (ch0 + ch2) / 2, ch1
    assert np.array_equal(map_channels(stereo, 5), stereo[:, [0, 1, 0, 1, 0]])
    assert map_channels(stereo, 2) is stereo
    ints = np.array([[32767, 32767], [-32768, -32767]], np.int16)
    mixed = map_channels(ints, 1)
    assert mixed.dtype == np.int16 and mixed[:, 0].tolist() == [32767, -32768]


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_chunked_equals_whole_and_lengths_add_up(in_rate: int, out_rate: int) -> None:
    rng = np.random.default_rng(in_rate + out_rate)
    n = 9001
    x = _sine(440.0, in_rate, n, channels=2)
    r = StreamResampler(in_rate, out_rate, 2)
    whole = np.concatenate([r.process(x), r.flush()])
    chunked = _chunked(r, x, rng)  # the same resampler, reused after flush(): a new stream
    expected = -(-n * out_rate // in_rate)
    assert whole.shape == chunked.shape == (expected, 2)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_resampled_sine_is_the_same_sine_at_the_new_rate(in_rate: int, out_rate: int) -> None:
    hz = 1000.0
    out = _chunked(StreamResampler(in_rate, out_rate, 2), _sine(hz, in_rate, 8000, 2),
                   np.random.default_rng(1))
    ideal = _sine(hz, out_rate, out.shape[0], 2)
    edge = 64  # the stream starts and ends in silence, so the very ends are tapered
    np.testing.assert_allclose(out[edge:-edge], ideal[edge:-edge], atol=2e-3)


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    # 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz; the anti-alias filter must remove it.
    r = StreamResampler(48000, 16000, 1)
    out = np.concatenate([r.process(_sine(12000.0, 48000, 48000)), r.flush()])
    assert np.abs(out[200:-200]).max() < 0.5 * 1e-3


def test_unit_gain_for_a_constant() -> None:
    r = StreamResampler(22050, 16000, 1)
    out = r.process(np.full((5000, 1), 0.25, np.float32))
    np.testing.assert_allclose(out[100:], 0.25, atol=1e-5)


def test_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError):
        StreamResampler(8000, 16000, 2).process(np.zeros((10, 1), np.float32))
