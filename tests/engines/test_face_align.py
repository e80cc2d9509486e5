"""Mouth ROI alignment, face crops, lip features and contact sheets, on real GRID clips and real photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.face.align import (
    ARCFACE_112,
    CROP_SIZE,
    ROI_SIZE,
    face_crop,
    face_transform,
    lip_centre,
    mouth_roi,
    mouth_roi_96,
    mouth_transform,
    normalise_roi,
    similarity,
    transform_points,
)
from engines.face.canonical import build_canonical_face, canonical_face
from engines.face.contact_sheet import contact_sheet
from engines.face.lips import FEATURE_LENGTH, lip_features
from engines.face.mesh import N_LANDMARKS, FaceMesh
from engines.train.augment import mirror
from tests.helpers import SHARED

GRID = SHARED / "real" / "grid-dev"
needs_grid = pytest.mark.skipif(not sorted(GRID.glob("*.mpg")), reason=f"{GRID} (real GRID clips) is absent")


@dataclass
class Clip:
    name: str
    frames: list[np.ndarray]
    landmarks: list[np.ndarray | None]  # None where no face was found


@pytest.fixture(scope="module")
def grid() -> list[Clip]:
    clips = []
    for path in sorted(GRID.glob("*.mpg")):
        capture = cv2.VideoCapture(str(path))
        frames, landmarks = [], []
        with FaceMesh(max_faces=1) as mesh:  # video mode, as the tracker runs
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                faces = mesh.detect(frame)
                frames.append(frame)
                landmarks.append(faces[0].landmarks if faces else None)
        capture.release()
        clips.append(Clip(path.stem, frames, landmarks))
    return clips


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@needs_grid
def test_grid_has_a_face_in_every_frame(grid: list[Clip]) -> None:
    assert len(grid) == 3
    for clip in grid:
        assert len(clip.frames) >= 50
        missing = [i for i, lm in enumerate(clip.landmarks) if lm is None]
        assert not missing, f"{clip.name}: no face in frames {missing}"


@needs_grid
def test_grid_mouth_rois_are_centred_at_one_scale(grid: list[Clip]) -> None:
    widths = {}
    for clip in grid:
        clip_widths, lip_rows = [], []
        for frame, points in zip(clip.frames, clip.landmarks, strict=True):
            roi = mouth_roi(frame, points)
            assert roi.shape == (CROP_SIZE, CROP_SIZE) and roi.dtype == np.uint8
            matrix = mouth_transform(points)
            np.testing.assert_allclose(transform_points(matrix, lip_centre(points)[None])[0],
                                       (ROI_SIZE / 2, ROI_SIZE / 2), atol=1e-6)
            corners = transform_points(matrix, points[[61, 291]])
            clip_widths.append(np.linalg.norm(corners[1] - corners[0]))
            # From the pixels alone: the lip line (the darkest row across the middle columns) is central.
            rows = mouth_roi_96(frame, points)[24:72, 36:60].astype(np.float64).mean(axis=1)
            lip_rows.append(24 + int(np.argmin(rows)))
        lip_rows = np.array(lip_rows)
        assert abs(np.median(lip_rows) - ROI_SIZE / 2) <= 3, clip.name
        assert np.mean(np.abs(lip_rows - ROI_SIZE / 2) <= 5) >= 0.9, (clip.name, lip_rows)
        # Auto-AVSR-like framing: the mouth spans 40-55 % of the 96 px crop.
        assert min(clip_widths) >= 0.40 * ROI_SIZE and max(clip_widths) <= 0.55 * ROI_SIZE, clip.name
        widths[clip.name] = float(np.median(clip_widths))
    assert max(widths.values()) / min(widths.values()) < 1.15, widths


@needs_grid
def test_alignment_undoes_rotation_scale_and_shift(grid: list[Clip]) -> None:
    frame = grid[2].frames[30]
    height, width = frame.shape[:2]
    with FaceMesh(static=True) as mesh:
        reference = mouth_roi(frame, mesh.detect(frame)[0].landmarks)
        # A 3 px shift of the reference is what "misaligned" looks like, for scale.
        assert _ncc(np.roll(reference, 3, axis=0), reference) < 0.85
        for angle, scale, shift in ((20, 0.7, (40, -20)), (-25, 1.6, (-30, 50)), (35, 1.2, (0, 0)),
                                    (0, 2.5, (10, 10))):
            canvas = (2 * width, 2 * height)
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
            matrix[:, 2] += (width / 2 + shift[0], height / 2 + shift[1])
            moved = cv2.warpAffine(frame, matrix, canvas)
            faces = mesh.detect(moved)
            assert len(faces) == 1
            roi = mouth_roi(moved, faces[0].landmarks)
            assert _ncc(roi, reference) > 0.97, (angle, scale)
            assert np.abs(roi.astype(float) - reference).mean() < 4.0, (angle, scale)


@needs_grid
def test_faces_at_and_beyond_the_border_are_padded(grid: list[Clip]) -> None:
    frame, points = grid[0].frames[0], grid[0].landmarks[0]
    cut = int(lip_centre(points)[0])  # the image now ends in the middle of the mouth
    left = frame[:, cut:]
    shifted = points - np.array([cut, 0, 0], np.float32)
    roi = mouth_roi_96(left, shifted)
    assert roi.shape == (ROI_SIZE, ROI_SIZE)
    assert (roi[:, : ROI_SIZE // 2 - 5] == 0).all()  # the missing half is black padding
    assert roi[:, ROI_SIZE // 2 + 5:].mean() > 40  # the present half is the face
    assert face_crop(left, shifted).shape == (112, 112, 3)
    far = points + np.array([5000, -5000, 0], np.float32)  # a face wholly outside the image
    assert (mouth_roi(frame, far) == 0).all()
    assert (face_crop(frame, far, size=64) == 0).all()
    assert mouth_roi(frame[:10, :10], points).shape == (CROP_SIZE, CROP_SIZE)


@needs_grid
def test_a_large_face_gives_the_same_roi(grid: list[Clip]) -> None:
    frame, points = grid[1].frames[20], grid[1].landmarks[20]
    big = cv2.resize(frame, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    big_points = points * 4 + np.float32([1.5, 1.5, 0])  # pixel centres under a 4x resize
    assert _ncc(mouth_roi(big, big_points), mouth_roi(frame, points)) > 0.98


@needs_grid
def test_grayscale_frames_give_the_same_roi(grid: list[Clip]) -> None:
    frame, points = grid[0].frames[10], grid[0].landmarks[10]
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    colour = mouth_roi(frame, points)
    for variant in (gray, gray[:, :, None], cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)):
        assert np.abs(mouth_roi(variant, points).astype(int) - colour).max() <= 1


@needs_grid
def test_face_crop_puts_the_eyes_on_the_template(grid: list[Clip]) -> None:
    frame, points = grid[0].frames[0], grid[0].landmarks[0]
    for size in (112, 160):
        crop = face_crop(frame, points, size)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        eyes = transform_points(face_transform(points, size),
                                np.array([points[[33, 133], :2].mean(0), points[[362, 263], :2].mean(0)]))
        np.testing.assert_allclose(eyes, ARCFACE_112[:2] * size / 112, atol=0.04 * size)
    # RGB out: the crop's channels are the frame's reversed.
    crop = face_crop(frame, points)
    bgr = cv2.warpAffine(frame, face_transform(points), (112, 112))
    assert np.abs(crop[:, :, ::-1].astype(int) - bgr).mean() < 1.0


def test_normalisation_matches_lipvoicer() -> None:
    out = normalise_roi(np.array([[0, 255]], np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[(0 - 0.421) / 0.165, (1 - 0.421) / 0.165]], rtol=1e-6)


def test_malformed_landmarks_are_value_errors() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    for bad in (np.zeros((468, 3)), np.zeros((N_LANDMARKS,)), np.full((N_LANDMARKS, 3), np.nan),
                np.zeros((N_LANDMARKS, 3))):
        with pytest.raises(ValueError):
            mouth_roi(frame, bad)
    with pytest.raises(ValueError):
        mouth_roi(np.zeros((0, 0), np.uint8), canonical_face() * 100)


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(12, 2)) * 50
    truth = cv2.getRotationMatrix2D((0, 0), 33, 1.7)
    truth[:, 2] = (12, -7)
    np.testing.assert_allclose(similarity(src, transform_points(truth, src)), truth, atol=1e-9)


def _moved(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D((0, 0), angle, scale)
    matrix[:, 2] = shift
    return np.c_[transform_points(matrix, points), points[:, 2] * scale]


def test_lip_features_ignore_position_scale_and_roll() -> None:
    points = canonical_face().astype(np.float64) * 80 + (200, 150, 0)
    features = lip_features(points)
    vector = features.vector()
    assert vector.shape == (FEATURE_LENGTH,) == (82,) and vector.dtype == np.float32
    assert vector[80] == pytest.approx(features.opening) and vector[81] == pytest.approx(features.width)
    np.testing.assert_allclose(vector[:2], features.points[0])
    np.testing.assert_allclose(features.points.mean(axis=0), 0, atol=1e-6)
    for angle, scale, shift in ((30, 0.5, (10, 400)), (-15, 3.0, (-50, 0))):
        np.testing.assert_allclose(lip_features(_moved(points, angle, scale, shift)).vector(), vector,
                                   atol=1e-5)
    # Opening the mouth (lower lip and jaw points moved down) raises `opening`, not the scale.
    opened = points.copy()
    lower = [14, 87, 178, 88, 95, 317, 402, 318, 324, 17, 84, 181, 91, 146, 314, 405, 321, 375]
    opened[lower, 1] += 20
    assert lip_features(opened).opening > features.opening + 0.15
    assert lip_features(opened).width == pytest.approx(features.width, rel=0.05)


def _audio_envelope(path: Path, frames: int) -> np.ndarray:
    av = pytest.importorskip("av", reason="PyAV (installed with faster-whisper) reads the GRID audio")
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks = [f.to_ndarray() for f in container.decode(stream)]
    # Planar frames are (channels, samples), packed ones (1, samples * channels): either way, mono.
    audio = np.concatenate([c.mean(axis=0) if stream.format.is_planar else c.reshape(-1) for c in chunks])
    hop = rate / 25.0
    return np.array([np.sqrt(np.mean(audio[int(i * hop):int((i + 1) * hop)].astype(np.float64) ** 2))
                     for i in range(frames)])


@needs_grid
def test_lip_opening_moves_with_speech_and_rests_in_silence(grid: list[Clip]) -> None:
    for clip in grid:
        opening = np.array([lip_features(p).opening for p in clip.landmarks])
        envelope = _audio_envelope(GRID / f"{clip.name}.mpg", len(opening))
        loud = np.flatnonzero(envelope > 0.1 * envelope.max())
        speech = opening[loud[0]:loud[-1] + 1]
        after = opening[loud[-1] + 4:]  # the silence after the sentence, once the mouth has settled
        assert len(after) >= 5, clip.name
        assert speech.max() > 1.5 * after.max() + 0.02, clip.name
        assert speech.std() > 3 * after.std(), clip.name
        # Lip closures in speech (the b of "bin", "blue", "by") bring the gap (nearly) to zero.
        assert speech.min() < 0.25 * speech.max(), clip.name


@needs_grid
def test_a_mirrored_clip_is_what_a_mirrored_camera_would_see(grid: list[Clip]) -> None:
    """The lip reader's flip augmentation (engines.train.augment.mirror) against the real thing: the
    tracker's ROI and lip features of each frame flipped left to right."""
    frames = grid[0].frames[::15]
    with FaceMesh(max_faces=1, static=True) as mesh:
        seen = [(f, mesh.detect(f)[0].landmarks, mesh.detect(cv2.flip(f, 1))[0].landmarks) for f in frames]
    for frame, plain, flipped in seen:
        video = torch.from_numpy(normalise_roi(mouth_roi(frame, plain)))[None, None]
        lips = torch.from_numpy(lip_features(plain).vector())[None]
        video_m, lips_m = mirror(video, lips)
        want = lip_features(flipped).vector()
        error = np.abs(lips_m[0].numpy() - want)
        assert error.max() < 0.02  # inter-ocular units; the mouth is ~0.45 wide, landmark noise ~0.004
        # A GRID face is nearly its own mirror image, but not quite: unmirrored points are further off.
        assert error[:80].mean() < np.abs(lips[0].numpy() - want)[:80].mean()
        roi = normalise_roi(mouth_roi(cv2.flip(frame, 1), flipped))
        assert _ncc(video_m[0, 0].numpy(), roi) > 0.93 and _ncc(video[0, 0].numpy(), roi) < 0.85


def test_contact_sheet_tiles_with_cross_hairs(tmp_path: Path) -> None:
    rois = [np.full((88, 88), 100 + i, np.uint8) for i in range(5)] + [np.full((88, 88, 3), 50, np.uint8)]
    path = tmp_path / "sheet.png"
    sheet = contact_sheet(rois, cols=4, labels=[str(i) for i in range(6)], path=path)
    assert sheet.shape == (2 * 90 + 2, 4 * 90 + 2, 3) and sheet.dtype == np.uint8
    for i in range(6):
        r, c = divmod(i, 4)
        assert tuple(sheet[2 + r * 90 + 44, 2 + c * 90 + 44]) == (0, 0, 255)  # red cross-hair at the centre
        assert tuple(sheet[2 + r * 90 + 80, 2 + c * 90 + 20]) == ((100 + i,) * 3 if i < 5 else (50,) * 3)
    np.testing.assert_array_equal(cv2.imread(str(path)), sheet)
    with pytest.raises(ValueError):
        contact_sheet(rois, cols=4, labels=["one"])
    with pytest.raises(ValueError):
        contact_sheet([], cols=4)


@pytest.mark.skipif(not (SHARED / "faces").is_dir(), reason="shared face photos are absent")
def test_the_shipped_canonical_face_is_rebuilt_from_the_photos() -> None:
    photos = sorted((SHARED / "faces").glob("*.jpg"))
    rebuilt = build_canonical_face(cv2.imread(str(p)) for p in photos)
    shipped = canonical_face()
    assert shipped.shape == (N_LANDMARKS, 3) and shipped.dtype == np.float32
    np.testing.assert_allclose(rebuilt, shipped, atol=2e-3)
    # Its frame: level outer eye corners one unit apart, the subject's right eye on the left, y down.
    assert np.linalg.norm(shipped[263] - shipped[33]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(shipped[263, :2] - shipped[33, :2], (1.0, 0.0), atol=1e-3)
    assert shipped[10, 1] < shipped[1, 1] < shipped[13, 1] < shipped[152, 1]
