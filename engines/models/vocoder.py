"""The default neural vocoder: a small Vocos (Siuzdak 2023) at the mel frame rate.

Normalised mel (B, 80, F) → 1-D conv embedding → ConvNeXt blocks, all at 100 frames/s → per frame a
log-magnitude (clamped, exp) and a phase angle (cos/sin) for the n_fft 640 spectrum → iSTFT with hop
160 → (B, 160 F) samples. All the work happens once per 10 ms frame and the upsampling is the iSTFT,
which is why it is far cheaper on a CPU than HiFi-GAN's transposed convolutions at sample rate.

Streaming: the convolutions look at most `lookahead` frames ahead (the rest of each kernel looks back),
so `receptive_field()` is small and declared, and a windowed caller knows how many frames of context
make a window's inner samples exact.

Training: `vocoder_losses` (multi-resolution STFT + mel L1, plus adversarial and feature-matching
terms when given a `Discriminator`, HiFi-GAN's small multi-period + multi-scale pair, off by default)
and `discriminator_loss` for the discriminator's own step.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from engines.audio.torch_mel import HOP, N_FFT, N_MELS, LogMel, stft
from engines.params import param


@dataclass
class VocoderConfig:
    n_mels: int = param(N_MELS, "mel bins of the (normalised) input")
    dim: int = param(160, "channels of the ConvNeXt stack")
    intermediate: int = param(480, "hidden width of each ConvNeXt block's pointwise MLP")
    n_blocks: int = param(6, "ConvNeXt blocks")
    kernel: int = param(7, "depthwise kernel, in mel frames (odd)")
    lookahead: int = param(6, "future mel frames the convolutions may see, in total (the rest look back)")
    n_fft: int = param(N_FFT, "FFT size of the synthesised spectrum (the mel's: 640)")
    hop: int = param(HOP, "samples per mel frame (the mel's: 160)")
    max_log_magnitude: float = param(7.0, "log-magnitudes are clamped here before exp (about 1100)")


def _split_lookahead(kernel: int, n_convs: int, lookahead: int) -> list[int]:
    """Right padding of each conv: as centred as the look-ahead budget allows, spent from the input side."""
    rights, left = [], lookahead
    for _ in range(n_convs):
        rights.append(min((kernel - 1) // 2, left))
        left -= rights[-1]
    return rights


class ConvNeXtBlock(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, residual; asymmetric padding."""

    def __init__(self, dim: int, intermediate: int, kernel: int, right: int, layer_scale: float) -> None:
        super().__init__()
        self.pad = (kernel - 1 - right, right)
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(F.pad(x, self.pad)).transpose(1, 2)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.transpose(1, 2)


class Vocoder(nn.Module):
    """Normalised mel (B, 80, F) → waveform (B, hop · F) (module docstring)."""

    def __init__(self, config: VocoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or VocoderConfig()
        most = (c.n_blocks + 1) * (c.kernel - 1) // 2
        if c.kernel % 2 == 0 or not 0 <= c.lookahead <= most:
            raise ValueError(f"need an odd kernel and 0 ≤ lookahead ≤ {most}, got {c.kernel}, {c.lookahead}")
        rights = _split_lookahead(c.kernel, c.n_blocks + 1, c.lookahead)
        self.embed_pad = (c.kernel - 1 - rights[0], rights[0])
        self.embed = nn.Conv1d(c.n_mels, c.dim, c.kernel)
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(c.dim, c.intermediate, c.kernel, r, 1.0 / c.n_blocks)
                                    for r in rights[1:])
        self.final_norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.head = nn.Linear(c.dim, c.n_fft + 2)  # n_fft/2 + 1 log-magnitudes and as many phases
        self.register_buffer("window", torch.hann_window(c.n_fft, periodic=True), persistent=False)
        self.apply(_init)

    def receptive_field(self) -> tuple[int, int]:
        """(past, future): the mel frames before and after frame f that the samples [hop f, hop (f+1))
        depend on: the convolutions' context plus the iSTFT's overlap (window 640 = 4 hops)."""
        c = self.config
        convs = (c.n_blocks + 1) * (c.kernel - 1)
        overlap = c.n_fft // c.hop // 2
        return convs - c.lookahead + overlap - 1, c.lookahead + overlap

    def spectrum_parts(self, mel_norm: Tensor) -> tuple[Tensor, Tensor]:
        """Real and imaginary parts (B, n_fft/2 + 1, F) of the spectrum the network predicts (apart, for
        exporters without complex tensors)."""
        x = self.embed(F.pad(mel_norm, self.embed_pad))
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        log_magnitude, phase = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        magnitude = torch.exp(torch.clamp(log_magnitude, max=self.config.max_log_magnitude))
        return magnitude * torch.cos(phase), magnitude * torch.sin(phase)

    def spectrum(self, mel_norm: Tensor) -> Tensor:
        """(B, n_fft/2 + 1, F) complex spectrum the network predicts."""
        return torch.complex(*self.spectrum_parts(mel_norm))

    def forward(self, mel_norm: Tensor) -> Tensor:
        c = self.config
        return torch.istft(self.spectrum(mel_norm), c.n_fft, c.hop, c.n_fft, self.window, center=True,
                           length=c.hop * mel_norm.shape[-1])


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv1d | nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------- training losses

# (n_fft, hop) pairs around the mel's 640/160, window = n_fft: short ones see transients, long ones pitch
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((320, 80), (640, 160), (1280, 320))


def multi_resolution_stft_loss(pred: Tensor, target: Tensor,
                               resolutions: Sequence[tuple[int, int]] = STFT_RESOLUTIONS) -> Tensor:
    """Spectral convergence + log-magnitude L1 (Parallel WaveGAN), averaged over resolutions."""
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, periodic=True, dtype=pred.dtype, device=pred.device)
        # |X| through a clamped power: abs() has an undefined gradient at exact zeros
        mags = [torch.sqrt(torch.clamp(stft(x, window, n_fft, hop).abs().square(), min=1e-9))
                for x in (pred, target)]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.clamp(torch.linalg.norm(mags[1]), min=1e-9)
        total = total + convergence + F.l1_loss(torch.log(mags[0]), torch.log(mags[1]))
    return total / len(resolutions)


def vocoder_losses(pred_wav: Tensor, target_wav: Tensor, logmel: LogMel,
                   discriminator: Discriminator | None = None, *, stft_weight: float = 1.0,
                   mel_weight: float = 1.0, adv_weight: float = 1 / 45, fm_weight: float = 2 / 45,
                   resolutions: Sequence[tuple[int, int]] = STFT_RESOLUTIONS) -> dict[str, Tensor]:
    """The generator's losses on (B, T) waveforms: {"stft", "mel", ["adv", "fm"], "total"}.

    The default GAN weights are HiFi-GAN's (mel 45 : adversarial 1 : feature matching 2) rescaled so the
    mel term weighs 1. Without a discriminator every term is zero for identical signals.
    """
    if pred_wav.shape != target_wav.shape:
        raise ValueError(f"prediction {tuple(pred_wav.shape)} and target {tuple(target_wav.shape)} differ")
    losses = {"stft": multi_resolution_stft_loss(pred_wav, target_wav, resolutions),
              "mel": F.l1_loss(logmel(pred_wav), logmel(target_wav))}
    total = stft_weight * losses["stft"] + mel_weight * losses["mel"]
    if discriminator is not None:
        fake_logits, fake_features = discriminator(pred_wav)
        with torch.no_grad():
            _, real_features = discriminator(target_wav)
        losses["adv"] = sum(torch.mean((1 - logits) ** 2) for logits in fake_logits)
        pairs = zip(fake_features, real_features, strict=True)
        losses["fm"] = sum(F.l1_loss(fake, real) for fakes, reals in pairs
                           for fake, real in zip(fakes, reals, strict=True))
        total = total + adv_weight * losses["adv"] + fm_weight * losses["fm"]
    losses["total"] = total
    return losses


# ---------------------------------------------------------------- optional GAN discriminator


@dataclass
class DiscriminatorConfig:
    periods: tuple[int, ...] = param((2, 3, 5, 7, 11), "periods of the multi-period sub-discriminators")
    n_scales: int = param(3, "multi-scale sub-discriminators (each on the signal average-pooled ×2 more)")
    channels: int = param(16, "first layer's channels, ×2 per layer up to ×8 (a multiple of 4; HiFi-GAN: 32)")


class _PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int) -> None:
        super().__init__()
        self.period = period
        widths = [1, channels, 2 * channels, 4 * channels, 8 * channels]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3 if i < 3 else 1, 1), padding=(2, 0)))
            for i, (a, b) in enumerate(itertools.pairwise(widths)))
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        pad = -wav.shape[-1] % self.period
        x = F.pad(wav.unsqueeze(1), (0, pad), mode="reflect")
        return _judge(x.view(x.shape[0], 1, -1, self.period), self.convs, self.post)


def _judge(x: Tensor, convs: nn.ModuleList, post: nn.Module) -> tuple[Tensor, list[Tensor]]:
    """A sub-discriminator's conv stack: its logits (B, ·) and every layer's output, for the feature loss."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class _ScaleDiscriminator(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels
        layers = [(1, c, 15, 1, 1), (c, 2 * c, 41, 4, 4), (2 * c, 4 * c, 41, 4, 4), (4 * c, 8 * c, 41, 4, 4),
                  (8 * c, 8 * c, 5, 1, 1)]
        self.convs = nn.ModuleList(weight_norm(nn.Conv1d(a, b, k, s, groups=g, padding=k // 2))
                                   for a, b, k, s, g in layers)
        self.post = weight_norm(nn.Conv1d(8 * c, 1, 3, padding=1))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _judge(wav.unsqueeze(1), self.convs, self.post)


class Discriminator(nn.Module):
    """HiFi-GAN's multi-period + multi-scale discriminators, small: wav (B, T) → (logits, features)
    lists with one entry per sub-discriminator."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DiscriminatorConfig()
        self.periods = nn.ModuleList(_PeriodDiscriminator(p, c.channels) for p in c.periods)
        self.scales = nn.ModuleList(_ScaleDiscriminator(c.channels) for _ in range(c.n_scales))

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        outputs = [d(wav) for d in self.periods]
        for i, d in enumerate(self.scales):
            outputs.append(d(wav if i == 0 else F.avg_pool1d(wav.unsqueeze(1), 2 ** i, 2 ** i).squeeze(1)))
        return [logits for logits, _ in outputs], [features for _, features in outputs]


def discriminator_loss(discriminator: Discriminator, pred_wav: Tensor, target_wav: Tensor) -> Tensor:
    """Least-squares GAN loss of the discriminator: real → 1, generated (detached) → 0."""
    real, _ = discriminator(target_wav)
    fake, _ = discriminator(pred_wav.detach())
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f ** 2) for r, f in zip(real, fake, strict=True))

