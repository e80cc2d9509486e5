"""Aligned crops from face-mesh landmarks: the LipVoicer / Auto-AVSR mouth ROI and an identity face crop.

Mouth ROI (ARCHITECTURE §4): a least-squares similarity transform (rotation, uniform scale; closed form,
deterministic) maps the rigid points of the face (eye corners and the nose ridge: no point that moves
when the mouth does) onto the canonical mean face (engines/face/canonical.py), at the scale where its
outer eye corners are EYE_DISTANCE_PX apart. The scale is set on the eyes, not on the mouth, because the
mean face's mouth is widened by the smiles in its photos: at 84 px a neutral mouth (0.50-0.57 eye
distances on the real GRID speakers) is 42-48 px wide, 44-50 % of the 96 px crop, like Auto-AVSR's
crops, with the nostrils near the top edge and the chin near the bottom. The 96x96 crop is centred on
this frame's lip centre (the mean of the 40 lip points), as AV-HuBERT and Auto-AVSR centre theirs on
the transformed mouth points; it is converted to grayscale and its centre 88x88 kept. Pixels from
outside the image are black (Auto-AVSR warps with OpenCV's constant border too), so a face at the border
gives a padded crop, never an error.

Face crop: the 5-point ArcFace template (eye centres, nose tip, mouth corners) scaled to `size`, the
alignment identity encoders expect.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from engines.face.canonical import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, canonical_face
from engines.face.mesh import LIPS_INNER, LIPS_OUTER, N_LANDMARKS

ROI_SIZE = 96
CROP_SIZE = 88
EYE_DISTANCE_PX = 84.0  # outer-eye-corner distance in the 96 px ROI (module docstring)
ROI_MEAN, ROI_STD = 0.421, 0.165  # LipVoicer / Auto-AVSR grayscale normalisation
MOUTH_CORNERS = (61, 291)
LIP_POINTS = LIPS_OUTER + LIPS_INNER
# Eye corners (33/133 the subject's right eye, 362/263 the left) and the nose ridge from the bridge
# (168) to the tip (1) and below it (2).
STABLE_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 2)
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation; no reflection) that maps src (N, 2)
    onto dst (N, 2) with the least squared error (Umeyama's closed form)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    norm = float((s**2).sum())
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError("degenerate points: they span no area, no transform is defined")
    a = float((s * d).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2+) points (extra columns ignored)."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    return pts @ matrix[:, :2].T + matrix[:, 2]


def transform_scale(matrix: np.ndarray) -> float:
    """Output pixels per input pixel of a similarity matrix."""
    return float(np.hypot(matrix[0, 0], matrix[1, 0]))


def _checked(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks)
    if pts.ndim != 2 or pts.shape[0] != N_LANDMARKS or pts.shape[1] < 2:
        raise ValueError(f"expected ({N_LANDMARKS}, 2 or 3) landmarks, got shape {pts.shape}")
    if not np.isfinite(pts[:, :2]).all():
        raise ValueError("landmarks contain NaN or infinity")
    return pts


@cache
def _mouth_reference() -> np.ndarray:
    """Canonical stable points in ROI pixels, relative to the canonical lip centre."""
    face = canonical_face()[:, :2].astype(np.float64)
    scale = EYE_DISTANCE_PX / np.linalg.norm(face[RIGHT_EYE_OUTER] - face[LEFT_EYE_OUTER])
    return (face[list(STABLE_POINTS)] - face[list(LIP_POINTS)].mean(axis=0)) * scale


def lip_centre(landmarks: np.ndarray) -> np.ndarray:
    """Mean of the 40 lip points, (2,) in the landmarks' pixels."""
    return _checked(landmarks)[list(LIP_POINTS), :2].astype(np.float64).mean(axis=0)


def mouth_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 matrix from image pixels to the 96x96 mouth ROI: rotation and scale from the stable points,
    the lip centre at the ROI centre."""
    pts = _checked(landmarks)
    matrix = similarity(pts[list(STABLE_POINTS), :2], _mouth_reference())
    centre = transform_points(matrix, lip_centre(pts)[None])[0]
    matrix[:, 2] += ROI_SIZE / 2 - centre
    return matrix


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`image` warped by `matrix` to size x size, black outside the image. A strong reduction first
    shrinks just the region it reads with area averaging, so a large face does not alias."""
    scale = transform_scale(matrix)
    if scale < 0.5:
        inverse = cv2.invertAffineTransform(matrix)
        corners = transform_points(inverse, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        height, width = image.shape[:2]
        margin = 2 / scale
        x0, y0 = np.clip(np.floor(corners.min(axis=0) - margin), 0, (width, height)).astype(int)
        x1, y1 = np.clip(np.ceil(corners.max(axis=0) + margin), 0, (width, height)).astype(int)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 2 * scale  # leave the final warp a reduction of 2: linear interpolation is fine there
            region = image[y0:y1, x0:x1]
            small = cv2.resize(region, (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))),
                               interpolation=cv2.INTER_AREA)
            fx, fy = small.shape[1] / (x1 - x0), small.shape[0] / (y1 - y0)
            # output <- small pixel: undo the resize (OpenCV maps pixel centres), then the crop offset.
            matrix = matrix @ np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5],
                                        [0, 0, 1]])
            image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)


def _checked_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.size == 0 or image.dtype != np.uint8:
        raise ValueError("expected a non-empty uint8 image")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(f"expected an (H,W), (H,W,1), (H,W,3) or (H,W,4) image, got shape {image.shape}")
    return image


def mouth_roi_96(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The full 96x96 grayscale uint8 mouth ROI (before the 88x88 centre crop)."""
    warped = warp(_checked_image(bgr), mouth_transform(landmarks), ROI_SIZE)
    return _gray(warped)


def mouth_roi(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The model's mouth ROI: the centre 88x88 of the 96x96 grayscale crop, uint8."""
    lo = (ROI_SIZE - CROP_SIZE) // 2
    return np.ascontiguousarray(mouth_roi_96(bgr, landmarks)[lo:lo + CROP_SIZE, lo:lo + CROP_SIZE])


def normalise_roi(roi: np.ndarray) -> np.ndarray:
    """uint8 ROI(s) -> float32 model input: /255, then (x - 0.421) / 0.165."""
    out = np.array(roi, dtype=np.float32)  # a copy, scaled in place: a stream normalises 54 ROIs a hop
    out /= 255.0
    out -= ROI_MEAN
    out /= ROI_STD
    return out


def face_transform(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 matrix from image pixels to the size x size ArcFace-aligned face crop."""
    pts = _checked(landmarks)[:, :2].astype(np.float64)
    five = np.array([pts[[33, 133]].mean(axis=0), pts[[362, 263]].mean(axis=0), pts[1],
                     pts[MOUTH_CORNERS[0]], pts[MOUTH_CORNERS[1]]])
    return similarity(five, ARCFACE_112 * (size / 112.0))


def face_crop(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned face, (size, size, 3) uint8 RGB (grayscale input is replicated to three channels)."""
    if size < 8:
        raise ValueError(f"face crop size must be >= 8, got {size}")
    image = _checked_image(bgr)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    warped = warp(image, face_transform(landmarks, size), size)
    if warped.ndim == 2:
        return cv2.cvtColor(warped, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(warped, cv2.COLOR_BGR2RGB if warped.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
