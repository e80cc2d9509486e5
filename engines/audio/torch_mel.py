"""The engines' log-mel in torch (twin of engines.audio.mel, parity-tested), and its inverse.

`LogMel` computes exactly what `engines.audio.mel.log_mel` computes (n_fft 640, periodic Hann window
640, hop 160, centred frames with reflect padding, 80 Slaney filters 20–8000 Hz, ln(max(x, 1e-5))), on
(..., samples) batches, differentiable, so training losses and the models see the same features the
data pipeline stores. The filterbank comes from the numpy module (plain numpy, no librosa).

`mel_to_linear` and `griffin_lim` turn a log-mel back into a waveform with no learned weights: the
zero-weight vocoder, and `GriffinLim` wraps them with the neural vocoders' interface (normalised mel
(B, 80, F) in, (B, 160 F) samples out).

Lengths: F mel frames ↔ 160 F samples (frame j is centred on sample 160 j), as `mel_for_frames` cuts
them: a clip of n video frames is 640 n samples and 4 n mel frames.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.audio import mel as ref

SAMPLE_RATE = ref.SAMPLE_RATE
N_FFT = ref.N_FFT
WIN = ref.WIN
HOP = ref.HOP
N_MELS = ref.N_MELS
LOG_FLOOR = ref.LOG_FLOOR
NORM_MIN = ref.NORM_MIN
NORM_SCALE = ref.NORM_SCALE


def normalize(log_mel: Tensor) -> Tensor:
    """ln-mel → model range: ln 1e-5 → −1, ln 1 → +1 (LipVoicer's `normalise_mel`)."""
    return (log_mel - NORM_MIN) / NORM_SCALE - 1.0


def denormalize(mel_norm: Tensor) -> Tensor:
    """The inverse of `normalize` (LipVoicer's `denormalise_mel`)."""
    return (mel_norm + 1.0) * NORM_SCALE + NORM_MIN


def _centre_pad(wav: Tensor, n_fft: int) -> Tensor:
    """(B, T) → (B, T + n_fft): reflect padding as librosa's centred STFT; zeros when too short to reflect
    (the numpy twin does the same, so very short inputs still agree)."""
    pad = n_fft // 2
    mode = "reflect" if wav.shape[-1] > pad else "constant"
    return F.pad(wav.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)


def stft(wav: Tensor, window: Tensor, n_fft: int = N_FFT, hop: int = HOP) -> Tensor:
    """Complex centred STFT (B, n_fft/2 + 1, 1 + T // hop) of (B, T) audio."""
    return torch.stft(_centre_pad(wav, n_fft), n_fft, hop, n_fft, window, center=False, return_complex=True)


def _batched(x: Tensor, feature_dims: int) -> tuple[Tensor, tuple[int, ...]]:
    """x flattened to one leading batch dim, and the leading shape to restore."""
    lead = x.shape[: x.dim() - feature_dims]
    return x.reshape(-1, *x.shape[x.dim() - feature_dims:]), lead


class LogMel(nn.Module):
    """(..., T) audio at 16 kHz → (..., 80, 1 + T // 160) natural-log mel magnitude.

    Buffers are not persistent: the conventions are fixed, so they never enter a checkpoint. The input
    is cast to the buffers' dtype (`.double()` the module for float64 features).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN, periodic=True), persistent=False)
        self.register_buffer("basis", torch.from_numpy(ref.mel_basis().copy()), persistent=False)

    def magnitude(self, wav: Tensor) -> Tensor:
        """(..., 321, 1 + T // 160) STFT magnitude."""
        flat, lead = _batched(wav, 1)
        mag = stft(flat.to(self.window.dtype), self.window).abs()
        return mag.reshape(*lead, *mag.shape[1:])

    def forward(self, wav: Tensor) -> Tensor:
        return torch.log(torch.clamp(self.basis @ self.magnitude(wav), min=LOG_FLOOR))


@cache
def _inverse_basis() -> tuple[Tensor, Tensor, float]:
    """The filterbank (80, 321), its pseudo-inverse (321, 80) and the step 1/‖B‖² that keeps projected
    gradient stable, in float64."""
    basis = ref.mel_basis().astype(np.float64)
    return (torch.from_numpy(basis), torch.from_numpy(np.linalg.pinv(basis)),
            1.0 / float(np.linalg.norm(basis, 2) ** 2))


def mel_to_linear(log_mel: Tensor, n_iter: int = 32) -> Tensor:
    """(..., 80, F) ln-mel → (..., 321, F) non-negative linear magnitude S with mel_basis @ S ≈ exp(mel).

    Non-negative least squares as librosa's `mel_to_stft`, solved by projected gradient from the
    clipped pseudo-inverse (n_iter steps; 0 gives the clipped pseudo-inverse alone).
    """
    basis, pinv, step = _inverse_basis()
    basis, target = basis.to(log_mel), torch.exp(log_mel)
    linear = torch.clamp(pinv.to(log_mel) @ target, min=0.0)
    for _ in range(n_iter):
        linear = torch.clamp(linear - step * (basis.T @ (basis @ linear - target)), min=0.0)
    return linear


def griffin_lim(log_mel: Tensor, n_iter: int = 32, *, length: int | None = None, momentum: float = 0.99,
                seed: int = 0) -> Tensor:
    """(..., 80, F) ln-mel → (..., length) audio, length 160 F by default.

    Fast Griffin-Lim (Perraudin et al., librosa's `griffinlim` with momentum 0.99) on the magnitude from
    `mel_to_linear`, starting from seeded random phases so the output is reproducible.
    """
    flat, lead = _batched(log_mel, 2)
    magnitude = mel_to_linear(flat)
    n_frames = magnitude.shape[-1]
    length = HOP * n_frames if length is None else length
    window = torch.hann_window(WIN, periodic=True, dtype=magnitude.dtype, device=magnitude.device)
    generator = torch.Generator(device=magnitude.device).manual_seed(seed)
    # one phase draw shared by the batch, so an item's audio does not depend on what it is batched with
    phase = torch.rand(magnitude.shape[-2:], generator=generator, dtype=magnitude.dtype,
                       device=magnitude.device)
    angles = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * phase.expand_as(magnitude))
    previous = torch.zeros_like(angles)

    def inverse(spec: Tensor) -> Tensor:
        return torch.istft(spec, N_FFT, HOP, WIN, window, center=True, length=length)

    for _ in range(n_iter):
        # `length` may hold fewer frames than the mel: keep the spectrogram's own frame count
        rebuilt = stft(inverse(magnitude * angles), window)[..., :n_frames]
        rebuilt = F.pad(rebuilt, (0, n_frames - rebuilt.shape[-1]))
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    audio = inverse(magnitude * angles)
    return audio.reshape(*lead, audio.shape[-1])


class GriffinLim(nn.Module):
    """The zero-weight vocoder with the neural vocoders' interface: normalised mel (B, 80, F) → (B, 160 F)."""

    def __init__(self, n_iter: int = 32) -> None:
        super().__init__()
        self.n_iter = n_iter

    def forward(self, mel_norm: Tensor) -> Tensor:
        return griffin_lim(denormalize(mel_norm), self.n_iter)
