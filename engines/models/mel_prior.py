"""The mel prior: the mel of phones read on the lips, in the face's voice.

MelGen on the lips alone renders words it cannot see well (GRID letters and digits) unintelligibly, even
where the lip reader read them right. The prior speaks phones instead: FastSpeech's decoder, the phones and
their durations taken from the lips (engines.models.aligner: the lip-read text's phones timed there, or each
step's most likely phone) rather than predicted:

    labels (B, F) per mel frame (engines.text.phones classes, 0 = silence) → Embedding → C
    identity (B, E) → Linear → C, added on every frame
    [gated residual Conv1d k, dilation d: h = (h + tanh(a) · σ(b)) · √½, (a, b) = conv(h)] for d in dilations
    → Conv1d 1×1 → tanh: the normalised log-mel (B, 80, F) in [−1, 1]

It is trained with L1 against the clip's mel (engines.train.recipes.prior); the synthesizer speaks its mel
as it is or has MelGen refine it from a middle diffusion step (SDEdit; engines.synth.engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from engines.params import param
from engines.text.phones import N_CLASSES


@dataclass(frozen=True)
class MelPriorConfig:
    classes: int = param(N_CLASSES, "phone classes (silence + engines.text.phones.PHONES)")
    identity_dim: int = param(128, "identity embedding size E")
    channels: int = param(160, "width C")
    kernel_size: int = param(5, "convolution kernel (odd)")
    dilations: tuple[int, ...] = param((1, 2, 4, 1, 2, 4, 1, 2), "dilation of each residual block")
    n_mels: int = param(80, "mel bins")
    lookahead_steps: int = param(-1, "steps of phones past a mel frame the stack may see (-1: as many as "
                                     "before it, centred convolutions); a stream has only its look-ahead's")

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(self.dilations))
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"dilations must be >= 1, got {self.dilations}")
        if self.lookahead_steps < -1:
            raise ValueError(f"lookahead_steps must be >= -1, got {self.lookahead_steps}")

    def pads(self) -> list[tuple[int, int]]:
        """(left, right) zero padding of each block: centred, or with the right side taken from the first
        blocks until `lookahead_steps` is spent."""
        half = [d * (self.kernel_size // 2) for d in self.dilations]
        if self.lookahead_steps < 0:
            return [(h, h) for h in half]
        left, out = self.lookahead_steps, []
        for h in half:
            right = min(h, left)
            left -= right
            out.append((2 * h - right, right))
        return out


class MelPrior(nn.Module):
    def __init__(self, config: MelPriorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MelPriorConfig()
        self.embed = nn.Embedding(c.classes, c.channels)
        self.identity = nn.Linear(c.identity_dim, c.channels)
        self.blocks = nn.ModuleList(nn.Conv1d(c.channels, 2 * c.channels, c.kernel_size, dilation=d)
                                    for d in c.dilations)
        self.pads = c.pads()
        self.out = nn.Conv1d(c.channels, c.n_mels, 1)

    def receptive_field(self) -> tuple[int, int]:
        """(past, future) steps of phones one mel frame depends on."""
        return sum(left for left, _ in self.pads), sum(right for _, right in self.pads)

    def forward(self, labels: Tensor, identity: Tensor) -> Tensor:
        """labels (B, F) long, identity (B, E) → normalised mel (B, n_mels, F)."""
        h = (self.embed(labels) + self.identity(identity)[:, None]).transpose(1, 2)
        for block, pad in zip(self.blocks, self.pads, strict=True):
            a, b = block(F.pad(h, pad)).chunk(2, dim=1)
            h = (h + a.tanh() * b.sigmoid()) * math.sqrt(0.5)
        return self.out(h).tanh()
