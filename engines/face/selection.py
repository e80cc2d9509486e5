"""Target selection: which tracked face the synthesizers voice.

Policies: `largest` (the biggest face), `central` (the face nearest the image centre), `id:<n>` (that
track, none while it is not there) and `active_speaker` (the most lip motion: the standard deviation of
the mouth opening over the last `activity_window_s`). Only confirmed or coasting tracks are candidates.
A target keeps its place until it is gone, or until a challenger has led it by `margin` for `hold_s`
without a break: hysteresis, so the voice does not flicker between faces of about the same score.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.face.tracking import TrackState
from engines.params import param

POLICIES = ("largest", "central", "active_speaker", "id:<n>")
NO_TARGET = -1


@dataclass
class SelectionParams:
    policy: str = param("largest", "target policy: largest | central | active_speaker | id:<n> "
                                         "(a track id)")
    margin: float = param(0.25, "a challenger must score this fraction above the current target "
                                      "to take over")
    hold_s: float = param(0.5, "... and keep that lead this long (switching hysteresis)")
    activity_window_s: float = param(1.0, "active_speaker: seconds of mouth-opening history whose "
                                                "spread is the lip motion")
    min_activity: float = param(0.01, "active_speaker: lip motion below this is silence (no face "
                                            "leads on silence)")

    def __post_init__(self) -> None:
        parse_policy(self.policy)
        if self.margin < 0 or self.hold_s < 0 or self.activity_window_s <= 0 or self.min_activity < 0:
            raise ValueError("margin, hold_s and min_activity must be >= 0 and activity_window_s > 0")


def parse_policy(text: str) -> tuple[str, int]:
    """('largest'|'central'|'active_speaker', -1) or ('id', n); ValueError for anything else."""
    text = text.strip()
    if text in ("largest", "central", "active_speaker"):
        return text, NO_TARGET
    name, sep, number = text.partition(":")
    if name == "id" and sep and number.strip().isdigit():
        return "id", int(number)
    raise ValueError(f"unknown target policy {text!r}; expected one of {', '.join(POLICIES)}")


class TargetSelector:
    """Call `update` once per frame with that frame's tracks; it returns the target id (-1: none)."""

    def __init__(self, params: SelectionParams | None = None) -> None:
        self.params = params or SelectionParams()
        self.policy, self.wanted_id = parse_policy(self.params.policy)
        self.target = NO_TARGET
        self.switches = 0  # target changes, the first choice included
        self._challenger = NO_TARGET
        self._challenger_since = 0.0
        self._openings: dict[int, deque[tuple[float, float]]] = {}

    def update(self, tracks: Sequence[TrackState], t_s: float, image_size: tuple[int, int]) -> int:
        self._remember(tracks, t_s)
        candidates = {t.id: t for t in tracks if t.state != "tentative"}
        if self.policy == "id":
            return self._set(self.wanted_id if self.wanted_id in candidates else NO_TARGET)
        if not candidates:
            self._challenger = NO_TARGET
            return self._set(NO_TARGET)
        scores = {i: self._score(t, image_size) for i, t in candidates.items()}
        best = max(scores, key=lambda i: (scores[i], -i))  # ties go to the older track
        if self.target not in candidates:
            self._challenger = NO_TARGET
            return self._set(best)
        if best == self.target or not self._leads(scores[best], scores[self.target]):
            self._challenger = NO_TARGET
            return self.target
        if self._challenger != best:
            self._challenger, self._challenger_since = best, t_s
        if t_s - self._challenger_since >= self.params.hold_s:
            self._challenger = NO_TARGET
            return self._set(best)
        return self.target

    def activity(self, track_id: int) -> float:
        """Lip motion of a track over the activity window (0 for unknown tracks)."""
        history = self._openings.get(track_id)
        if not history or len(history) < 2:
            return 0.0
        return float(np.std([o for _, o in history]))

    def _remember(self, tracks: Sequence[TrackState], t_s: float) -> None:
        live = {t.id for t in tracks}
        for gone in set(self._openings) - live:
            del self._openings[gone]
        for t in tracks:
            history = self._openings.setdefault(t.id, deque())
            history.append((t_s, t.mouth_opening))
            while history and t_s - history[0][0] > self.params.activity_window_s:
                history.popleft()

    def _score(self, track: TrackState, image_size: tuple[int, int]) -> float:
        x, y, w, h = track.bbox
        if self.policy == "largest":
            return math.sqrt(max(w, 0.0) * max(h, 0.0))
        if self.policy == "central":
            width, height = image_size
            off = math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2)
            return 1.0 - off / max(math.hypot(width / 2, height / 2), 1e-9)
        motion = self.activity(track.id)
        return motion if motion >= self.params.min_activity else 0.0

    def _leads(self, challenger: float, current: float) -> bool:
        return challenger > current * (1 + self.params.margin) and challenger > 0

    def _set(self, target: int) -> int:
        if target != self.target:
            self.switches += 1 if target != NO_TARGET else 0
            self.target = target
        return target
