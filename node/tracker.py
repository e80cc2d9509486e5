"""The tracker node: faces and lips in every camera frame, as stable tracks on `faces/tracks`.

Subscribes `camera/image` (latest only: a slow tracker works on the newest frame, never a backlog) and
publishes, for every frame it takes, one `FaceTracks` stamped with that frame's acquisition time and
frame_id: every track (id, state, box, landmarks, aligned mouth ROI and face crop, lip geometry), the
target the synthesizers should voice, and a status:

- `ok`: faces were found; `no_face`: none was (coasting tracks may still be listed, bridging a gap);
- `bad_frame`: the frame cannot be tracked (too small); nothing else is in the message;
- `no_input`: no frame came for `no_input_s` (camera gone, or not up yet): sent once a second, stamped
  now, so the subscribers know the silence is the camera's and not the tracker's.

Grayscale frames are tracked (as gray BGR) but counted and warned about: they lose the colour part of
the appearance cue that keeps ids apart. With `overlay:=true` it also publishes `faces/overlay`, the
frame with boxes, ids and lip contours drawn. The parameters are the node's own plus those of the
tracking, smoothing and selection engines (`voxsight run tracker --help-params`).
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass

import cv2
import numpy as np

from engines.face.mesh import LIPS_INNER, LIPS_OUTER
from engines.face.pipeline import FacePipeline
from engines.face.selection import NO_TARGET, SelectionParams
from engines.face.smoothing import OneEuroParams
from engines.face.tracking import TrackerParams, TrackState
from node.params import merge, param, part
from node.runtime import Node
from streams.messages import FaceTrack, FaceTracks, Image
from streams.pubsub import ORDERED, SENSOR

IMAGE_TOPIC = "camera/image"
TRACKS_TOPIC = "faces/tracks"
OVERLAY_TOPIC = "faces/overlay"


@dataclass
class _NodeParams:
    max_faces: int = param(4, "most faces tracked at once")
    min_detection: float = param(0.5, "face detector confidence needed to start a face")
    min_tracking: float = param(0.5, "face mesh confidence needed to keep following a face")
    crop_size: int = param(112, "side of the aligned RGB face crop, pixels")
    min_side: int = param(32, "frames with a shorter side are bad frames (no face fits)")
    overlay: bool = param(False, "also publish faces/overlay: the frame with boxes, ids and lips drawn")
    no_input_s: float = param(1.0, "no frame this long: warn, and publish status no_input once a second")


TrackerNodeParams = merge("TrackerNodeParams", _NodeParams, TrackerParams, OneEuroParams, SelectionParams)


def make_pipeline(params: typing.Any) -> FacePipeline:
    """The face pipeline configured from the node's (merged) parameters."""
    return FacePipeline(part(params, TrackerParams), part(params, OneEuroParams),
                        part(params, SelectionParams), max_faces=params.max_faces,
                        min_detection=params.min_detection, min_tracking=params.min_tracking,
                        crop_size=params.crop_size)


def to_message(tracks: list[TrackState], target: int) -> list[FaceTrack]:
    return [FaceTrack(id=t.id, bbox=list(t.bbox), score=t.score, landmarks=t.landmarks,
                      mouth_roi=t.mouth_roi, face_crop=t.face_crop, lip_geometry=t.lip_geometry,
                      state=t.state, selected=t.id == target) for t in tracks]


_COLOURS = {"confirmed": (0, 200, 0), "coasting": (0, 200, 255), "tentative": (160, 160, 160)}
_TARGET = (0, 0, 255)


def draw_overlay(bgr: np.ndarray, tracks: list[TrackState], target: int) -> np.ndarray:
    """A copy of the frame with each track's box, id and state, and lip contours (the target in red)."""
    out = bgr.copy()
    for t in tracks:
        colour = _TARGET if t.id == target else _COLOURS[t.state]
        x, y, w, h = (round(v) for v in t.bbox)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2 if t.id == target else 1)
        label = f"{t.id} {t.state}" + (" *" if t.id == target else "")
        cv2.putText(out, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        for contour in (LIPS_OUTER, LIPS_INNER):
            points = np.round(t.landmarks[list(contour), :2]).astype(np.int32)
            cv2.polylines(out, [points], True, colour, 1, cv2.LINE_AA)
    return out


class TrackerNode(Node):
    kind = "tracker"
    Params = TrackerNodeParams

    def on_configure(self) -> None:
        p = self.params
        self._last_input = time.monotonic()
        self._process_ms = 0.0
        self._live = 0
        self._target = NO_TARGET
        self._origin_ns: int | None = None
        problems = [msg for bad, msg in (
            (p.max_faces < 1, "max_faces must be >= 1"),
            (p.crop_size < 8, "crop_size must be >= 8"),
            (p.min_side < 16, "min_side must be >= 16"),
            (p.no_input_s <= 0, "no_input_s must be > 0"),
        ) if bad]
        try:
            self.pipeline = make_pipeline(p)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
        if problems:
            self.fail(f"bad parameters: {'; '.join(problems)}")
            return
        self.pipeline.mesh.warm_up()  # else the first frames are dropped while the graph is built
        for key in ("frames", "faces", "no_face_frames", "bad_frames", "grayscale_frames", "no_input"):
            self.counters[key] = 0
        self._tracks = self.create_publisher(TRACKS_TOPIC, ORDERED)  # synthesizers need every frame
        self._overlay = self.create_publisher(OVERLAY_TOPIC, SENSOR) if p.overlay else None
        self.create_subscription(IMAGE_TOPIC, Image, self._on_image, SENSOR)
        self.create_timer(1.0, self._check_input)

    def on_shutdown(self) -> None:
        if hasattr(self, "pipeline"):
            self.pipeline.close()

    def diagnostic_values(self) -> dict[str, float]:
        values = super().diagnostic_values()
        if hasattr(self, "pipeline"):
            values.update({"process_ms": self._process_ms, "live_tracks": self._live,
                           "target_id": self._target, "tracks_started": self.pipeline.tracker.started,
                           "tracks_ended": self.pipeline.tracker.ended,
                           "target_switches": self.pipeline.selector.switches})
        return values

    def _on_image(self, msg: Image) -> None:
        self._last_input = time.monotonic()
        self.count("frames")
        bgr = self._bgr(msg)
        reply = FaceTracks(stamp_ns=msg.stamp_ns, mono_ns=msg.mono_ns, frame_id=msg.frame_id,
                           image_width=msg.width, image_height=msg.height)
        if bgr is None:
            reply.status = "bad_frame"
            self._tracks.publish(reply)
            return
        started = time.perf_counter()
        # Seconds since the first frame, from the integer stamps: epoch seconds as floats would round each
        # frame's interval differently from run to run, and the smoothing follows the intervals.
        self._origin_ns = msg.stamp_ns if self._origin_ns is None else self._origin_ns
        faces, tracks, target = self.pipeline.process(bgr, (msg.stamp_ns - self._origin_ns) / 1e9)
        self._process_ms = (time.perf_counter() - started) * 1e3
        self._live, self._target = len(tracks), target
        self.count("faces", faces)
        if not faces:
            self.count("no_face_frames")
        reply.status = "ok" if faces else "no_face"
        reply.tracks, reply.target_id = to_message(tracks, target), target
        self._tracks.publish(reply)
        if self._overlay is not None:
            self._overlay.publish(Image(pixels=draw_overlay(bgr, tracks, target), stamp_ns=msg.stamp_ns,
                                        mono_ns=msg.mono_ns, frame_id=msg.frame_id))

    def _bgr(self, msg: Image) -> np.ndarray | None:
        """The frame as BGR, or None (counted, warned) when it cannot be tracked."""
        if min(msg.width, msg.height) < self.params.min_side:
            self.warn("bad_frames", "frame %dx%d is smaller than min_side %d: not tracked",
                      msg.width, msg.height, self.params.min_side)
            return None
        if msg.encoding == "mono8":
            self.warn("grayscale_frames", "grayscale frames: tracked, but without the colour part of "
                      "the appearance cue that keeps ids apart")
            return cv2.cvtColor(msg.pixels, cv2.COLOR_GRAY2BGR)
        if msg.encoding == "rgb8":
            return cv2.cvtColor(msg.pixels, cv2.COLOR_RGB2BGR)
        return msg.pixels

    def _check_input(self) -> None:
        silent = time.monotonic() - self._last_input
        if silent < self.params.no_input_s:
            return
        topic = self.resolve(IMAGE_TOPIC)
        if self.counters["frames"]:
            self.warn("no_input", "no image on %s for %.0f s (camera gone?)", topic, silent)
        else:  # a launch file may start the camera only once the other nodes are active: not gone, not yet up
            self.warn("no_input", "no image on %s yet, %.0f s after start (no camera publishing there yet?)",
                      topic, silent)
        self._tracks.publish(FaceTracks(image_width=0, image_height=0, status="no_input"))
