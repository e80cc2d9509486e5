"""PCM helpers: sample format conversion, channel mapping and a stateful stream resampler.

Frames are always shaped (frames, channels). Float audio is float32 in [-1, 1); integer audio is
S16LE int16. Conversions clip rather than wrap, so an overdriven float turns into a flat top, not
into a full-scale click of the opposite sign.
"""

from __future__ import annotations

import math

import numpy as np

_S16_SCALE = 32768.0


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 → float32 in [-1, 1) (exactly invertible by `to_int16`); float input is passed on as float32."""
    if samples.dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    if samples.dtype.kind != "i" or samples.dtype.itemsize != 2:
        raise TypeError(f"expected int16 or float samples, got {samples.dtype}")
    return samples.astype(np.float32) / np.float32(_S16_SCALE)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float → int16, rounded and clipped to the int16 range; int16 input is returned as it is."""
    if samples.dtype.kind == "i" and samples.dtype.itemsize == 2:
        return samples.astype(np.int16, copy=False)
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(_S16_SCALE))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def map_channels(frames: np.ndarray, channels: int) -> np.ndarray:
    """(n, N) → (n, M). Fewer channels: output channel k is the mean of the inputs i with i % M == k
    (stereo → mono is the average). More channels: output channel k copies input k % N (mono →
    stereo duplicates). Integer input is mixed in float and rounded back, so it keeps its dtype."""
    if frames.ndim != 2:
        raise ValueError(f"frames must be shaped (frames, channels), got {frames.shape}")
    have = frames.shape[1]
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if have == channels:
        return frames
    if channels > have:
        return frames[:, np.arange(channels) % have]
    mixed = np.zeros((frames.shape[0], channels), dtype=np.float32)
    counts = np.zeros(channels, dtype=np.float32)
    for i in range(have):
        mixed[:, i % channels] += frames[:, i]
        counts[i % channels] += 1
    mixed /= counts
    if frames.dtype.kind == "f":
        return mixed.astype(frames.dtype, copy=False)
    limits = np.iinfo(frames.dtype)
    return np.clip(np.rint(mixed), limits.min, limits.max).astype(frames.dtype)


class StreamResampler:
    """Band-limited resampling of a chunked stream (windowed-sinc interpolation, float32 frames).

    Output sample j sits exactly at input time j·in_rate/out_rate, kept as an integer fraction, so
    chunk boundaries neither click nor drift: the output of many chunks equals (to float rounding)
    the output of the same audio in one piece. The stream is time-aligned (no delay is added to the
    samples); `half` input samples of look-ahead are held back until the next chunk or `flush()`.
    After `flush()` the stream has produced exactly ceil(n_in · out_rate / in_rate) samples.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int, *, zero_crossings: int = 16,
                 rolloff: float = 0.945) -> None:
        if in_rate <= 0 or out_rate <= 0 or channels <= 0:
            raise ValueError("rates and channels must be positive")
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        g = math.gcd(in_rate, out_rate)
        self._up, self._down = out_rate // g, in_rate // g
        # Downsampling lowers the cutoff to the new Nyquist, and widens the kernel in proportion.
        self._cutoff = rolloff * min(1.0, out_rate / in_rate)
        self._half = math.ceil(zero_crossings / self._cutoff)
        self._taps = np.arange(2 * self._half)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk starts a new one."""
        # History primed with silence, so the first output sample has a full left context.
        self._buf = np.zeros((self._half, self.channels), dtype=np.float32)
        self._pos = self._half * self._up  # next output time, in 1/up input samples from _buf[0]

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next chunk, (n, channels) float32; returns what can be computed so far."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != self.channels:
            raise ValueError(f"expected (frames, {self.channels}) audio, got {chunk.shape}")
        if self.passthrough:
            return chunk
        self._buf = np.concatenate([self._buf, chunk])
        return self._run()

    def flush(self) -> np.ndarray:
        """The tail held back for look-ahead (the stream is taken to end in silence); then `reset()`."""
        if self.passthrough:
            self.reset()
            return np.zeros((0, self.channels), dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.zeros((self._half, self.channels), np.float32)])
        tail = self._run()
        self.reset()
        return tail

    def _run(self) -> np.ndarray:
        up, down, half = self._up, self._down, self._half
        n = self._buf.shape[0]
        # Output at time t uses inputs floor(t)-half+1 .. floor(t)+half: all must be present.
        room = (n - half) * up - self._pos
        count = (room + down - 1) // down if room > 0 else 0
        if count == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        times = self._pos + np.arange(count, dtype=np.int64) * down
        base = times // up
        first = base - half + 1
        # Distance from each output time to each tap, in input samples: in (-half, half].
        x = (base - first)[:, None] - self._taps[None, :] + ((times % up) / up)[:, None]
        c = self._cutoff
        window = 0.42 + 0.5 * np.cos(np.pi * x / half) + 0.08 * np.cos(2 * np.pi * x / half)  # Blackman
        weights = (np.sinc(c * x) * window).astype(np.float32)
        weights /= weights.sum(axis=1, keepdims=True)  # unit DC gain at every phase
        gathered = self._buf[first[:, None] + self._taps[None, :]]  # (count, taps, channels)
        out = np.einsum("mk,mkc->mc", weights, gathered)
        self._pos += count * down
        drop = self._pos // up - half + 1  # inputs no later output will touch
        if drop > 0:
            self._buf = self._buf[drop:]
            self._pos -= drop * up
        return out
