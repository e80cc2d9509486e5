"""Tracker benchmark: ms per frame (p50/p95) of the face mesh alone and of the whole per-frame tracker
(mesh, association, smoothing, aligned mouth ROI and face crop, lip features, target selection), on one
CPU core, at 360x288 and 640x480, with 1 face (real GRID clips) and 4 faces (a 2x2 mosaic of them).

Run: `.venv/bin/python bench/tracker.py [--repeat N] [--cpu K]`. Prints a markdown table.

One core: the process is pinned to one CPU (sched_setaffinity) before MediaPipe loads, so every thread
it starts (graph executor, XNNPACK) shares that core; OpenCV runs single-threaded (cv2.setNumThreads(1))
and so do OpenMP/BLAS (OMP_NUM_THREADS=1). The tracker uses no torch. MediaPipe's legacy face mesh
exposes no thread-count option of its own, hence the pinning. Frames are decoded beforehand; the first
frames of each run (graph start-up, model load) are left out of the figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
GRID = REPO.parent / "shared" / "real" / "grid-dev"
WARMUP = 5  # frames left out at the start of each run
SIZES = {"360x288": (360, 288), "640x480": (640, 480)}


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    return frames


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scaled to fit `size` (aspect kept), padded with black to exactly that size."""
    width, height = size
    scale = min(width / frame.shape[1], height / frame.shape[0])
    resized = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    return cv2.copyMakeBorder(resized, top, height - resized.shape[0] - top, left,
                              width - resized.shape[1] - left, cv2.BORDER_CONSTANT)


def scenes(clips: list[list[np.ndarray]]) -> dict[tuple[int, str], list[np.ndarray]]:
    """(faces, size) → frames: each clip on its own for 1 face, four clips in a 2x2 mosaic for 4."""
    n = min(len(c) for c in clips)
    single = [f for c in clips for f in c]
    quad = [np.vstack([np.hstack([clips[0][k], clips[1 % len(clips)][k]]),
                       np.hstack([clips[2 % len(clips)][k], clips[0][n - 1 - k]])]) for k in range(n)]
    return {(faces, name): [_fit(f, size) for f in frames]
            for faces, frames in ((1, single), (4, quad)) for name, size in SIZES.items()}


def _time(step: Callable[[np.ndarray, float], int], frames: list[np.ndarray], repeat: int,
          desc: str) -> tuple[np.ndarray, float]:
    """Per-frame milliseconds (warm-up left out) and the mean faces found."""
    times, found = [], []
    for _ in tqdm(range(repeat), desc=desc, leave=False):
        for k, frame in enumerate(frames):
            start = time.perf_counter()
            faces = step(frame, k / 25.0)
            if k >= WARMUP:
                times.append((time.perf_counter() - start) * 1e3)
                found.append(faces)
    return np.array(times), float(np.mean(found))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2, help="passes over each scene's frames")
    ap.add_argument("--cpu", type=int, default=None, help="the CPU to pin to (default: the first allowed)")
    args = ap.parse_args()
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    cv2.setNumThreads(1)
    # Imported only now, pinned: MediaPipe's threads inherit the affinity.
    from engines.face.mesh import FaceMesh
    from node.params import build
    from node.tracker import TrackerNodeParams, make_pipeline

    paths = sorted(GRID.glob("*.mpg"))
    if not paths:
        print(f"no GRID clips in {GRID}", file=sys.stderr)
        return 1
    clips = [_frames(p) for p in paths]
    rows = []
    for (faces, size), frames in scenes(clips).items():
        mesh = FaceMesh(max_faces=4)
        mesh_ms, found = _time(lambda f, _t, mesh=mesh: len(mesh.detect(f)), frames, args.repeat,
                               f"mesh {faces} face(s) {size}")
        mesh.close()
        pipeline = make_pipeline(build(TrackerNodeParams, {"max_faces": 4}))
        full_ms, _ = _time(lambda f, t, p=pipeline: p.process(f, t)[0], frames, args.repeat,
                           f"tracker {faces} face(s) {size}")
        pipeline.close()
        rows.append((faces, size, found, mesh_ms, full_ms))
    print(f"\n`{' '.join([Path(sys.executable).name, *sys.argv])}`: one core (CPU {cpu} pinned), "
          f"{len(paths)} GRID clips, {args.repeat} pass(es), first {WARMUP} frames of each pass left out\n")
    print("| faces | size | faces found/frame | mesh p50 ms | mesh p95 ms | tracker p50 ms "
          "| tracker p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for faces, size, found, mesh_ms, full_ms in rows:
        print(f"| {faces} | {size} | {found:.2f} | {np.percentile(mesh_ms, 50):.1f} | "
              f"{np.percentile(mesh_ms, 95):.1f} | {np.percentile(full_ms, 50):.1f} | "
              f"{np.percentile(full_ms, 95):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
