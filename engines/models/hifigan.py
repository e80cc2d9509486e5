"""HiFi-GAN generator (Kong et al. 2020, jik876/hifi-gan `models.Generator`), module for module.

The default `HiFiGANConfig` is the layout of LipVoicer's released 16 kHz vocoder (`g_02400000`, V1
size): upsample rates [2, 5, 4, 4] (product 160 = hop) with kernels [16, 15, 4, 4], 512 initial
channels, resblock "1" with kernels [3, 7, 11] and dilations [1, 3, 5]; its parameter names are the
original's, so `engines.importers.hifigan` only has to rename the weight-norm tensors.
`HiFiGANConfig.small()` is a V3-style variant (resblock "2", 256 channels, 3 upsamplers) for the CPU.

Input: like every vocoder here, the normalised mel (B, 80, F); the network itself sees the ln-mel
(LipVoicer denormalises before its vocoder), so released weights work unchanged. Output (B, 160 F).

Weight norm, as in the original, is `torch.nn.utils.parametrizations.weight_norm` (g = original0,
v = original1); `remove_weight_norm()` folds it into plain weights for inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from engines.audio.torch_mel import HOP, N_MELS, denormalize
from engines.params import param

LRELU_SLOPE = 0.1


@dataclass
class HiFiGANConfig:
    n_mels: int = param(N_MELS, "mel bins")
    upsample_rates: tuple[int, ...] = param((2, 5, 4, 4), "transposed-conv strides (product = hop 160)")
    upsample_kernel_sizes: tuple[int, ...] = param((16, 15, 4, 4), "transposed-conv kernels (k − rate even)")
    upsample_initial_channel: int = param(512, "channels after conv_pre (halved by each upsampler)")
    resblock: str = param("1", "residual block: '1' (2 convs per dilation) or '2' (1)", choices=("1", "2"))
    resblock_kernel_sizes: tuple[int, ...] = param((3, 7, 11), "kernels of the parallel residual blocks")
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = param(((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                                                                 "dilations of each residual block")

    @classmethod
    def small(cls) -> HiFiGANConfig:
        """V3-style (HiFi-GAN's CPU configuration) at hop 160: resblock 2, 256 channels, rates [8, 5, 4]."""
        return cls(upsample_rates=(8, 5, 4), upsample_kernel_sizes=(16, 11, 8), upsample_initial_channel=256,
                   resblock="2", resblock_kernel_sizes=(3, 5, 7),
                   resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)))


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _conv(channels: int, kernel: int, dilation: int) -> nn.Conv1d:
    conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=_padding(kernel, dilation))
    return _normed(conv)


def _normed(module: nn.Module) -> nn.Module:
    """Weight-normed module with the original's init (weights ~ N(0, 0.01) before normalisation)."""
    nn.init.normal_(module.weight, 0.0, 0.01)
    return weight_norm(module)


class ResBlock1(nn.Module):
    """Per dilation: leaky-ReLU → dilated conv → leaky-ReLU → conv, residual."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)
        self.convs2 = nn.ModuleList(_conv(channels, kernel, 1) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Per dilation: leaky-ReLU → dilated conv, residual."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(channels, kernel, d) for d in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGAN(nn.Module):
    """Normalised mel (B, 80, F) → waveform (B, 160 F) in [−1, 1] (module docstring)."""

    def __init__(self, config: HiFiGANConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or HiFiGANConfig()
        if (hop := math.prod(c.upsample_rates)) != HOP:
            raise ValueError(f"upsample rates {c.upsample_rates} multiply to {hop}, not {HOP}")
        if any((k - u) % 2 for k, u in zip(c.upsample_kernel_sizes, c.upsample_rates, strict=True)):
            raise ValueError("each upsample kernel − rate must be even for exact output lengths")
        block = ResBlock1 if c.resblock == "1" else ResBlock2
        ch = c.upsample_initial_channel
        self.conv_pre = _normed(nn.Conv1d(c.n_mels, ch, 7, padding=3))
        self.ups = nn.ModuleList(
            _normed(nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True)))
        self.resblocks = nn.ModuleList(
            block(ch // 2 ** (i + 1), k, tuple(d))
            for i in range(len(self.ups))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes, strict=True))
        self.conv_post = _normed(nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, padding=3))

    def forward(self, mel_norm: Tensor) -> Tensor:
        x = self.conv_pre(denormalize(mel_norm))
        n = len(self.config.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(block(x) for block in self.resblocks[i * n:(i + 1) * n]) / n
        # the original's last activation uses leaky_relu's default slope 0.01, not LRELU_SLOPE
        return torch.tanh(self.conv_post(F.leaky_relu(x))).squeeze(1)

    def remove_weight_norm(self) -> HiFiGAN:
        """Fold every weight norm into a plain weight (faster inference; training needs it kept)."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self
