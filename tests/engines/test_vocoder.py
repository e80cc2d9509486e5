"""The Vocos-style vocoder: lengths, declared receptive field, size, losses, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.audio.torch_mel import LogMel, normalize
from engines.models.vocoder import (
    Discriminator,
    DiscriminatorConfig,
    Vocoder,
    VocoderConfig,
    discriminator_loss,
    vocoder_losses,
)

TINY = VocoderConfig(dim=32, intermediate=64, n_blocks=3, lookahead=4)


def voiced(seconds: float, f0: float = 140.0) -> torch.Tensor:
    """A harmonic tone with a syllable-rate envelope, peak 1/1.1."""
    t = torch.arange(int(16000 * seconds), dtype=torch.float32) / 16000
    tone = sum(torch.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    audio = tone * (0.55 + 0.45 * torch.sin(2 * np.pi * 3 * t))
    return audio / audio.abs().max() / 1.1


@pytest.mark.parametrize("frames", [1, 2, 37, 100])
def test_vocoder_gives_160_samples_per_mel_frame(frames: int) -> None:
    wav = Vocoder().eval()(torch.randn(2, 80, frames))
    assert wav.shape == (2, 160 * frames) and torch.isfinite(wav).all()


def test_default_vocoder_is_under_5_mb() -> None:
    params = sum(p.numel() for p in Vocoder().parameters())
    assert params * 4 < 5e6


@pytest.mark.parametrize("lookahead", [0, 4, 12])
def test_receptive_field_is_exactly_what_is_declared(lookahead: int) -> None:
    torch.manual_seed(0)
    model = Vocoder(VocoderConfig(dim=32, intermediate=64, n_blocks=3, lookahead=lookahead))
    past, future = model.receptive_field()
    assert future == lookahead + 2  # the iSTFT window spans 2 frames each side
    mel = torch.randn(1, 80, 60, requires_grad=True)
    f = 30
    model(mel)[0, 160 * f:160 * (f + 1)].sum().backward()
    used = (mel.grad[0].abs().sum(0) > 0).nonzero().flatten()
    assert (used.min().item(), used.max().item()) == (f - past, f + future)


def test_impossible_lookahead_is_refused() -> None:
    with pytest.raises(ValueError, match="lookahead"):
        Vocoder(VocoderConfig(n_blocks=2, kernel=7, lookahead=10))


def test_losses_are_zero_for_identical_signals_and_positive_otherwise() -> None:
    logmel, target = LogMel(), voiced(0.4).expand(2, -1)
    same = vocoder_losses(target, target.clone(), logmel)
    assert set(same) == {"stft", "mel", "total"} and all(v.item() == 0.0 for v in same.values())
    other = vocoder_losses(0.5 * target + 0.01 * torch.randn_like(target), target, logmel)
    assert all(v.item() > 0 for v in other.values())
    with pytest.raises(ValueError, match="differ"):
        vocoder_losses(target[:, :-1], target, logmel)


def test_gan_terms_join_the_losses_when_a_discriminator_is_given() -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(DiscriminatorConfig(channels=8))
    target = voiced(0.3).expand(2, -1)
    pred = (0.8 * target).requires_grad_()
    losses = vocoder_losses(pred, target, LogMel(), discriminator)
    assert {"adv", "fm"} <= set(losses) and all(torch.isfinite(v) and v > 0 for v in losses.values())
    losses["total"].backward()
    assert pred.grad.abs().sum() > 0
    d_loss = discriminator_loss(discriminator, pred, target)
    assert d_loss > 0
    d_loss.backward()
    assert all(p.grad is not None for p in discriminator.parameters())


def test_a_few_steps_on_one_clip_reduce_the_loss() -> None:
    torch.manual_seed(0)
    logmel, model = LogMel(), Vocoder(TINY)
    target = voiced(0.3).unsqueeze(0)
    mel = normalize(logmel(target))[..., :30]
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        loss = vocoder_losses(model(mel), target, logmel)["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < 0.8 * history[0]
