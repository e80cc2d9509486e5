"""Training augmentations of a clip's lip inputs (TorchSamples items), drawn once per clip so every frame
of it changes alike, as a new speaker or camera would change it.

Why: ten training faces are too few; a lip reader trained on them plain reads its training speakers far
better than unseen ones, and the unseen ones differ first in what these change: skin brightness and
contrast under other light, where and how large the mouth sits in the ROI, the size of the lips and their
shape (`aspect`: taller or wider mouths), which side of the face is which (`flip`: no face is quite
symmetric, so a mirrored face is one more face), and how fast they speak (`tempo`). Read by the GRID
grammar, the session-5 reader got the command word wrong in 29 % of unseen speakers' sentences and in 7 %
of seen ones'; its two worst test speakers have the slowest and the fastest voices.

The onset options move where speech starts and ends in the clip. Every generated clip opens with the same
0.2 s of still face, and a lip reader trained on them alone learns that speech starts at the sixth frame:
read from its third frame or after 0.5 s of stillness, the bundled demo clip came out as gibberish. A live
stream starts wherever the tracker first names the target, and a speaker may stay silent for seconds, so
the lead-in is trimmed (never past the still frames: the text must stay whole) or lengthened by holding the
first frame, and the end lengthened by holding the last. These change the clip's length, so they are for
the lip reader only (MelGen's conditions must stay aligned with the clip's mel).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engines.face.align import ROI_MEAN, ROI_STD
from engines.face.lips import mirror_order
from engines.params import param


@dataclass(frozen=True)
class LipAugment:
    gain: float = param(0.0, "scale the ROI's contrast about its mean by a factor in [1/(1+g), 1+g]")
    brightness: float = param(0.0, "shift the ROI's brightness by up to ± this (pixel values in [0, 1])")
    shift: float = param(0.0, "move the ROI by up to ± this fraction of its side, each axis")
    zoom: float = param(0.0, "zoom the ROI by a factor in [1/(1+z), 1+z]")
    lip_scale: float = param(0.0, "scale the lip geometry by a factor in [1/(1+s), 1+s]")
    aspect: float = param(0.0, "stretch the mouth vertically against horizontally (ROI and lip geometry) by "
                               "a factor in [1/(1+a), 1+a]")
    flip: float = param(0.0, "mirror the clip left to right (ROI and lip geometry) with this probability")
    tempo: float = param(0.0, "play the clip faster or slower by a factor in [1/(1+t), 1+t] (frames "
                              "interpolated; the text is not changed)")
    onset_trim: int = param(0, "drop up to this many of the clip's first frames (keep it within the still "
                               "lead-in: the text is not changed)")
    onset_hold: int = param(0, "hold the first frame for up to this many frames before the clip")
    end_hold: int = param(0, "hold the last frame for up to this many frames after the clip")

    @property
    def active(self) -> bool:
        return any((self.gain, self.brightness, self.shift, self.zoom, self.lip_scale, self.aspect,
                    self.flip)) or \
            self.changes_length

    @property
    def moves_onset(self) -> bool:
        """Whether the clip's start or end moves (frames dropped or held: move_onset)."""
        return any((self.onset_trim, self.onset_hold, self.end_hold))

    @property
    def changes_length(self) -> bool:
        """Whether the clip's length changes (the options MelGen's conditions cannot take)."""
        return self.moves_onset or bool(self.tempo)


def _factor(rng: np.random.Generator, spread: float) -> float:
    """A factor in [1/(1+spread), 1+spread], as likely to shrink as to grow."""
    return float(np.exp(rng.uniform(-1, 1) * np.log1p(spread)))


def augment_lips(item: dict[str, Any], options: LipAugment, rng: np.random.Generator) -> dict[str, Any]:
    """A copy of a TorchSamples item with its video (1, T, H, W, normalised) and lips (T, 82) augmented."""
    if options.tempo:
        item = change_tempo(item, _factor(rng, options.tempo))
    if options.moves_onset:
        item = move_onset(item, *draw_move(options, rng, item["lips"].shape[0]))
    video, lips = item["video"], item["lips"]
    if options.shift or options.zoom or options.aspect:
        z, a = _factor(rng, options.zoom), _factor(rng, options.aspect)
        dx, dy = (rng.uniform(-1, 1, 2) * 2 * options.shift).tolist()  # grid units span 2 per side
        theta = torch.tensor([[1 / z, 0.0, dx], [0.0, 1 / (z * a), dy]], dtype=video.dtype)
        frames = video[0][:, None]
        grid = F.affine_grid(theta.expand(len(frames), 2, 3), list(frames.shape), align_corners=False)
        # Border padding: the skin around the mouth continues rather than a black edge appearing.
        video = F.grid_sample(frames, grid, padding_mode="border", align_corners=False)[:, 0][None]
    if options.flip and rng.uniform() < options.flip:
        video, lips = mirror(video, lips)
    if options.gain or options.brightness:
        pixels = video * ROI_STD + ROI_MEAN
        mean = pixels.mean()
        pixels = (pixels - mean) * _factor(rng, options.gain) + mean + rng.uniform(-1, 1) * options.brightness
        video = (pixels.clamp(0, 1) - ROI_MEAN) / ROI_STD
    if options.lip_scale:
        lips = lips * _factor(rng, options.lip_scale)
    if options.aspect:
        lips = lips.clone()
        lips[:, 1:80:2] *= a  # y of every lip point (x, y interleaved; engines/face/lips.py)
        lips[:, 80] *= a  # the opening is vertical; the width (81) is not
    return {**item, "video": video.contiguous(), "lips": lips}


def draw_move(options: LipAugment, rng: np.random.Generator, frames: int) -> tuple[int, int]:
    """(lead, tail) for move_onset: up to onset_trim of a `frames`-frame clip's first frames dropped (never
    all) or up to onset_hold held before it, and up to end_hold held after it."""
    lead = int(rng.integers(-min(options.onset_trim, frames - 1), options.onset_hold + 1))
    return lead, int(rng.integers(0, options.end_hold + 1))


def mirror(video: Tensor, lips: Tensor) -> tuple[Tensor, Tensor]:
    """Video (1, T, H, W) and lip geometry (T, 82) of the same clip seen in a mirror: the ROI flipped left
    to right, and each lip point moved to its mirror partner's place with x negated (the points are relative
    to their centre); opening and width do not change."""
    order = torch.from_numpy(mirror_order().copy())
    points = lips[:, :80].reshape(len(lips), 40, 2)[:, order] * torch.tensor([-1.0, 1.0], dtype=lips.dtype)
    return video.flip(-1), torch.cat((points.reshape(len(lips), 80), lips[:, 80:]), dim=1)


def change_tempo(item: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a TorchSamples item played `factor` times as fast (fewer frames above 1): video and lips
    interpolated linearly between neighbouring frames (a camera integrates motion over its exposure
    too), valid and the mel (whole frames of it) from the nearest frame, so they stay aligned."""
    n = item["lips"].shape[0]
    m = max(1, round(n / factor))
    pos = torch.linspace(0, n - 1, m)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo)[:, None]
    nearest = pos.round().long()
    video = item["video"][0]
    frames = video[lo] * (1 - w[:, :, None]) + video[hi] * w[:, :, None]
    lips = item["lips"][lo] * (1 - w) + item["lips"][hi] * w
    per_frame = item["mel"].shape[1] // n
    mel_index = (nearest[:, None] * per_frame + torch.arange(per_frame)[None]).reshape(-1)
    return {**item, "video": frames[None].contiguous(), "lips": lips, "valid": item["valid"][nearest],
            "mel": item["mel"][:, mel_index]}


def move_onset(item: dict[str, Any], lead: int, tail: int) -> dict[str, Any]:
    """A copy of a TorchSamples item starting `lead` frames earlier (its first frame held; negative: that
    many frames dropped) and ending `tail` frames later (its last frame held). The mel gets silence over
    the held frames, so video, lips, mel and valid stay aligned."""
    n = item["lips"].shape[0]
    if lead < 0 and -lead >= n:
        raise ValueError(f"cannot drop {-lead} frames of a {n}-frame clip")
    per_frame = item["mel"].shape[1] // n

    def hold(x: torch.Tensor, axis: int, per: int = 1, fill: torch.Tensor | None = None) -> torch.Tensor:
        """x with the dropped frames cut and the held ones added: its edge frames, or `fill`."""
        x = x.narrow(axis, max(0, -lead) * per, x.shape[axis] - max(0, -lead) * per)
        first = x.narrow(axis, 0, 1) if fill is None else fill
        last = x.narrow(axis, x.shape[axis] - 1, 1) if fill is None else fill
        return torch.cat([first.repeat_interleave(max(0, lead) * per, axis), x,
                          last.repeat_interleave(tail * per, axis)], axis)

    silence = item["mel"].min().expand(item["mel"].shape[0], 1)  # the clip's floor: its lead-in is silent
    return {**item, "video": hold(item["video"], 1), "lips": hold(item["lips"], 0),
            "mel": hold(item["mel"], 1, per_frame, silence), "valid": hold(item["valid"], 0)}
