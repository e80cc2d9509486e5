"""The torch log-mel against the numpy one, its normalisation, and the zero-weight vocoder (Griffin-Lim)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.audio import mel
from engines.audio.torch_mel import GriffinLim, LogMel, denormalize, griffin_lim, mel_to_linear, normalize
from tests.helpers import SHARED

GRID_DEV = SHARED / "real" / "grid-dev"



def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Voiced stretches (harmonics of a gliding 100–220 Hz pitch), a noise burst, background noise and
    digital silence at the end; peak 1/1.1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    pitch = 100 + 120 * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30)) * (np.sin(2 * np.pi * 2 * t) > -0.3)
    noise = rng.standard_normal(t.size) * ((t > 0.4 * seconds) & (t < 0.5 * seconds))
    audio = voiced + 0.5 * noise + 1e-3 * rng.standard_normal(t.size)  # a recording's noise floor
    audio[t > 0.85 * seconds] = 0.0
    return mel.peak_normalise(audio.astype(np.float32))


def chirp(seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(16000 * seconds), dtype=torch.float32) / 16000
    return 0.5 * torch.sin(2 * np.pi * (200 * t + 0.5 * 1800 * t**2 / seconds))


def grid_audio() -> np.ndarray:
    clips = sorted(GRID_DEV.glob("*.mpg"))
    if not clips:
        pytest.skip(f"no GRID clips at {GRID_DEV}")
    from engines.eval.clips import read_audio

    return mel.peak_normalise(np.array(read_audio(clips[0])))


# ---------------------------------------------------------------- the mel


def test_log_mel_matches_the_numpy_mel_on_real_speech() -> None:
    audio = grid_audio()
    expected = mel.log_mel(audio)
    got = LogMel()(torch.from_numpy(audio)).numpy()
    assert got.shape == expected.shape == (80, 1 + len(audio) // 160)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("seconds", [1.0, 0.015])
def test_log_mel_matches_the_numpy_mel_on_synthetic_speech(seconds: float) -> None:
    audio = speech_like(seconds)
    expected = mel.log_mel(audio)
    got = LogMel()(torch.from_numpy(audio)).numpy()
    assert got.shape == expected.shape == (80, 1 + len(audio) // 160)
    assert_parity(got, expected)


def assert_parity(got: np.ndarray, expected: np.ndarray) -> None:
    """1e-4 on the ln-mel of bins above 1e-3; below, float32 rounding of the STFT (in the numpy
    reference as much as here: a float64 LogMel differs from it as much) moves the log of a quiet bin
    in a loud frame by up to a few 1e-4 (abrupt synthetic gating makes such bins; real speech did not)."""
    error = np.abs(got - expected)
    assert error[np.maximum(got, expected) > np.log(1e-3)].max() < 1e-4
    assert error.max() < 1e-3


def test_log_mel_batches_and_keeps_video_alignment() -> None:
    audio = np.stack([speech_like(0.96, seed) for seed in range(3)])  # 24 video frames each
    got = LogMel()(torch.from_numpy(audio).view(3, 1, -1))
    assert got.shape == (3, 1, 80, 97)
    for i in range(3):
        assert_parity(got[i, 0, :, :96].numpy(), mel.mel_for_frames(audio[i], 24))


def test_log_mel_is_differentiable_and_has_no_checkpoint_state() -> None:
    module = LogMel()
    assert module.state_dict() == {}
    audio = torch.from_numpy(speech_like(0.3)).requires_grad_()
    module(audio).sum().backward()
    assert torch.isfinite(audio.grad).all() and audio.grad.abs().sum() > 0


def test_normalization_matches_numpy_and_inverts() -> None:
    x = torch.tensor([np.log(1e-5), 0.0, -3.0, 1.5], dtype=torch.float32)
    assert torch.allclose(normalize(x)[:2], torch.tensor([-1.0, 1.0]))
    assert np.allclose(normalize(x).numpy(), mel.normalise(x.numpy()), atol=1e-6)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-5)


# ---------------------------------------------------------------- inverse and Griffin-Lim


def test_mel_to_linear_is_non_negative_and_reproduces_the_mel() -> None:
    log_mel = LogMel()(torch.from_numpy(speech_like()))
    linear = mel_to_linear(log_mel)
    assert linear.shape == (321, log_mel.shape[-1]) and (linear >= 0).all()
    basis = torch.from_numpy(mel.mel_basis().copy())
    target = torch.exp(log_mel)
    def error(linear: torch.Tensor) -> float:
        return (torch.linalg.norm(basis @ linear - target) / torch.linalg.norm(target)).item()

    assert error(linear) < 0.02
    assert error(linear) < error(mel_to_linear(log_mel, n_iter=0))  # the NNLS steps improve on the pinv


@pytest.mark.parametrize("signal", ["chirp", "sine"])
def test_griffin_lim_reconstructs_a_tone_with_high_spectral_convergence(signal: str) -> None:
    audio = chirp() if signal == "chirp" else 0.5 * torch.sin(2 * np.pi * 440 * torch.arange(16000) / 16000)
    logmel = LogMel()
    target = logmel(audio)[:, :100]  # 100 frames ↔ 16000 samples
    rebuilt = griffin_lim(target, n_iter=32)
    assert rebuilt.shape == (16000,)
    mags = torch.exp(logmel(rebuilt)[:, :100]), torch.exp(target)
    convergence = torch.linalg.norm(mags[0] - mags[1]) / torch.linalg.norm(mags[1])
    assert convergence < 0.15
    assert torch.equal(rebuilt, griffin_lim(target, n_iter=32))  # seeded: reproducible


def test_griffin_lim_module_takes_the_normalised_mel_in_batches() -> None:
    log_mel = LogMel()(torch.from_numpy(np.stack([speech_like(0.5, 1), speech_like(0.5, 2)])))[..., :50]
    out = GriffinLim(n_iter=4)(normalize(log_mel))
    assert out.shape == (2, 50 * 160)
    assert torch.allclose(out[1], griffin_lim(log_mel[1], n_iter=4), atol=1e-5)
