"""The canonical mean face that mouth ROIs are aligned to, and how it was made.

mediapipe 0.10.21's wheel does not ship the face-geometry canonical model (canonical_face_model.obj /
geometry_pipeline_metadata*.binarypb are absent from site-packages/mediapipe/modules/face_geometry/), and
the 20words_mean_face.npy of AV-HuBERT / Auto-AVSR cannot be downloaded here. So the reference is our own
mean of real faces (data/canonical_face.npy, made by `python -m engines.face.canonical FACES_DIR`):

1. the refined 478-point mesh of every photo (static mode), x, y, z in pixels;
2. generalised Procrustes analysis in 3-D (similarity: rotation, scale, translation), so head pose and
   size drop out and z, which MediaPipe scales like x, lets a turned head be turned back;
3. the mean shape is seen from the photos' mean viewpoint (the chordal mean of their rotations), then
   rolled so the outer eye corners are level: a frontal face as an average photo shows it;
4. stored as (478, 3) float32, centred on the mean of the landmarks, x to the image right, y down,
   z away from the camera, in units of the outer-eye-corner distance (33 to 263).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

DATA = Path(__file__).with_name("data") / "canonical_face.npy"
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # subject's right eye is on the image left


def _rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The proper rotation R minimising |source @ R.T - target| for centred point sets (Kabsch)."""
    u, _, vt = np.linalg.svd(target.T @ source)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0] * (source.shape[1] - 1) + [d]) @ vt


def _normalised(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / np.linalg.norm(centred)


def procrustes_mean(shapes: list[np.ndarray], iterations: int = 20) -> tuple[np.ndarray, list[np.ndarray]]:
    """Generalised Procrustes mean of (N, D) shapes, and each shape's rotation from the mean's frame."""
    shapes = [_normalised(np.asarray(s, dtype=np.float64)) for s in shapes]
    mean = shapes[0]
    for _ in range(iterations):
        aligned = [s @ _rotation(s, mean).T for s in shapes]
        mean = _normalised(np.mean(aligned, axis=0))
    return mean, [_rotation(mean, s) for s in shapes]


def build_canonical_face(images: Iterable[np.ndarray]) -> np.ndarray:
    """The canonical face (see the module docstring) from BGR photos of one face each."""
    from engines.face.mesh import FaceMesh  # MediaPipe only when building, not when loading

    shapes = []
    with FaceMesh(max_faces=1, static=True) as mesh:
        for image in images:
            faces = mesh.detect(image)
            if len(faces) == 1:
                shapes.append(faces[0].landmarks.astype(np.float64))
    if len(shapes) < 3:
        raise ValueError(f"need at least 3 photos with one face each, found {len(shapes)}")
    mean, rotations = procrustes_mean(shapes)
    u, _, vt = np.linalg.svd(np.sum(rotations, axis=0))  # chordal mean of the viewpoints
    view = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    face = mean @ view.T
    eyes = face[LEFT_EYE_OUTER] - face[RIGHT_EYE_OUTER]
    angle = np.arctan2(eyes[1], eyes[0])
    roll = np.array([[np.cos(angle), np.sin(angle), 0], [-np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    face = (face - face.mean(axis=0)) @ roll.T
    return (face / np.linalg.norm(face[LEFT_EYE_OUTER] - face[RIGHT_EYE_OUTER])).astype(np.float32)


@cache
def canonical_face() -> np.ndarray:
    """The shipped canonical face, (478, 3) float32 (read-only)."""
    face = np.load(DATA)
    face.setflags(write=False)
    return face


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.face.canonical",
                                     description="Rebuild the canonical mean face from face photos.")
    parser.add_argument("faces", type=Path, help="folder of photos (*.jpg, *.png), one face each")
    parser.add_argument("--out", type=Path, default=DATA, help=f"where to write it (default {DATA})")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = (img for img in (cv2.imread(str(p)) for p in tqdm(paths, desc="faces")) if img is not None)
    face = build_canonical_face(images)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, face)
    print(f"wrote {args.out}: {face.shape} from {len(paths)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
