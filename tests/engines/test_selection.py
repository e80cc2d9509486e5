"""Target selection policies and their switching hysteresis, on hand-made track states."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.face.selection import NO_TARGET, SelectionParams, TargetSelector, parse_policy
from engines.face.tracking import TrackState

SIZE = (640, 480)
FPS = 25.0


def _state(track_id: int, x: float, y: float, side: float, opening: float = 0.1,
           state: str = "confirmed") -> TrackState:
    empty = np.zeros((0,), np.float32)
    return TrackState(id=track_id, state=state, bbox=(x - side / 2, y - side / 2, side, side), score=0.9,
                      landmarks=np.zeros((478, 3), np.float32), mouth_roi=np.zeros((0, 0), np.uint8),
                      face_crop=np.zeros((0, 0, 3), np.uint8), lip_geometry=empty, mouth_centre=(x, y),
                      mouth_opening=opening, age_s=1.0, hits=25)


def _run(selector: TargetSelector, frames: list[list[TrackState]], start: int = 0) -> list[int]:
    return [selector.update(states, k / FPS, SIZE) for k, states in enumerate(frames, start)]


def test_largest_and_central() -> None:
    big_corner, small_centre = _state(1, 100, 100, 150), _state(2, 320, 240, 80)
    assert _run(TargetSelector(SelectionParams(policy="largest")), [[big_corner, small_centre]]) == [1]
    assert _run(TargetSelector(SelectionParams(policy="central")), [[big_corner, small_centre]]) == [2]


def test_a_given_id_or_none() -> None:
    selector = TargetSelector(SelectionParams(policy="id:2"))
    assert _run(selector, [[_state(1, 100, 100, 150)], [_state(1, 100, 100, 150), _state(2, 300, 200, 50)],
                           [_state(1, 100, 100, 150)]]) == [NO_TARGET, 2, NO_TARGET]


def test_tentative_tracks_are_never_chosen() -> None:
    selector = TargetSelector(SelectionParams(policy="largest"))
    assert _run(selector, [[_state(1, 300, 200, 200, state="tentative"), _state(2, 100, 100, 50)],
                           [_state(1, 300, 200, 200, state="tentative")]]) == [2, NO_TARGET]


def test_switching_needs_a_margin_held_for_hold_s() -> None:
    params = SelectionParams(policy="largest", margin=0.25, hold_s=0.4)
    selector = TargetSelector(params)
    assert _run(selector, [[_state(1, 200, 200, 100), _state(2, 400, 200, 90)]]) == [1]
    # 20 % larger: inside the margin, never a switch.
    assert set(_run(selector, [[_state(1, 200, 200, 100), _state(2, 400, 200, 120)]] * 30, 1)) == {1}
    # 50 % larger, but for less than hold_s (0.32 s), then it falls back: no switch either.
    brief = [[_state(1, 200, 200, 100), _state(2, 400, 200, 150)]] * 8
    back = [[_state(1, 200, 200, 100), _state(2, 400, 200, 90)]]
    assert set(_run(selector, brief + back, 31)) == {1}
    # 50 % larger for long enough: it takes over once the lead has lasted hold_s, and keeps the place.
    held = _run(selector, [[_state(1, 200, 200, 100), _state(2, 400, 200, 150)]] * 20, 40)
    switch = held.index(2)
    assert set(held[:switch]) == {1} and set(held[switch:]) == {2}
    assert math.isclose(switch / FPS, params.hold_s, abs_tol=1.5 / FPS)
    assert selector.switches == 2


def test_a_vanished_target_is_replaced_at_once() -> None:
    selector = TargetSelector(SelectionParams(policy="largest", hold_s=1.0))
    frames = [[_state(1, 200, 200, 100), _state(2, 400, 200, 90)], [_state(2, 400, 200, 90)]]
    assert _run(selector, frames) == [1, 2]


def _talking(k: int) -> float:
    return 0.1 + 0.08 * math.sin(2 * math.pi * 4 * k / FPS)  # lips at 4 Hz


def test_active_speaker_follows_lip_motion() -> None:
    selector = TargetSelector(SelectionParams(policy="active_speaker", hold_s=0.3, activity_window_s=1.0))
    # B's face is the larger one: only the lips may decide.
    a_talks = [[_state(1, 200, 200, 100, _talking(k)), _state(2, 400, 200, 140, 0.05)] for k in range(50)]
    b_talks = [[_state(1, 200, 200, 100, 0.05), _state(2, 400, 200, 140, _talking(k))]
               for k in range(50, 125)]
    targets = _run(selector, a_talks + b_talks)
    assert set(targets[10:50]) == {1}
    assert set(targets[-25:]) == {2}
    assert selector.activity(2) > 0.03 and selector.activity(1) < 1e-6


def test_silence_does_not_move_the_target() -> None:
    selector = TargetSelector(SelectionParams(policy="active_speaker", min_activity=0.01))
    talk = [[_state(1, 200, 200, 100, _talking(k)), _state(2, 400, 200, 100, 0.05)] for k in range(30)]
    quiet = [[_state(1, 200, 200, 100, 0.05), _state(2, 400, 200, 100, 0.05 + 0.001 * (k % 2))]
             for k in range(30, 100)]
    targets = _run(selector, talk + quiet)
    assert set(targets[10:]) == {1}


@pytest.mark.parametrize("text", ["", "biggest", "id:", "id:x", "id:-1"])
def test_bad_policies_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        parse_policy(text)
    with pytest.raises(ValueError):
        TargetSelector(SelectionParams(policy=text))


def test_policies_parse() -> None:
    assert parse_policy("active_speaker") == ("active_speaker", NO_TARGET)
    assert parse_policy(" id:7 ") == ("id", 7)
