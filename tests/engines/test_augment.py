"""Per-clip augmentations of the lip reader's inputs: repeatable from their generator, the same change on
every frame of a clip, nothing changed when off, and pixel values kept in range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.face.align import ROI_MEAN, ROI_STD
from engines.train.augment import LipAugment, augment_lips


def clip(frames: int = 6) -> dict:
    """A grey ROI with a bright square mouth that opens frame by frame, and lip points on a circle."""
    pixels = torch.full((frames, 88, 88), 0.4)
    for t in range(frames):
        pixels[t, 36:44 + t, 30:58] = 0.75  # room to brighten without clipping
    angles = torch.linspace(0, 2 * np.pi, 41)[:40]
    points = torch.stack((angles.cos(), angles.sin()), 1).reshape(-1) * 0.3
    lips = torch.cat((points, torch.tensor([0.05, 0.6]))).repeat(frames, 1)
    return {"video": ((pixels - ROI_MEAN) / ROI_STD)[None], "lips": lips, "text": "bin blue", "start": 0}


def pixels(item: dict) -> torch.Tensor:
    return item["video"][0] * ROI_STD + ROI_MEAN


def test_augmentation_off_changes_nothing_and_on_is_repeatable_from_its_generator() -> None:
    item = clip()
    assert not LipAugment().active
    same = augment_lips(item, LipAugment(), np.random.default_rng(0))
    assert torch.equal(same["video"], item["video"]) and torch.equal(same["lips"], item["lips"])
    options = LipAugment(gain=0.4, brightness=0.2, shift=0.08, zoom=0.15, lip_scale=0.1)
    a, b = (augment_lips(item, options, np.random.default_rng(5)) for _ in range(2))
    c = augment_lips(item, options, np.random.default_rng(6))
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["lips"], b["lips"])
    assert not torch.equal(a["video"], c["video"])
    assert a["video"].shape == item["video"].shape and a["video"].dtype == torch.float32
    assert a["text"] == item["text"] and torch.equal(item["video"], clip()["video"])  # the input is kept
    assert pixels(a).min() >= -1e-6 and pixels(a).max() <= 1 + 1e-6


def test_brightness_and_lip_scale_change_every_frame_of_a_clip_alike() -> None:
    item = clip()
    for seed in range(4):
        out = augment_lips(item, LipAugment(brightness=0.2, lip_scale=0.1), np.random.default_rng(seed))
        shift = pixels(out) - pixels(item)
        assert shift.abs().max() <= 0.2 + 1e-5 and shift.abs().max() > 0
        torch.testing.assert_close(shift, shift.flatten()[0].expand_as(shift), atol=1e-5, rtol=0)
        scale = out["lips"][0, 0] / item["lips"][0, 0]
        assert 1 / 1.1 - 1e-6 <= scale <= 1.1 + 1e-6
        torch.testing.assert_close(out["lips"], item["lips"] * scale)


def centroid(frame: torch.Tensor) -> torch.Tensor:
    bright = (frame > 0.6).float()
    ys, xs = torch.meshgrid(torch.arange(88.0), torch.arange(88.0), indexing="ij")
    return torch.stack(((bright * xs).sum(), (bright * ys).sum())) / bright.sum()


@pytest.mark.parametrize("seed", range(3))
def test_a_shift_moves_the_mouth_by_the_same_amount_in_every_frame(seed: int) -> None:
    item = clip()
    out = augment_lips(item, LipAugment(shift=0.1), np.random.default_rng(seed))
    moves = torch.stack([centroid(o) - centroid(i) for o, i in zip(pixels(out), pixels(item), strict=True)])
    assert moves.abs().max() <= 0.1 * 88 + 1 and moves[0].abs().max() > 0.5
    torch.testing.assert_close(moves, moves[0].expand_as(moves), atol=0.6, rtol=0)
