"""Training augmentations of a clip's lip inputs (TorchSamples items), drawn once per clip so every frame
of it changes alike, as a new speaker or camera would change it.

Why: ten training faces are too few; a lip reader trained on them plain reads its training speakers far
better than unseen ones, and the unseen ones differ first in what these change: skin brightness and
contrast under other light, where and how large the mouth sits in the ROI, and the size of the lips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engines.face.align import ROI_MEAN, ROI_STD
from engines.params import param


@dataclass(frozen=True)
class LipAugment:
    gain: float = param(0.0, "scale the ROI's contrast about its mean by a factor in [1/(1+g), 1+g]")
    brightness: float = param(0.0, "shift the ROI's brightness by up to ± this (pixel values in [0, 1])")
    shift: float = param(0.0, "move the ROI by up to ± this fraction of its side, each axis")
    zoom: float = param(0.0, "zoom the ROI by a factor in [1/(1+z), 1+z]")
    lip_scale: float = param(0.0, "scale the lip geometry by a factor in [1/(1+s), 1+s]")

    @property
    def active(self) -> bool:
        return any((self.gain, self.brightness, self.shift, self.zoom, self.lip_scale))


def _factor(rng: np.random.Generator, spread: float) -> float:
    """A factor in [1/(1+spread), 1+spread], as likely to shrink as to grow."""
    return float(np.exp(rng.uniform(-1, 1) * np.log1p(spread)))


def augment_lips(item: dict[str, Any], options: LipAugment, rng: np.random.Generator) -> dict[str, Any]:
    """A copy of a TorchSamples item with its video (1, T, H, W, normalised) and lips (T, 82) augmented."""
    video, lips = item["video"], item["lips"]
    if options.shift or options.zoom:
        z = _factor(rng, options.zoom)
        dx, dy = (rng.uniform(-1, 1, 2) * 2 * options.shift).tolist()  # grid units span 2 per side
        theta = torch.tensor([[1 / z, 0.0, dx], [0.0, 1 / z, dy]], dtype=video.dtype)
        frames = video[0][:, None]
        grid = F.affine_grid(theta.expand(len(frames), 2, 3), list(frames.shape), align_corners=False)
        # Border padding: the skin around the mouth continues rather than a black edge appearing.
        video = F.grid_sample(frames, grid, padding_mode="border", align_corners=False)[:, 0][None]
    if options.gain or options.brightness:
        pixels = video * ROI_STD + ROI_MEAN
        mean = pixels.mean()
        pixels = (pixels - mean) * _factor(rng, options.gain) + mean + rng.uniform(-1, 1) * options.brightness
        video = (pixels.clamp(0, 1) - ROI_MEAN) / ROI_STD
    if options.lip_scale:
        lips = lips * _factor(rng, options.lip_scale)
    return {**item, "video": video.contiguous(), "lips": lips}
