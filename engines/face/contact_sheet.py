"""Contact sheets: many mouth ROIs or face crops in one image, each with a centre cross-hair, so a person
can see at a glance whether the crops are centred and steady.

`python -m engines.face.contact_sheet VIDEO... [--every N] [--out PNG]` makes one of the mouth ROIs of
videos (one row per video, crops placed with One-Euro-smoothed landmarks as a live tracker would) and
prints, per video, the frames with a face and the mouth-centre jitter with and without smoothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

_CROSS = (0, 0, 255)  # BGR red
_LABEL = (0, 255, 255)
_PAD = 2


def _tile(roi: np.ndarray, size: tuple[int, int], label: str | None) -> np.ndarray:
    roi = np.asarray(roi)
    if roi.dtype != np.uint8:
        raise ValueError(f"contact sheet tiles must be uint8, got {roi.dtype}")
    if roi.ndim == 3 and roi.shape[2] == 1:
        roi = roi[:, :, 0]
    if roi.ndim == 2:
        roi = cv2.cvtColor(roi, cv2.COLOR_GRAY2BGR)
    elif roi.ndim != 3 or roi.shape[2] != 3:
        raise ValueError(f"contact sheet tiles must be (H,W), (H,W,1) or (H,W,3), got {roi.shape}")
    tile = roi.copy() if roi.shape[:2] == size[::-1] else cv2.resize(roi, size, interpolation=cv2.INTER_AREA)
    w, h = size
    arm = max(3, min(w, h) // 8)
    cv2.line(tile, (w // 2 - arm, h // 2), (w // 2 + arm, h // 2), _CROSS, 1)
    cv2.line(tile, (w // 2, h // 2 - arm), (w // 2, h // 2 + arm), _CROSS, 1)
    if label:
        cv2.putText(tile, label, (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, _LABEL, 1, cv2.LINE_AA)
    return tile


def contact_sheet(rois: list[np.ndarray], cols: int, labels: list[str] | None = None,
                  path: str | Path | None = None) -> np.ndarray:
    """A BGR uint8 grid of `rois` (grayscale or 3-channel uint8; all drawn at the first one's size),
    `cols` per row, with a red cross-hair at each tile's centre and an optional label in its corner.
    Writes it as an image (PNG by the suffix) when `path` is given. Crops given as RGB (face_crop)
    should be flipped to BGR first for true colours."""
    if not rois:
        raise ValueError("contact sheet of no images")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    if labels is not None and len(labels) != len(rois):
        raise ValueError(f"{len(labels)} labels for {len(rois)} images")
    first = np.asarray(rois[0])
    size = (first.shape[1], first.shape[0])
    tiles = [_tile(r, size, labels[i] if labels else None) for i, r in enumerate(rois)]
    rows = -(-len(tiles) // cols)
    w, h = size
    sheet = np.full((rows * (h + _PAD) + _PAD, cols * (w + _PAD) + _PAD, 3), 64, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = _PAD + r * (h + _PAD), _PAD + c * (w + _PAD)
        sheet[y:y + h, x:x + w] = tile
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), sheet):
            raise OSError(f"could not write {path}")
    return sheet


def _video_report(path: Path, every: int) -> tuple[list[np.ndarray], list[str], str]:
    from engines.face.align import lip_centre, mouth_roi, mouth_transform, transform_scale
    from engines.face.canonical import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
    from engines.face.mesh import FaceMesh
    from engines.face.smoothing import OneEuroFilter, jitter

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    smoother = OneEuroFilter()
    rois, labels, raw, smooth, scales = [], [], [], [], []
    frames = 0
    with FaceMesh(max_faces=1) as mesh:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces = mesh.detect(frame)
            if faces:
                points = faces[0].landmarks
                eyes = float(np.linalg.norm(points[LEFT_EYE_OUTER, :2] - points[RIGHT_EYE_OUTER, :2]))
                steady = smoother.update(points, frames / fps, scale=max(eyes, 1.0))
                raw.append(lip_centre(points))
                smooth.append(lip_centre(steady))
                scales.append(transform_scale(mouth_transform(steady)))
                if frames % every == 0:
                    rois.append(mouth_roi(frame, steady))
                    labels.append(f"{path.stem[:8]} {frames}")
            frames += 1
    capture.release()
    scale = float(np.median(scales)) if scales else 0.0
    line = (f"{path.name}: {frames} frames, face in {len(raw)}; mouth-centre jitter (96 px ROI, after a "
            f"9-frame moving average): raw {jitter(np.array(raw).reshape(-1, 2)) * scale:.3f} px, "
            f"One Euro {jitter(np.array(smooth).reshape(-1, 2)) * scale:.3f} px")
    return rois, labels, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines.face.contact_sheet",
                                     description="Mouth-ROI contact sheet and jitter of videos.")
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--every", type=int, default=5, help="one tile every N frames (default 5)")
    parser.add_argument("--out", type=Path, default=Path("out/contact_sheet_mouths.png"))
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be >= 1")
    rows = []
    for video in args.videos:
        rois, labels, line = _video_report(video, args.every)
        print(line)
        rows.append((rois, labels))
    cols = max((len(r) for r, _ in rows), default=0)
    if not cols:
        print("no face found: no sheet written", file=sys.stderr)
        return 1
    blank = np.zeros_like(next(r for r, _ in rows if r)[0])
    tiles = [t for r, _ in rows for t in r + [blank] * (cols - len(r))]
    names = [n for _, lab in rows for n in lab + [""] * (cols - len(lab))]
    contact_sheet(tiles, cols, names, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
