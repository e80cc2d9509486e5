"""The engines' log-mel (ARCHITECTURE §4, LipVoicer's TacotronSTFT), in numpy.

16 kHz mono audio → STFT (n_fft 640, periodic Hann window of 640, hop 160: 100 frames/s; centred:
the signal is reflect-padded by 320 on both sides) → magnitude → 80 Slaney mel filters over 20–8000 Hz
(area-normalised, librosa's default `librosa.filters.mel`) → ln(max(x, 1e-5)).

Video alignment: a clip of n video frames at 25 fps is 640 n samples; `mel_for_frames` pads or cuts the
audio to exactly that and keeps the first 4 n STFT frames, so mel frame 4k..4k+3 belongs to video frame k
(the centred frame j is the 40 ms window around j × 10 ms).

Normalisation (LipVoicer's `normalise_mel`): y = (x − ln 1e-5) / (−ln 1e-5 / 2) − 1 maps the log floor
ln(1e-5) ≈ −11.51 to −1 and ln 1 = 0 to +1. Speech levelled to a peak of 1/1.1 (LipVoicer's
`audio / 1.1 / max|audio|`, `peak_normalise`) stays below +1 except in its loudest bins (measured: the
real GRID clips and our corpus reach +1.03 to +1.16 in 0.02–0.7 % of their bins), which are not
clipped (as in LipVoicer), so the released checkpoints see the values they were trained on.

A torch twin (with a parity test) belongs with the model code; this module stays numpy-only.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 640
WIN = 640
HOP = 160
N_MELS = 80
FMIN = 20.0
FMAX = 8000.0
LOG_FLOOR = 1e-5
VIDEO_FPS = 25.0
MELS_PER_FRAME = 4  # SAMPLE_RATE / HOP / VIDEO_FPS
SAMPLES_PER_FRAME = HOP * MELS_PER_FRAME
NORM_MIN = math.log(LOG_FLOOR)  # → −1
NORM_SCALE = -NORM_MIN / 2  # NORM_MIN + 2 NORM_SCALE = 0 → +1
PEAK = 1 / 1.1


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(hz < 1000.0, hz / (200.0 / 3), 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel < 15.0, mel * (200.0 / 3), 1000.0 * np.exp(log_step * (mel - 15.0)))


@cache
def mel_basis() -> np.ndarray:
    """(80, 321) float32 triangular filters, each scaled to unit area (Slaney normalisation)."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


@cache
def _window() -> np.ndarray:
    n = np.arange(WIN)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)).astype(np.float32)  # periodic Hann, as fftbins=True


def magnitude(audio: np.ndarray) -> np.ndarray:
    """(321, 1 + len // 160) STFT magnitude, centred frames (reflect padding)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio (samples,), got shape {x.shape}")
    pad = N_FFT // 2
    x = np.pad(x, pad, mode="reflect") if len(x) > pad else np.pad(x, pad)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * _window(), axis=1)).T.astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(80, 1 + len // 160) float32 natural-log mel magnitude of 16 kHz mono audio."""
    return np.log(np.maximum(mel_basis() @ magnitude(audio), LOG_FLOOR)).astype(np.float32)


def fit_to_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The audio cut or zero-padded to exactly n_frames video frames (640 samples each)."""
    want = n_frames * SAMPLES_PER_FRAME
    audio = np.asarray(audio, dtype=np.float32)
    return audio[:want] if len(audio) >= want else np.pad(audio, (0, want - len(audio)))


def mel_for_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(80, 4 n_frames) log-mel aligned to n_frames video frames at 25 fps (module docstring)."""
    return log_mel(fit_to_frames(audio, n_frames))[:, : MELS_PER_FRAME * n_frames]


def peak_normalise(audio: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """The audio scaled so its largest magnitude is `peak` (silence is returned unchanged)."""
    audio = np.asarray(audio, dtype=np.float32)
    top = float(np.abs(audio).max()) if audio.size else 0.0
    return audio if top == 0.0 else (audio * (peak / top)).astype(np.float32)


def normalise(log_mel_: np.ndarray) -> np.ndarray:
    """Log-mel → model range: ln 1e-5 → −1, 0 → +1 (module docstring)."""
    return ((np.asarray(log_mel_, dtype=np.float32) - NORM_MIN) / NORM_SCALE - 1.0).astype(np.float32)


def denormalise(normalised: np.ndarray) -> np.ndarray:
    """The inverse of `normalise`."""
    return ((np.asarray(normalised, dtype=np.float32) + 1.0) * NORM_SCALE + NORM_MIN).astype(np.float32)
