"""Multi-face tracking: stable ids for the faces the face mesh finds, frame after frame.

Each frame's observations are matched to the live tracks by a minimum-cost assignment (Hungarian) whose
cost adds a motion term (overlap with, and landmark distance from, the track's constant-velocity
prediction) and an appearance term (a hue-saturation histogram of the face and its normalised landmark
shape, both compared with the track's running model). Appearance can veto a pair (a clearly different
person at the predicted place) and can allow one that motion rules out (the same person after a jump:
two people swapping places, a camera cut), so ids follow people, not places.

A track is born tentative, confirmed after `confirm_hits` consecutive detections, coasts on its
prediction through a gap of up to `coast_s`, and ends after a longer one; a tentative track ends at its
first miss. Ids are never reused. Each track's landmarks are smoothed causally (One Euro), and the
per-track features the synthesizers need (aligned mouth ROI, face crop, lip geometry) come from them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from engines.face import align, lips
from engines.face.mesh import FaceObservation, iou
from engines.face.smoothing import OneEuroFilter, OneEuroParams
from engines.params import param

Box = tuple[float, float, float, float]  # x, y, w, h in pixels

# The face oval of MediaPipe's mesh (FACEMESH_FACE_OVAL), in order around the face.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
_EYE_OUTER = (33, 263)  # outer eye corners: the roll of the face
_MESH_POINTS = 468  # the face mesh proper; the 10 iris points move with the gaze, not the person
_HIST_BINS = (16, 8)  # hue x saturation: skin, hair and lighting colour; value (brightness) left out
_MIN_SATURATION = 8.0  # mean HSV saturation (0..255) below which a face region has no colour to compare
# On the GRID speakers the colour distance is <= 0.07 within a person and >= 0.4 between people; the
# shape distance 0.005-0.06 within and 0.06-0.11 between (it moves with expression): colour leads.
_COLOUR_WEIGHT, _SHAPE_WEIGHT = 0.8, 0.2
_SHAPE_SCALE = 0.15  # RMS shape distance (unit-radius faces) that counts as entirely different
_FORBIDDEN = 1e6


@dataclass
class TrackerParams:
    confirm_hits: int = param(3, "consecutive detections that confirm a new track (birth hysteresis)")
    coast_s: float = param(0.3, "a confirmed track unseen this long ends; shorter gaps are bridged by "
                                       "its motion prediction (state coasting)")
    min_iou: float = param(0.1, "motion gate: least overlap with a track's predicted box")
    max_jump: float = param(0.5, "motion gate: largest mean landmark distance from a track's "
                                       "prediction, in face sizes")
    appearance_weight: float = param(5.0, "weight of the appearance distance against the motion cost "
                                                 "(which is in [0, 1])")
    max_appearance: float = param(0.5, "an observation less alike than this never continues a track")
    reid_appearance: float = param(0.25, "an observation at least this alike continues a track even "
                                                "where motion rules it out (people swapping places)")
    appearance_rate: float = param(0.1, "how fast a track's appearance model follows its face (0..1 "
                                               "per frame)")
    velocity_rate: float = param(0.5, "how fast the box velocity estimate follows the measured motion "
                                             "(0..1 per frame)")
    duplicate_iou: float = param(0.6, "two detections overlapping this much are one face: the weaker "
                                             "is dropped")

    def __post_init__(self) -> None:
        problems = [msg for bad, msg in (
            (self.confirm_hits < 1, "confirm_hits must be >= 1"),
            (self.coast_s < 0, "coast_s must be >= 0"),
            (not 0 <= self.min_iou <= 1, "min_iou must be in [0, 1]"),
            (self.max_jump <= 0, "max_jump must be > 0"),
            (self.appearance_weight < 0, "appearance_weight must be >= 0"),
            (not 0 < self.appearance_rate <= 1, "appearance_rate must be in (0, 1]"),
            (not 0 < self.velocity_rate <= 1, "velocity_rate must be in (0, 1]"),
            (not 0 < self.duplicate_iou <= 1, "duplicate_iou must be in (0, 1]"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))


# ---------------------------------------------------------------- appearance


@dataclass
class Appearance:
    """A cheap identity cue: hue-saturation histogram of the face oval (None where the frame has no
    colour: a grayscale camera), and the landmark shape normalised for position, scale and roll."""

    hist: np.ndarray | None  # (16*8,) float32, sums to 1
    shape: np.ndarray  # (468, 2) float32, zero mean, unit RMS radius, eyes level

    def blend(self, other: Appearance, rate: float) -> Appearance:
        shape = (1 - rate) * self.shape + rate * other.shape
        if self.hist is None or other.hist is None:  # a colourless frame teaches nothing about colour
            return Appearance(other.hist if self.hist is None else self.hist, shape)
        hist = (1 - rate) * self.hist + rate * other.hist
        return Appearance(hist / max(float(hist.sum()), 1e-9), shape)


def describe(bgr: np.ndarray, landmarks: np.ndarray) -> Appearance:
    """The appearance of the face at `landmarks` (pixels) in a BGR frame."""
    height, width = bgr.shape[:2]
    oval = landmarks[list(FACE_OVAL), :2]
    x0, y0 = np.clip(np.floor(oval.min(axis=0)).astype(int), 0, (width, height))
    x1, y1 = np.clip(np.ceil(oval.max(axis=0)).astype(int) + 1, 0, (width, height))
    hist = None
    if x1 - x0 >= 2 and y1 - y0 >= 2:
        # Only the face's own box is converted and masked: a few hundred microseconds per face.
        hsv = cv2.cvtColor(np.ascontiguousarray(bgr[y0:y1, x0:x1]), cv2.COLOR_BGR2HSV)
        mask = np.zeros(hsv.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(oval - (x0, y0)).astype(np.int32)], 255)
        if cv2.mean(hsv, mask)[1] >= _MIN_SATURATION:
            counts = cv2.calcHist([hsv], [0, 1], mask, list(_HIST_BINS), [0, 180, 0, 256]).ravel()
            hist = (counts / max(float(counts.sum()), 1.0)).astype(np.float32)
    return Appearance(hist, _normalised_shape(landmarks))


def _normalised_shape(landmarks: np.ndarray) -> np.ndarray:
    points = landmarks[:_MESH_POINTS, :2].astype(np.float64)
    dx, dy = points[_EYE_OUTER[1]] - points[_EYE_OUTER[0]]
    angle = np.arctan2(dy, dx)
    c, s = np.cos(angle), np.sin(angle)
    centred = points - points.mean(axis=0)
    level = centred @ np.array([[c, -s], [s, c]])  # rotate by -angle: the eye line horizontal
    radius = np.sqrt((level**2).sum(axis=1).mean())
    return (level / max(radius, 1e-9)).astype(np.float32)


def appearance_distance(a: Appearance, b: Appearance) -> float:
    """0 for the same look, up to 1 for entirely different: mostly colour (Bhattacharyya distance
    between the histograms, which separates people well), partly shape (which expression and pose also
    move). Without colour on either side only the shape part counts: motion has to do the rest."""
    shape = _SHAPE_WEIGHT * min(np.sqrt(((a.shape - b.shape) ** 2).sum(axis=1).mean()) / _SHAPE_SCALE, 1.0)
    if a.hist is None or b.hist is None:
        return float(shape)
    colour = cv2.compareHist(a.hist, b.hist, cv2.HISTCMP_BHATTACHARYYA)
    return float(_COLOUR_WEIGHT * min(max(colour, 0.0), 1.0) + shape)


# ---------------------------------------------------------------- assignment


def min_cost_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Rows matched to columns at least total cost (Hungarian method, shortest augmenting paths,
    O(n^3)); every row is matched when rows <= columns, else every column. Returns (row, col) pairs."""
    cost = np.asarray(cost, dtype=np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        return []
    # Potentials u (rows) and v (columns); p[j] is the row matched to column j (1-based, 0 = none).
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]
    return sorted((c, r) for r, c in pairs) if transposed else sorted(pairs)


# ---------------------------------------------------------------- tracks


@dataclass
class TrackState:
    """One track in one frame: what the tracker publishes. Geometry is in source-image pixels."""

    id: int
    state: str  # tentative | confirmed | coasting
    bbox: Box
    score: float
    landmarks: np.ndarray  # (478, 3) float32, smoothed
    mouth_roi: np.ndarray  # (88, 88) uint8, aligned to the canonical face
    face_crop: np.ndarray  # (S, S, 3) uint8 RGB, aligned
    lip_geometry: np.ndarray  # (K,) float32, see engines.face.lips
    mouth_centre: tuple[float, float]
    mouth_opening: float  # see engines.face.lips
    age_s: float  # since the track was born
    hits: int  # frames in which it was detected


def _centre(box: Box) -> np.ndarray:
    return np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])


def _interocular(landmarks: np.ndarray) -> float:
    return max(float(np.linalg.norm(landmarks[_EYE_OUTER[1], :2] - landmarks[_EYE_OUTER[0], :2])), 1.0)


class _Track:
    def __init__(self, track_id: int, obs: FaceObservation, look: Appearance, t_s: float,
                 smoothing: OneEuroParams) -> None:
        self.id = track_id
        self.state = "tentative"
        self.born_s = self.seen_s = t_s
        self.hits = 1
        self.bbox = np.array(obs.bbox, dtype=np.float64)
        self.velocity = np.zeros(4)  # of x, y, w, h in pixels per second
        self.score = obs.score
        self.raw = obs.landmarks  # the last detection
        self.appearance = look
        self.filter = OneEuroFilter(smoothing)
        self.landmarks = self._smoothed(t_s)

    def _smoothed(self, t_s: float, landmarks: np.ndarray | None = None) -> np.ndarray:
        points = self.raw if landmarks is None else landmarks
        # Speed in inter-ocular distances per second: one smoothing for near and far faces.
        return self.filter.update(points, t_s, scale=_interocular(points))

    def predict(self, t_s: float) -> np.ndarray:
        return self.bbox + self.velocity * (t_s - self.seen_s)

    def predicted_landmarks(self, t_s: float) -> np.ndarray:
        shift = _centre(tuple(self.predict(t_s))) - _centre(tuple(self.bbox))
        out = self.raw.copy()
        out[:, :2] += shift.astype(np.float32)
        return out

    def update(self, obs: FaceObservation, look: Appearance, t_s: float, params: TrackerParams,
               jumped: bool, clean: bool) -> None:
        box = np.array(obs.bbox, dtype=np.float64)
        dt = t_s - self.seen_s
        if jumped:
            # Re-identified across the frame: the old motion and smoothing say nothing about the new place.
            self.velocity[:] = 0
            self.filter.reset()
        elif dt > 0:
            measured = (box - self.bbox) / dt
            self.velocity += params.velocity_rate * (measured - self.velocity)
        self.bbox, self.seen_s, self.score, self.raw = box, t_s, obs.score, obs.landmarks
        self.hits += 1
        if clean:  # an overlapped face would teach the model its neighbour's look
            self.appearance = self.appearance.blend(look, params.appearance_rate)
        self.landmarks = self._smoothed(t_s)
        if self.state == "coasting" or (self.state == "tentative" and self.hits >= params.confirm_hits):
            self.state = "confirmed"

    def coast(self, t_s: float) -> np.ndarray:
        """Unseen this frame: carry the last landmarks along the predicted motion; returns them."""
        self.state = "coasting"
        predicted = self.predicted_landmarks(t_s)
        self.landmarks = self._smoothed(t_s, predicted)
        return predicted


class FaceTracker:
    """Stable ids over a stream of per-frame face observations (see the module docstring).

    `update(bgr, observations, t_s)` takes one frame, what the face mesh found in it, and its time in
    seconds (acquisition or media time, increasing), and returns the live tracks.
    """

    def __init__(self, params: TrackerParams | None = None, smoothing: OneEuroParams | None = None,
                 crop_size: int = 112) -> None:
        self.params = params or TrackerParams()
        self.smoothing = smoothing or OneEuroParams()
        self.crop_size = crop_size
        self.tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self.started = 0
        self.ended = 0

    def update(self, bgr: np.ndarray, observations: list[FaceObservation], t_s: float) -> list[TrackState]:
        p = self.params
        if bgr.ndim == 2 or bgr.shape[2] != 3:  # grayscale or BGRA: the colour cue needs 3 channels
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR if bgr.ndim == 2 or bgr.shape[2] == 1
                               else cv2.COLOR_BGRA2BGR)
        observations = self._deduplicated(observations)
        looks = [describe(bgr, o.landmarks) for o in observations]
        clean = [all(j == i or iou(o.bbox, q.bbox) == 0 for j, q in enumerate(observations))
                 for i, o in enumerate(observations)]
        cost, jumps = self._costs(observations, looks, t_s)
        matched_tracks, matched_obs = set(), set()
        for r, c in min_cost_assignment(cost):
            if cost[r, c] >= _FORBIDDEN:
                continue
            self.tracks[r].update(observations[c], looks[c], t_s, p, bool(jumps[r, c]), clean[c])
            matched_tracks.add(r)
            matched_obs.add(c)
        survivors, states = [], []
        for r, track in enumerate(self.tracks):
            if r in matched_tracks:
                lips_at = track.raw
            elif track.state == "tentative" or t_s - track.seen_s > p.coast_s:
                self.ended += 1
                continue
            else:
                lips_at = track.coast(t_s)
            survivors.append(track)
            states.append(self._state(bgr, track, lips_at, t_s))
        for c, obs in enumerate(observations):
            if c not in matched_obs:
                track = _Track(next(self._ids), obs, looks[c], t_s, self.smoothing)
                self.started += 1
                survivors.append(track)
                states.append(self._state(bgr, track, track.raw, t_s))
        self.tracks = survivors
        return states

    def _deduplicated(self, observations: list[FaceObservation]) -> list[FaceObservation]:
        kept: list[FaceObservation] = []
        for obs in sorted(observations, key=lambda o: -o.score):
            if all(iou(obs.bbox, k.bbox) < self.params.duplicate_iou for k in kept):
                kept.append(obs)
        return kept

    def _costs(self, observations: list[FaceObservation], looks: list[Appearance],
               t_s: float) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        cost = np.full((len(self.tracks), len(observations)), _FORBIDDEN)
        jumps = np.zeros(cost.shape, dtype=bool)
        for r, track in enumerate(self.tracks):
            predicted = track.predict(t_s)
            size = max(float(np.sqrt(max(predicted[2], 1.0) * max(predicted[3], 1.0))), 1.0)
            expected = track.predicted_landmarks(t_s)[:, :2]
            for c, obs in enumerate(observations):
                look = appearance_distance(track.appearance, looks[c])
                if look > p.max_appearance:
                    continue
                overlap = iou(tuple(predicted), obs.bbox)
                distance = float(np.linalg.norm(obs.landmarks[:, :2] - expected, axis=1).mean()) / size
                if overlap >= p.min_iou or distance <= p.max_jump:
                    motion = 0.5 * (1 - overlap) + 0.5 * min(distance / p.max_jump, 1.0)
                elif look <= p.reid_appearance:
                    motion, jumps[r, c] = 1.0, True
                else:
                    continue
                # A small premium lets an established track win a tie against a tentative one.
                cost[r, c] = motion + p.appearance_weight * look + (0.05 if track.state == "tentative" else 0)
        return cost, jumps

    def _state(self, bgr: np.ndarray, track: _Track, lips_at: np.ndarray, t_s: float) -> TrackState:
        """Crops are placed with the smoothed landmarks (steady); the lips are measured on this frame's
        own (smoothing would damp their motion, which is the signal)."""
        lm = track.landmarks
        roi = align.mouth_roi(bgr, lm)
        crop = align.face_crop(bgr, lm, size=self.crop_size)
        geometry = lips.lip_features(lips_at)
        centre = align.lip_centre(lm)
        box = track.predict(t_s) if track.state == "coasting" else track.bbox
        return TrackState(id=track.id, state=track.state, bbox=tuple(float(v) for v in box),
                          score=float(track.score), landmarks=lm, mouth_roi=roi, face_crop=crop,
                          lip_geometry=geometry.vector(), mouth_centre=(float(centre[0]), float(centre[1])),
                          mouth_opening=geometry.opening, age_s=t_s - track.born_s, hits=track.hits)
