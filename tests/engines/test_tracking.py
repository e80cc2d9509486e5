"""Multi-face tracking: the association logic on synthetic faces (exact control of who is where), then
real MediaPipe on real GRID clips, alone and composited side by side."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.face.canonical import canonical_face
from engines.face.mesh import FaceMesh, FaceObservation, landmarks_bbox
from engines.face.selection import SelectionParams, TargetSelector
from engines.face.smoothing import jitter
from engines.face.tracking import FACE_OVAL, FaceTracker, TrackerParams, TrackState, min_cost_assignment
from tests.helpers import SHARED

FPS = 25.0
GRID = SHARED / "real" / "grid-dev"
CLIPS = sorted(GRID.glob("*.mpg")) if GRID.is_dir() else []
needs_grid = pytest.mark.skipif(len(CLIPS) < 2, reason=f"{GRID} (real GRID clips) is absent")


# ---------------------------------------------------------------- synthetic faces


@dataclass
class Person:
    """A synthetic face: the canonical mesh with its own shape, painted in its own colour."""

    shape: np.ndarray  # (478, 3) in inter-ocular units
    colour: tuple[int, int, int]  # BGR


def _person(seed: int, colour: tuple[int, int, int]) -> Person:
    rng = np.random.default_rng(seed)
    face = canonical_face().astype(np.float64)
    return Person(face * (1 + rng.normal(0, 0.04, (1, 3))) + rng.normal(0, 0.02, face.shape), colour)


ANNA = _person(1, (60, 110, 210))  # warm skin tone
BERT = _person(2, (200, 150, 60))  # blue-ish: clearly another look
CARL = _person(3, (60, 200, 90))


def _scene(placed: Iterable[tuple[Person, float, float]], size: tuple[int, int] = (640, 480),
           scale: float = 60.0, noise_px: float = 0.3,
           seed: int = 0) -> tuple[np.ndarray, list[FaceObservation]]:
    """A frame with each person's face oval painted at (x, y), and the observations a mesh would give."""
    width, height = size
    image = np.full((height, width, 3), 128, np.uint8)
    rng = np.random.default_rng(seed)
    observations = []
    for person, x, y in placed:
        landmarks = (person.shape * scale + (x, y, 0) + rng.normal(0, noise_px, person.shape.shape))
        landmarks = landmarks.astype(np.float32)
        cv2.fillPoly(image, [np.round(landmarks[list(FACE_OVAL), :2]).astype(np.int32)], person.colour)
        observations.append(FaceObservation(landmarks, landmarks_bbox(landmarks, width, height), 0.9))
    return image, observations


def _run(tracker: FaceTracker, frames: Iterable[list[tuple[Person, float, float]]],
         start: int = 0) -> list[list[TrackState]]:
    out = []
    for k, placed in enumerate(frames, start):
        image, observations = _scene(placed, seed=k)
        out.append(tracker.update(image, observations, k / FPS))
    return out


def _at(states: list[TrackState], x: float) -> TrackState:
    """The track whose box centre is nearest x."""
    return min(states, key=lambda s: abs(s.bbox[0] + s.bbox[2] / 2 - x))


def test_ids_stay_with_moving_faces() -> None:
    frames = [[(ANNA, 150 + 3 * k, 240), (BERT, 490 - 3 * k, 240)] for k in range(40)]
    history = _run(FaceTracker(), frames)
    assert [len(s) for s in history] == [2] * 40
    anna = {_at(s, 150 + 3 * k).id for k, s in enumerate(history)}
    bert = {_at(s, 490 - 3 * k).id for k, s in enumerate(history)}
    assert len(anna) == 1 and len(bert) == 1 and anna != bert
    assert [s.state for s in history[1]] == ["tentative"] * 2
    assert all(s.state == "confirmed" for states in history[2:] for s in states)
    assert history[-1][0].mouth_roi.shape == (88, 88) and history[-1][0].face_crop.shape == (112, 112, 3)
    assert history[-1][0].lip_geometry.ndim == 1 and history[-1][0].lip_geometry.dtype == np.float32


def test_birth_needs_consecutive_hits() -> None:
    tracker = FaceTracker(TrackerParams(confirm_hits=3))
    flicker = _run(tracker, [[(ANNA, 300, 240)], [(ANNA, 300, 240)], []])
    assert [s.state for s in flicker[1]] == ["tentative"]
    assert flicker[2] == [] and tracker.ended == 1  # a tentative track does not coast
    steady = _run(tracker, [[(ANNA, 300, 240)]] * 3, start=3)
    assert [s.state for s in steady[-1]] == ["confirmed"]
    assert steady[-1][0].id > flicker[0][0].id  # the flicker's id is not handed out again


def test_short_gap_is_bridged_on_the_motion_prediction() -> None:
    moving = [[(ANNA, 100 + 6 * k, 240)] for k in range(10)]
    gap = [[] for _ in range(5)]  # 0.2 s < coast_s
    back = [[(ANNA, 100 + 6 * k, 240)] for k in range(15, 20)]
    history = _run(FaceTracker(TrackerParams(coast_s=0.3)), moving + gap + back)
    first = history[0][0].id
    assert all(len(s) == 1 and s[0].id == first for s in history)
    coasting = [s[0] for s in history[10:15]]
    assert all(s.state == "coasting" for s in coasting)
    xs = [s.bbox[0] for s in coasting]
    assert xs == sorted(xs) and xs[-1] > history[9][0].bbox[0] + 12  # still moving right while unseen
    assert history[15][0].state == "confirmed"


def test_long_gap_ends_the_track_and_ids_are_never_reused() -> None:
    tracker = FaceTracker(TrackerParams(coast_s=0.3))
    seen: list[int] = []
    for _ in range(3):
        history = _run(tracker, [[(ANNA, 320, 240)]] * 6 + [[]] * 10)  # a 0.4 s gap each time
        assert history[-1] == []
        ids = {s.id for states in history for s in states}
        assert len(ids) == 1
        seen.append(ids.pop())
    assert seen == sorted(set(seen)) and tracker.ended == 3


def test_swapped_places_keep_ids_with_people_by_appearance() -> None:
    before = [[(ANNA, 160, 240), (BERT, 480, 240)]] * 10
    after = [[(BERT, 160, 240), (ANNA, 480, 240)]] * 10
    history = _run(FaceTracker(), before + after)
    anna, bert = _at(history[0], 160).id, _at(history[0], 480).id
    for k, states in enumerate(history):
        anna_x, bert_x = (160, 480) if k < 10 else (480, 160)
        assert (_at(states, anna_x).id, _at(states, bert_x).id) == (anna, bert), f"frame {k}"
    # Without the appearance cue the ids would stay with the places: the cue is what follows people.
    blind = FaceTracker(TrackerParams(appearance_weight=0.0, max_appearance=1.0, reid_appearance=-1.0))
    history = _run(blind, before + after)
    assert _at(history[-1], 160).id == _at(history[0], 160).id


def test_a_stranger_in_a_lost_face_s_place_gets_a_new_id() -> None:
    tracker = FaceTracker()
    history = _run(tracker, [[(ANNA, 320, 240)]] * 6 + [[(CARL, 320, 240)]] * 3)
    anna = history[0][0].id
    states = {s.id: s.state for s in history[-1]}
    assert states[anna] == "coasting" and len(states) == 2


def test_duplicate_detections_of_one_face_make_one_track() -> None:
    image, (obs,) = _scene([(ANNA, 320, 240)])
    twin = FaceObservation(obs.landmarks + np.float32(2.0), obs.bbox, 0.5)
    twin.bbox = (obs.bbox[0] + 2, obs.bbox[1] + 2, obs.bbox[2], obs.bbox[3])
    states = FaceTracker().update(image, [obs, twin], 0.0)
    assert len(states) == 1 and states[0].score == pytest.approx(0.9)


def test_grayscale_frames_keep_the_ids() -> None:
    tracker = FaceTracker()
    colour = _run(tracker, [[(ANNA, 160, 240), (BERT, 480, 240)]] * 5)
    for k in range(5, 10):
        image, observations = _scene([(ANNA, 160, 240), (BERT, 480, 240)], seed=k)
        gray = tracker.update(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), observations, k / FPS)
    assert {s.id for s in gray} == {s.id for s in colour[-1]}
    assert _at(gray, 160).id == _at(colour[-1], 160).id


def test_min_cost_assignment_is_optimal() -> None:
    rng = np.random.default_rng(7)
    for rows, cols in itertools.product(range(1, 6), range(1, 6)):
        cost = rng.uniform(0, 10, (rows, cols))
        pairs = min_cost_assignment(cost)
        assert len(pairs) == min(rows, cols)
        assert len({r for r, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        ways = itertools.permutations(range(max(rows, cols)), min(rows, cols))
        if rows <= cols:
            best = min(sum(cost[r, c] for r, c in enumerate(p)) for p in ways)
        else:
            best = min(sum(cost[r, c] for c, r in enumerate(p)) for p in ways)
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)
    assert min_cost_assignment(np.zeros((0, 3))) == []


# ---------------------------------------------------------------- real faces


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


@pytest.fixture(scope="module")
def grid() -> dict[str, list[np.ndarray]]:
    return {p.stem: _frames(p) for p in CLIPS}


def _track(frames: Iterable[np.ndarray], policy: str = "largest",
           start_s: float = 0.0) -> Iterator[tuple[np.ndarray, list[TrackState], int]]:
    tracker, selector = FaceTracker(), TargetSelector(SelectionParams(policy=policy))
    with FaceMesh(max_faces=4) as mesh:
        for k, frame in enumerate(frames):
            t = start_s + k / FPS
            states = tracker.update(frame, mesh.detect(frame), t)
            yield frame, states, selector.update(states, t, (frame.shape[1], frame.shape[0]))


@needs_grid
@pytest.mark.parametrize("clip", [p.stem for p in CLIPS])
def test_grid_clip_face_and_mouth_in_every_frame_one_track(grid, clip: str, record_property) -> None:
    frames = grid[clip]
    assert len(frames) >= 50
    ids, centres = set(), []
    for _frame, states, target in _track(frames):
        assert len(states) == 1
        (state,) = states
        assert state.mouth_roi.shape == (88, 88) and state.mouth_roi.dtype == np.uint8
        assert state.mouth_roi.std() > 5  # a mouth, not padding
        ids.add(state.id)
        centres.append(state.mouth_centre)
        if state.state == "confirmed":
            assert target == state.id
    assert len(ids) == 1
    px = jitter(np.array(centres))
    record_property("mouth_centre_jitter_px", px)
    print(f"{clip}: {len(frames)} frames, 1 track, mouth-centre jitter {px:.3f} px")
    assert px < 1.0  # sub-pixel: the ROI does not shake


def _composite(tmp_path: Path, name: str, pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Left and right halves side by side, written as a real video file and decoded back."""
    path = tmp_path / f"{name}.mp4"
    writer = None
    for left, right in pairs:
        frame = np.hstack([left, right])
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS,
                                     (frame.shape[1], frame.shape[0]))
        writer.write(frame)
    writer.release()
    return _frames(path)


def _side(state: TrackState, width: int) -> str:
    return "left" if state.bbox[0] + state.bbox[2] / 2 < width / 2 else "right"


@needs_grid
def test_swapped_halves_ids_follow_the_people(grid, tmp_path: Path) -> None:
    a, b = grid[CLIPS[0].stem], grid[CLIPS[1].stem]
    n = min(len(a), len(b))
    middle = n // 2
    frames = _composite(tmp_path, "swap", ((a[k], b[k]) if k < middle else (b[k], a[k]) for k in range(n)))
    assert frames[0].shape[:2] == (288, 720)
    person_of: dict[int, str] = {}
    for k, (frame, states, _target) in enumerate(_track(frames)):
        assert len(states) == 2, f"frame {k}"
        for s in states:
            left_is = "A" if k < middle else "B"
            person = left_is if _side(s, frame.shape[1]) == "left" else {"A": "B", "B": "A"}[left_is]
            assert person_of.setdefault(s.id, person) == person, f"id {s.id} jumped to {person} at frame {k}"
    assert sorted(person_of.values()) == ["A", "B"]


@needs_grid
def test_active_speaker_follows_whoever_talks(grid, tmp_path: Path) -> None:
    a, b = grid[CLIPS[0].stem], grid[CLIPS[2 if len(CLIPS) > 2 else 1].stem]
    n = min(len(a), len(b))
    # A frozen (one frame repeated) while B talks, then B frozen on its last frame while A talks.
    frames = _composite(tmp_path, "talk", itertools.chain(((a[0], b[k]) for k in range(n)),
                                                          ((a[k], b[n - 1]) for k in range(n))))
    side_of_target = []
    for frame, states, target in _track(frames, policy="active_speaker"):
        assert len(states) == 2
        chosen = [_side(s, frame.shape[1]) for s in states if s.id == target]
        side_of_target.append(chosen[0] if chosen else None)
    settle = n // 2  # the activity window and the switching hold must have passed
    assert set(side_of_target[settle:n]) == {"right"}, side_of_target[:n]
    assert set(side_of_target[n + settle:]) == {"left"}, side_of_target[n:]


@needs_grid
def test_faceless_and_tiny_frames_end_tracks_without_errors(grid) -> None:
    clip = grid[CLIPS[0].stem]
    blank = np.zeros_like(clip[0])
    noise = np.random.default_rng(0).integers(0, 256, clip[0].shape, dtype=np.uint8)
    tiny = clip[0][:12, :12]
    frames = clip[:10] + [blank] * 5 + [noise] * 5 + [tiny] * 3 + clip[10:20]
    history = [states for _frame, states, _target in _track(frames)]
    first = history[9][0].id
    assert all(s.state == "coasting" for s in history[10])
    assert history[20:23] == [[], [], []]  # gone after the gap, tiny frames are no trouble
    assert len(history[-1]) == 1 and history[-1][0].id > first
