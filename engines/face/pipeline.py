"""The per-frame face pipeline: face mesh → multi-face tracker → target selection.

One place for the wiring that the tracker node, `voxsight track`, the tracker bench and the corpus
loaders all run.
"""

from __future__ import annotations

import numpy as np

from engines.face.mesh import FaceMesh
from engines.face.selection import SelectionParams, TargetSelector
from engines.face.smoothing import OneEuroParams
from engines.face.tracking import FaceTracker, TrackerParams, TrackState


class FacePipeline:
    def __init__(self, tracking: TrackerParams | None = None, smoothing: OneEuroParams | None = None,
                 selection: SelectionParams | None = None, *, max_faces: int = 4, min_detection: float = 0.5,
                 min_tracking: float = 0.5, crop_size: int = 112) -> None:
        self.tracker = FaceTracker(tracking or TrackerParams(), smoothing or OneEuroParams(),
                                   crop_size=crop_size)
        self.selector = TargetSelector(selection or SelectionParams())
        self.mesh = FaceMesh(max_faces=max_faces, min_detection=min_detection, min_tracking=min_tracking)
        self._last_t: float | None = None

    def process(self, bgr: np.ndarray, t_s: float) -> tuple[int, list[TrackState], int]:
        """(faces detected, live tracks, target id) for one BGR frame at time `t_s` (seconds)."""
        if self._last_t is not None and t_s <= self._last_t:
            t_s = self._last_t + 1e-3  # a clock that steps back must not stall the motion model
        self._last_t = t_s
        observations = self.mesh.detect(bgr)
        tracks = self.tracker.update(bgr, observations, t_s)
        target = self.selector.update(tracks, t_s, (bgr.shape[1], bgr.shape[0]))
        return len(observations), tracks, target

    def close(self) -> None:
        self.mesh.close()

    def __enter__(self) -> FacePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
