"""The identity encoder: the aligned face crop (B, 3, 112, 112) RGB in [0, 1] → a 128-d unit vector.

Computed once per session (or per clip) and joined to every frame of MelGen's condition, so the voice
does not hinge on a randomly chosen frame as in LipVoicer. Strided conv stages (GroupNorm, GELU),
average pooled, Linear, L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from engines.params import param

FACE_MEAN, FACE_STD = 0.5, 0.25  # centre the [0, 1] input; the GroupNorms do the rest


@dataclass(frozen=True)
class IdentityConfig:
    image_size: int = param(112, "face crop side in pixels")
    channels: tuple[int, ...] = param((16, 32, 64, 96, 128), "conv stage widths; each stage halves the crop")
    embed_dim: int = param(128, "embedding size E")

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))


class IdentityEncoder(nn.Module):
    def __init__(self, config: IdentityConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or IdentityConfig()
        layers, c_in = [], 3
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.cnn = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(c_in, config.embed_dim))

    def forward(self, face: Tensor) -> Tensor:
        """Unit identity embeddings (B, E) of face crops (B, 3, S, S) in [0, 1]."""
        s = self.config.image_size
        if face.ndim != 4 or face.shape[1:] != (3, s, s):
            raise ValueError(f"expected face crops (B, 3, {s}, {s}), got {tuple(face.shape)}")
        return F.normalize(self.cnn((face - FACE_MEAN) / FACE_STD), dim=1)
