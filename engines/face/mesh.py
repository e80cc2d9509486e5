"""MediaPipe face mesh (0.10.21, bundled models, offline) on BGR frames of any size: 478 landmarks per face.

Coordinates are source-image pixels: x = u * W, y = v * H, and z = MediaPipe's relative depth * W (the
scale MediaPipe itself uses for z), so all three axes share one pixel scale.

Score: MediaPipe's face mesh does not output the landmark model's presence score, only a face kept or
dropped against `min_tracking`. Each face's `score` is therefore the face detector's confidence for it
(the detection overlapping it best); in video mode, on frames where the detector did not run (MediaPipe
only re-detects while fewer than `max_faces` faces are tracked), a face keeps the score of the face it
continues from in the previous frame, and 1.0 when it has none (a face the tracker confirmed but no
detection ever scored).

MediaPipe's C++ side writes a few one-time lines (TFLite delegate, feedback-tensor and projection
warnings) straight to file descriptor 2 as each graph loads its models. Until a graph has produced its
first face (by then every model in it is loaded and those lines are out), each call runs with fd 2
redirected to a temporary file; the glog/absl lines are then logged at DEBUG on this module's logger,
and anything else (another thread's output in that window) is written back to the real stderr.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from mediapipe.python.solution_base import SolutionBase

log = logging.getLogger(__name__)

N_LANDMARKS = 478
MIN_SIDE = 16  # below this no face can be found; MediaPipe is not asked

# FACEMESH_LIPS (mediapipe/python/solutions/face_mesh_connections.py) as closed contours: from the
# corner at the image left (61 / 78), along the upper lip to the other corner (291 / 308), back along
# the lower lip. 0/17 are the outer upper/lower midpoints, 13/14 the inner ones.
LIPS_OUTER: tuple[int, ...] = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409,
                               291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER: tuple[int, ...] = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415,
                               308, 324, 318, 402, 317, 14, 87, 178, 88, 95)

# Calculator options of face_landmark_front_cpu, as mediapipe's own FaceMesh sets them.
_DETECTION_THRESHOLD = ("facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                        "TensorsToDetectionsCalculator.min_score_thresh")
_TRACKING_THRESHOLD = "facelandmarkcpu__ThresholdingCalculator.threshold"
_NATIVE_LOG_LINE = re.compile(r"^([IWEF]\d{4} |INFO: |WARNING: All log messages)")
_STDERR_LOCK = threading.Lock()  # fd 2 is process-wide: one redirection at a time


@dataclass
class FaceObservation:
    landmarks: np.ndarray  # (478, 3) float32, pixels (see module docstring)
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels, from the landmarks, clipped to the image
    score: float  # detector confidence in [0, 1] (see module docstring)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous RGB uint8 copy of a BGR, BGRA or grayscale ((H,W) or (H,W,1)) uint8 image.

    Raises ValueError, naming the problem, for anything else.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy image, got {type(image).__name__}")
    if image.size == 0:
        raise ValueError(f"empty image (shape {image.shape})")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    raise ValueError(f"expected an (H,W), (H,W,1), (H,W,3) or (H,W,4) image, got shape {image.shape}")


def landmarks_bbox(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """x, y, w, h of the landmarks' extent, clipped to a width x height image."""
    x0, y0 = np.clip(landmarks[:, :2].min(axis=0), 0, (width, height))
    x1, y1 = np.clip(landmarks[:, :2].max(axis=0), 0, (width, height))
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two x, y, w, h boxes (0 when either is empty)."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Route what MediaPipe's C++ writes to fd 2 meanwhile (see the module docstring)."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if _NATIVE_LOG_LINE.match(line):
                    log.debug("mediapipe: %s", line)
                elif line:
                    os.write(2, (line + "\n").encode())


class FaceMesh:
    """Up to `max_faces` faces per frame with 478 landmarks each (`refine` adds the iris and refines the
    lips and eyes; without it MediaPipe gives 468 points and this class refuses: the lip and eye points
    used downstream need the refined model).

    static=False is video mode (what the tracker runs live): landmarks of the previous frame seed the
    next, and detection only runs while fewer than max_faces faces are tracked. A frame whose size
    differs from the previous one starts a fresh graph, since the previous frame's landmarks say
    nothing about an image of another size. static=True treats every frame on its own.
    """

    def __init__(self, max_faces: int = 4, refine: bool = True, static: bool = False,
                 min_detection: float = 0.5, min_tracking: float = 0.5) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if not refine:
            raise ValueError("refine=False gives 468 landmarks; this tracker needs the refined 478")
        for name, value in (("min_detection", min_detection), ("min_tracking", min_tracking)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.max_faces = max_faces
        self.static = static
        self.min_detection = min_detection
        self.min_tracking = min_tracking
        self._graph: SolutionBase | None = None
        self._size: tuple[int, int] | None = None
        self._settled = False  # the graph has produced a face: its one-time log lines are out
        self._previous: list[FaceObservation] = []

    def warm_up(self) -> None:
        """Build the graph and run it once on a blank frame now, so the first real frame does not pay
        for it (≈0.6 s here: frames a live tracker would drop while it waits)."""
        if self._graph is None:
            self._graph = self._new_graph()
        with _native_stderr_to_log():
            self._graph.process({"image": np.zeros((2 * MIN_SIDE, 2 * MIN_SIDE, 3), np.uint8)})
        self._size, self._settled, self._previous = None, False, []

    def _new_graph(self) -> SolutionBase:
        # Imported here: mediapipe takes 1-3 s to import, and the constants of this package (lip
        # indices, alignment) are needed by processes that never run a face mesh.
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import face_mesh as _mp_face_mesh

        with _native_stderr_to_log():
            return SolutionBase(
                binary_graph_path=_mp_face_mesh._BINARYPB_FILE_PATH,
                side_inputs={"num_faces": self.max_faces, "with_attention": True,
                             "use_prev_landmarks": not self.static},
                calculator_params={_DETECTION_THRESHOLD: self.min_detection,
                                   _TRACKING_THRESHOLD: self.min_tracking},
                outputs=["multi_face_landmarks", "face_detections"])

    def detect(self, bgr: np.ndarray) -> list[FaceObservation]:
        """The faces in a BGR (or BGRA, or grayscale) uint8 frame; [] for none or a frame too small."""
        rgb = to_rgb(bgr)
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_SIDE:
            return []
        if self._graph is not None and not self.static and self._size not in (None, (width, height)):
            self._close_graph()
        if self._graph is None:
            self._graph = self._new_graph()
            self._settled = False
            self._previous = []
        self._size = (width, height)
        if self._settled:
            result = self._graph.process({"image": rgb})
        else:
            with _native_stderr_to_log():
                result = self._graph.process({"image": rgb})
        faces = self._observations(result, width, height)
        self._settled = self._settled or bool(faces)
        self._previous = faces
        return faces

    def _observations(self, result: object, width: int, height: int) -> list[FaceObservation]:
        faces: list[FaceObservation] = []
        detections = []
        for det in getattr(result, "face_detections", None) or []:
            box = det.location_data.relative_bounding_box
            detections.append(((box.xmin * width, box.ymin * height, box.width * width, box.height * height),
                               float(det.score[0]) if det.score else 1.0))
        for face in getattr(result, "multi_face_landmarks", None) or []:
            points = np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark],
                              dtype=np.float32)
            if points.shape != (N_LANDMARKS, 3) or not np.isfinite(points).all():
                continue
            bbox = landmarks_bbox(points, width, height)
            faces.append(FaceObservation(points, bbox, self._score(bbox, detections)))
        return faces

    def _score(self, bbox: tuple[float, float, float, float],
               detections: list[tuple[tuple[float, float, float, float], float]]) -> float:
        for candidates in (detections, [(f.bbox, f.score) for f in self._previous]):
            overlaps = [(iou(bbox, box), score) for box, score in candidates]
            best = max(overlaps, default=(0.0, 1.0))
            if best[0] > 0.3:
                return float(np.clip(best[1], 0.0, 1.0))
        return 1.0

    def _close_graph(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None

    def close(self) -> None:
        """Release MediaPipe's graph (a later detect() starts a new one)."""
        self._close_graph()
        self._previous = []

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
