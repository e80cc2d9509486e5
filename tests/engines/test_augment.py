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


def with_audio(item: dict) -> dict:
    """The clip with a mel (4 frames per video frame, loud everywhere) and per-frame face flags."""
    frames = item["lips"].shape[0]
    return {**item, "mel": torch.linspace(0.0, 0.9, 80 * 4 * frames).reshape(80, 4 * frames) - 1.0 + 0.1,
            "valid": torch.ones(frames, dtype=torch.bool)}


def test_moving_the_onset_holds_the_end_frames_and_keeps_video_lips_and_mel_aligned() -> None:
    from engines.train.augment import move_onset

    item = with_audio(clip(6))
    later = move_onset(item, 3, 2)
    assert later["video"].shape[1] == later["lips"].shape[0] == later["valid"].shape[0] == 11
    assert later["mel"].shape == (80, 44)
    assert all(torch.equal(later["video"][0, k], item["video"][0, 0]) for k in range(3))  # first frame held
    assert torch.equal(later["video"][0, 3:9], item["video"][0])
    assert torch.equal(later["video"][0, 10], item["video"][0, 5])  # and the last
    assert torch.equal(later["lips"][10], item["lips"][5])
    silent = item["mel"].min()
    assert (later["mel"][:, :12] == silent).all() and (later["mel"][:, -8:] == silent).all()
    assert torch.equal(later["mel"][:, 12:36], item["mel"])  # the speech itself is where its frames are
    sooner = move_onset(item, -2, 0)
    assert torch.equal(sooner["video"][0], item["video"][0, 2:])
    assert torch.equal(sooner["mel"], item["mel"][:, 8:])
    assert sooner["text"] == item["text"]
    with pytest.raises(ValueError, match="cannot drop"):
        move_onset(item, -6, 0)


def test_onset_options_draw_a_lead_within_their_bounds() -> None:
    item = with_audio(clip(6))
    options = LipAugment(onset_trim=2, onset_hold=5, end_hold=3)
    assert options.active and options.changes_length and not LipAugment(gain=0.1).changes_length
    lengths = {augment_lips(item, options, np.random.default_rng(k))["lips"].shape[0] for k in range(200)}
    assert min(lengths) == 4 and max(lengths) == 14 and len(lengths) > 5


def test_a_tempo_change_resamples_every_stream_alike_and_keeps_the_ends() -> None:
    from engines.train.augment import change_tempo

    item = with_audio(clip(9))
    slower = change_tempo(item, 0.5)  # twice the frames
    n = slower["lips"].shape[0]
    assert n == 18 and slower["video"].shape[1] == n and slower["valid"].shape == (n,)
    assert slower["mel"].shape == (80, 4 * n)
    assert torch.equal(slower["video"][0, 0], item["video"][0, 0])
    assert torch.equal(slower["video"][0, -1], item["video"][0, -1])
    assert torch.equal(slower["lips"][-1], item["lips"][-1])
    # Each mel frame of the new clip is one of the old clip's, from the video frame nearest in time.
    for k in (0, 5, 17):
        source = round(k * 8 / 17)
        assert torch.equal(slower["mel"][:, 4 * k:4 * k + 4], item["mel"][:, 4 * source:4 * source + 4])
    faster = change_tempo(item, 1.5)
    assert faster["lips"].shape[0] == 6 and faster["text"] == item["text"]
    options = LipAugment(tempo=0.2)
    assert options.changes_length
    lengths = {augment_lips(item, options, np.random.default_rng(k))["lips"].shape[0] for k in range(100)}
    assert min(lengths) >= round(9 / 1.2) and max(lengths) <= round(9 * 1.2) and len(lengths) > 2


def test_an_aspect_change_stretches_the_lip_points_vertically_only() -> None:
    item = clip()
    out = augment_lips(item, LipAugment(aspect=0.2), np.random.default_rng(3))
    a = out["lips"][0, 11] / item["lips"][0, 11]  # point 5's y (points lie on a circle)
    assert 1 / 1.2 - 1e-6 <= a <= 1.2 + 1e-6 and abs(a - 1) > 1e-3
    torch.testing.assert_close(out["lips"][:, 1:80:2], item["lips"][:, 1:80:2] * a)
    torch.testing.assert_close(out["lips"][:, 0:80:2], item["lips"][:, 0:80:2])  # x kept
    torch.testing.assert_close(out["lips"][:, 80], item["lips"][:, 80] * a)
    torch.testing.assert_close(out["lips"][:, 81], item["lips"][:, 81])
    bright = [(pixels(o) > 0.6).float().sum(1).max() for o in (out, item)]  # the mouth's height in rows
    assert (bright[0] > bright[1]) == bool(a > 1)


def test_a_flip_mirrors_the_roi_and_the_lip_points_and_twice_is_none() -> None:
    from engines.face.lips import mirror_order
    from engines.train.augment import mirror

    item = clip()
    item["video"][..., :10] += 1.0  # one side of the ROI marked
    out = augment_lips(item, LipAugment(flip=1.0), np.random.default_rng(0))
    torch.testing.assert_close(out["video"], item["video"].flip(-1))
    points, points_out = (x["lips"][:, :80].reshape(-1, 40, 2) for x in (item, out))
    k = int(mirror_order()[0])  # the mouth corner opposite point 0 (a corner)
    assert k != 0
    torch.testing.assert_close(points_out[:, k], points[:, 0] * torch.tensor([-1.0, 1.0]))
    torch.testing.assert_close(out["lips"][:, 80:], item["lips"][:, 80:])
    again = mirror(out["video"], out["lips"])
    torch.testing.assert_close(again[0], item["video"])
    torch.testing.assert_close(again[1], item["lips"])
    never = augment_lips(item, LipAugment(flip=1e-9), np.random.default_rng(0))
    torch.testing.assert_close(never["video"], item["video"])
