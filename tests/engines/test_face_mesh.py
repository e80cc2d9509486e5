"""The MediaPipe face mesh wrapper on real photos and on frames that must not break it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

from engines.face.mesh import LIPS_INNER, LIPS_OUTER, N_LANDMARKS, FaceMesh, FaceObservation
from tests.helpers import REPO, SHARED

FACES = SHARED / "faces"
needs_faces = pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} (shared face photos) is absent")


def _photos() -> list[Path]:
    return sorted(FACES.glob("*.jpg")) if FACES.is_dir() else []


@pytest.fixture(scope="module")
def static_mesh() -> Iterator[FaceMesh]:
    with FaceMesh(static=True) as mesh:
        yield mesh


def _check(face: FaceObservation, shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    assert face.landmarks.shape == (N_LANDMARKS, 3) and face.landmarks.dtype == np.float32
    assert np.isfinite(face.landmarks).all()
    x, y, w, h = face.bbox
    assert min(x, y) >= 0 and w > 0 and h > 0 and x + w <= width + 1e-3 and y + h <= height + 1e-3
    assert 0.0 <= face.score <= 1.0
    # Pixel coordinates: the face lies inside the image, not in [0, 1].
    inside = face.landmarks[:, :2]
    assert inside[:, 0].max() > 2 and inside[:, 1].max() > 2


@needs_faces
def test_every_shared_photo_gives_one_face(static_mesh: FaceMesh) -> None:
    photos = _photos()
    assert len(photos) >= 10
    for path in photos:
        image = cv2.imread(str(path))
        faces = static_mesh.detect(image)
        assert len(faces) == 1, f"{path.name}: {len(faces)} faces"
        _check(faces[0], image.shape)
        # The subject's right eye (33) is on the image left, the nose tip between the eyes and the mouth.
        pts = faces[0].landmarks
        assert pts[33, 0] < pts[263, 0], path.name
        assert pts[33, 1] < pts[1, 1] < pts[13, 1], path.name


@needs_faces
def test_grayscale_in_all_layouts_finds_the_same_face(static_mesh: FaceMesh) -> None:
    image = cv2.imread(str(_photos()[0]))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    reference = static_mesh.detect(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert len(reference) == 1
    for variant in (gray, gray[:, :, None], cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)):
        faces = static_mesh.detect(variant)
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0].landmarks[:, :2], reference[0].landmarks[:, :2], atol=1.0)


@needs_faces
def test_several_faces_in_one_frame(static_mesh: FaceMesh) -> None:
    tiles = [cv2.resize(cv2.imread(str(p)), (240, 300)) for p in _photos()[:4]]
    mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
    faces = static_mesh.detect(mosaic)
    assert len(faces) == 4
    centres = sorted((round(f.bbox[1] + f.bbox[3] / 2 > 300), round(f.bbox[0] + f.bbox[2] / 2 > 240))
                     for f in faces)
    assert centres == [(0, 0), (0, 1), (1, 0), (1, 1)]  # one per tile
    for face in faces:
        _check(face, mosaic.shape)


@needs_faces
def test_video_mode_follows_a_face_across_frame_sizes() -> None:
    image = cv2.imread(str(_photos()[0]))
    with FaceMesh(max_faces=1) as mesh:
        sizes = [1.0, 1.0, 0.5, 0.5, 1.3, 1.0]
        for scale in sizes:
            frame = cv2.resize(image, None, fx=scale, fy=scale)
            faces = mesh.detect(frame)
            assert len(faces) == 1, f"scale {scale}"
            _check(faces[0], frame.shape)
            reference = mesh.detect(frame)[0]  # the same frame again: tracking agrees with itself
            np.testing.assert_allclose(faces[0].bbox, reference.bbox, atol=0.05 * frame.shape[1])


def test_frames_without_a_face_give_nothing(static_mesh: FaceMesh) -> None:
    rng = np.random.default_rng(0)
    assert static_mesh.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert static_mesh.detect(rng.integers(0, 256, (288, 360, 3), dtype=np.uint8)) == []


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 3), (1, 1, 3), (12, 900, 3), (900, 12, 3)])
def test_tiny_frames_give_nothing(shape: tuple[int, ...]) -> None:
    for static in (True, False):
        with FaceMesh(static=static) as mesh:
            assert mesh.detect(np.full(shape, 128, np.uint8)) == []


@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((64, 64, 2), np.uint8), "shape"),
    (np.zeros((64, 64, 3, 1), np.uint8), "shape"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    ([[0, 1], [2, 3]], "numpy"),
])
def test_invalid_input_is_a_clear_value_error(static_mesh: FaceMesh, bad: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        static_mesh.detect(bad)


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"max_faces": 0}, {"min_detection": 1.5}, {"min_tracking": -0.1}, {"refine": False}):
        with pytest.raises(ValueError):
            FaceMesh(**kwargs)


def test_close_then_detect_starts_again() -> None:
    mesh = FaceMesh()
    mesh.close()
    assert mesh.detect(np.zeros((64, 64, 3), np.uint8)) == []
    mesh.close()


def test_lip_contours_are_facemesh_lips_in_order() -> None:
    edges = {frozenset(e) for e in FACEMESH_LIPS}
    assert len(LIPS_OUTER) == len(LIPS_INNER) == 20
    assert set(LIPS_OUTER) | set(LIPS_INNER) == {i for e in FACEMESH_LIPS for i in e}
    for contour in (LIPS_OUTER, LIPS_INNER):
        for a, b in zip(contour, contour[1:] + contour[:1], strict=True):
            assert frozenset((a, b)) in edges, (a, b)


@needs_faces
def test_video_mode_keeps_the_detection_score_between_detections() -> None:
    image = cv2.imread(str(_photos()[1]))
    with FaceMesh(max_faces=1) as mesh:  # one face tracked: the detector does not run again
        scores = [mesh.detect(image)[0].score for _ in range(4)]
    assert 0.5 <= scores[0] < 1.0
    assert scores == [scores[0]] * 4


@needs_faces
def test_mediapipe_log_spam_stays_off_stderr() -> None:
    code = ("import cv2, sys; from engines.face.mesh import FaceMesh; m = FaceMesh(); "
            f"assert len(m.detect(cv2.imread({str(_photos()[0])!r}))) == 1; "
            "sys.stderr.write('ours\\n')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "ours"  # MediaPipe's TFLite/absl lines went to the DEBUG log
