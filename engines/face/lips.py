"""Lip geometry features from face-mesh landmarks: the same on real and rendered faces (only 2-D point
positions are used, never pixels or MediaPipe's depth).

Normalisation: the similarity transform (rotation, uniform scale) that maps the face's rigid points
(eye corners, nose ridge; align.STABLE_POINTS) onto the canonical face in units of its outer-eye-corner
distance removes roll and scale, using points that do not move when the mouth does; the lip points are
then taken relative to their own centre (the mean of the 40). One unit is one inter-ocular distance
(outer eye corners), x to the image right, y down.

Feature vector (float32, length FEATURE_LENGTH = 82):
    [0:40]   x, y of the 20 outer-lip points, interleaved (x0, y0, x1, y1, ...), in mesh.LIPS_OUTER order
    [40:80]  x, y of the 20 inner-lip points, interleaved, in mesh.LIPS_INNER order
    [80]     opening: inner-lip vertical gap (mean over the three middle point pairs, >= 0)
    [81]     width: mouth-corner distance (61 to 291)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from engines.face.align import LIP_POINTS, MOUTH_CORNERS, STABLE_POINTS, similarity, transform_points
from engines.face.canonical import canonical_face
from engines.face.mesh import N_LANDMARKS

FEATURE_LENGTH = 2 * len(LIP_POINTS) + 2
# Upper/lower inner-lip pairs around the middle: (82, 87), (13, 14), (312, 317).
_GAP_PAIRS = ((82, 87), (13, 14), (312, 317))


@dataclass
class LipFeatures:
    points: np.ndarray  # (40, 2) float32: outer then inner lip points, normalised (module docstring)
    opening: float  # inner-lip vertical gap, inter-ocular units
    width: float  # mouth-corner distance, inter-ocular units

    def vector(self) -> np.ndarray:
        """The flat (FEATURE_LENGTH,) float32 layout of the module docstring."""
        return np.concatenate([self.points.reshape(-1), [self.opening, self.width]]).astype(np.float32)


@cache
def _stable_reference() -> np.ndarray:
    return canonical_face()[list(STABLE_POINTS), :2].astype(np.float64)


@cache
def mirror_order() -> np.ndarray:
    """For each of the 40 lip points, the index of its mirror image across the face's vertical midline (a
    face seen in a mirror has its point k where point mirror_order()[k] was). Read off the canonical face, so
    it follows LIP_POINTS whatever their order."""
    lips = canonical_face()[list(LIP_POINTS), :2].astype(np.float64)
    mirrored = lips * [-1, 1] + [2 * lips[:, 0].mean(), 0]
    order = np.argmin(((lips[None] - mirrored[:, None]) ** 2).sum(axis=2), axis=1)
    if not (order[order] == np.arange(len(order))).all():
        raise RuntimeError("the canonical face's lip points are not mirror-symmetric")
    order.setflags(write=False)
    return order


def lip_features(landmarks: np.ndarray) -> LipFeatures:
    """Lip features of one face's (478, 2 or 3) pixel landmarks; ValueError for malformed ones."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != N_LANDMARKS or pts.shape[1] < 2:
        raise ValueError(f"expected ({N_LANDMARKS}, 2 or 3) landmarks, got shape {pts.shape}")
    if not np.isfinite(pts[:, :2]).all():
        raise ValueError("landmarks contain NaN or infinity")
    matrix = similarity(pts[list(STABLE_POINTS), :2], _stable_reference())
    index = {k: i for i, k in enumerate(LIP_POINTS)}
    lips = transform_points(matrix, pts[list(LIP_POINTS)])
    lips -= lips.mean(axis=0)
    gap = np.mean([lips[index[lower], 1] - lips[index[upper], 1] for upper, lower in _GAP_PAIRS])
    width = np.linalg.norm(lips[index[MOUTH_CORNERS[1]]] - lips[index[MOUTH_CORNERS[0]]])
    return LipFeatures(lips.astype(np.float32), float(max(gap, 0.0)), float(width))
