"""Noisy copies of clean speech: babble, machine noise, reverberation.

The clean utterance stays the training target; these are the inputs a robust model learns from.
All noise is made here from random numbers (no recordings), so a copy depends only on the generator:
- babble: 3 to 6 other utterances (`babble_sources`), each at a random offset (looped to length) and
  at the same active level, summed;
- machine: coloured noise (power spectrum ∝ 1/f^β, β in [0, 2]) plus mains-like hum (a fundamental of
  40 to 120 Hz and its decaying harmonics), slowly amplitude-modulated as engines and fans are;
- reverb: the speech convolved with a synthetic room impulse response (a direct path, then
  exponentially decaying Gaussian noise, RT60 0.2 to 0.8 s, direct-to-reverberant ratio 0 to 10 dB);
  `snr_db` then adds machine noise, or none when it is None.
The SNR is exact over the active part of the clean speech (speech.active_mask): the noise power is
measured on the same samples as the speech power. A mix that would clip is scaled down as a whole.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.signal import fftconvolve

from engines.data.speech import SAMPLE_RATE, active_mask

Kind = Literal["babble", "machine", "reverb"]
KINDS: tuple[str, ...] = ("babble", "machine", "reverb")
PEAK = 0.99


def noisy_copy(audio: np.ndarray, kind: Kind, rng: np.random.Generator, snr_db: float | None,
               babble_sources: list[np.ndarray] | None = None) -> np.ndarray:
    """`audio` (float32, 16 kHz) with `kind` noise at `snr_db` over its active part (see the docstring)."""
    audio = np.asarray(audio, np.float32)
    mask = active_mask(audio)
    if not mask.any():
        raise ValueError("noisy_copy needs speech: the audio is silent")
    if kind == "babble":
        speech, noise = audio, babble(len(audio), rng, babble_sources or [])
    elif kind == "machine":
        speech, noise = audio, machine_noise(len(audio), rng)
    elif kind == "reverb":
        speech = reverberate(audio, rng)
        noise = machine_noise(len(audio), rng) if snr_db is not None else None
    else:
        raise ValueError(f"unknown noise kind {kind!r} (known: {', '.join(KINDS)})")
    if noise is None:
        mix = speech
    elif snr_db is None:
        raise ValueError(f"{kind} noise needs snr_db")
    else:
        mix = speech + scale_to_snr(speech, noise, mask, snr_db)
    peak = float(np.max(np.abs(mix)))
    return (mix * (PEAK / peak if peak > PEAK else 1.0)).astype(np.float32)


def snr_db(speech: np.ndarray, noise: np.ndarray, mask: np.ndarray) -> float:
    """SNR of `speech` over `noise`, both measured on the samples where `mask` is true."""
    return float(10 * np.log10(_power(speech[mask]) / _power(noise[mask])))


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, mask: np.ndarray, target_db: float) -> np.ndarray:
    """`noise` scaled so that snr_db(speech, noise, mask) == target_db."""
    power = _power(noise[mask])
    if power == 0:
        raise ValueError("the noise is silent where the speech is active")
    gain = np.sqrt(_power(speech[mask]) / (power * 10 ** (target_db / 10)))
    return (noise * gain).astype(np.float32)


def babble(n: int, rng: np.random.Generator, sources: list[np.ndarray]) -> np.ndarray:
    """3 to 6 of `sources` (other utterances), each at a random offset, looped to `n` samples, summed."""
    if len(sources) < 3:
        raise ValueError(f"babble needs at least 3 other utterances, got {len(sources)}")
    count = int(rng.integers(3, min(6, len(sources)) + 1))
    out = np.zeros(n, np.float64)
    for index in rng.choice(len(sources), count, replace=False):
        source = np.asarray(sources[index], np.float64)
        level = np.sqrt(_power(source[active_mask(source)])) if active_mask(source).any() else 0.0
        if level == 0:
            continue
        looped = np.resize(np.roll(source, -int(rng.integers(len(source)))), n)
        out += looped / level
    return out.astype(np.float32)


def machine_noise(n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Coloured noise + hum harmonics, amplitude-modulated; unit-free (scale_to_snr sets its level)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    beta = rng.uniform(0.0, 2.0)
    spectrum *= np.maximum(freqs, 20.0) ** (-beta / 2)
    coloured = np.fft.irfft(spectrum, n)
    coloured /= np.sqrt(_power(coloured)) or 1.0
    t = np.arange(n) / sample_rate
    fundamental = rng.uniform(40.0, 120.0)
    hum = sum(rng.uniform(0.5, 1.0) / k * np.sin(2 * np.pi * k * fundamental * t + rng.uniform(0, 2 * np.pi))
              for k in range(1, int(rng.integers(3, 9)) + 1))
    hum /= np.sqrt(_power(hum)) or 1.0
    rate_hz, phase = rng.uniform(0.5, 8.0), rng.uniform(0, 2 * np.pi)
    modulation = 1 + rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rate_hz * t + phase)
    mix = (coloured + rng.uniform(0.3, 1.5) * hum) * modulation
    return mix.astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60_s: float | None = None,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: direct path 1 at time 0, then, after a 2 to 10 ms gap, noise
    decaying 60 dB over `rt60_s` (uniform in [0.2, 0.8] s when None) whose energy is 0 to 10 dB below
    the direct path's (the direct-to-reverberant ratio of a talker a metre or two away)."""
    rt60 = rng.uniform(0.2, 0.8) if rt60_s is None else rt60_s
    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)   # ln(1000) = 6.908: -60 dB at rt60
    tail[: int(rng.uniform(0.002, 0.01) * sample_rate)] = 0.0
    tail *= np.sqrt(10 ** (-rng.uniform(0.0, 10.0) / 10) / np.sum(tail**2))
    tail[0] = 1.0
    return tail


def reverberate(audio: np.ndarray, rng: np.random.Generator, rt60_s: float | None = None) -> np.ndarray:
    """`audio` in a synthetic room (direct path at time 0, so it stays aligned), at its active level."""
    wet = fftconvolve(audio.astype(np.float64), room_impulse(rng, rt60_s))[: len(audio)]
    mask = active_mask(audio)
    gain = np.sqrt(_power(audio[mask]) / _power(wet[mask])) if mask.any() else 1.0
    return (wet * gain).astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0
