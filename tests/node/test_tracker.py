"""The tracker node as a real process on a real bus, fed by a real camera node or by hand-made frames;
and `voxsight track` over video files, whole and truncated."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from node import track
from streams.endpoints import bus_endpoints
from streams.messages import Diagnostic, FaceTracks, Image, Message
from streams.pubsub import EVENTS, Publisher, Subscriber
from streams.sources import VideoFileSource
from tests.helpers import REPO, SHARED, next_message, stop, voxsight, wait_heartbeat

GRID = SHARED / "real" / "grid-dev"
CLIPS = sorted(GRID.glob("*.mpg")) if GRID.is_dir() else []
needs_grid = pytest.mark.skipif(not CLIPS, reason=f"{GRID} (real GRID clips) is absent")


@pytest.fixture
def listen(bus: str) -> Iterator[Callable[[str, type[Message]], Subscriber]]:
    """Subscriptions on the bus, each on its own socket so images cannot crowd out the rest."""
    ctx = zmq.Context.instance()
    subs: list[Subscriber] = []

    def open_(topic: str, msg_type: type[Message]) -> Subscriber:
        subs.append(Subscriber(ctx, bus_endpoints(bus)[1], [topic], msg_type=msg_type))
        return subs[-1]

    yield open_
    for sub in subs:
        sub.close()


def _next(sub: Subscriber, predicate: Callable[[Message], bool], timeout_s: float = 20.0) -> Message:
    return next_message(sub, predicate, timeout_s)


def _start_tracker(bus: str, *params: str):
    proc = voxsight("run", "tracker", "--bus", bus, *params)
    wait_heartbeat(bus, "tracker", timeout_s=30, predicate=lambda d: d.state == "active")
    return proc


@needs_grid
def test_tracks_a_real_clip_from_the_camera_node_then_reports_the_camera_gone(bus: str, listen) -> None:
    tracks_sub, images_sub = listen("faces/tracks", FaceTracks), listen("camera/image", Image)
    diags = listen("diagnostics", Diagnostic)
    # 2 s, not less: on a loaded machine a starved tracker must not call a live camera gone
    tracker = _start_tracker(bus, "no_input_s:=2.0")
    camera = None
    try:
        _next(diags, lambda d: d.node == "tracker")  # our subscriptions are live too
        camera = voxsight("run", "camera", "--bus", bus, f"source:={CLIPS[0]}", "realtime:=true")
        assert camera.wait(60) == 0, camera.stdout.read()
        # The camera is gone: the tracker says so on its own topic, and its heartbeat warns. (It may
        # have said so before the camera came up, too.)
        got: list[FaceTracks] = []
        while not got or got[-1].status != "no_input" or all(m.status == "no_input" for m in got):
            got.append(_next(tracks_sub, lambda m: True))
        tracked = [m for m in got if m.status != "no_input"]
        diag = _next(diags, lambda d: d.node == "tracker" and d.level == "WARN"
                     and d.values["frames"] >= len(tracked) and d.values["no_input"] >= 1)
    finally:
        if camera is not None:
            stop(camera)
        code = stop(tracker)
    assert code == 0, tracker.stdout.read()
    images = {}
    while (item := images_sub.recv(0.5)) is not None:
        images[item[1].stamp_ns] = item[1]
    assert len(tracked) >= 20  # latest-only: the tracker may skip frames, never lag behind them
    assert all(m.stamp_ns in images and m.frame_id == "camera" for m in tracked)
    assert all((m.image_width, m.image_height) == (360, 288) for m in tracked)
    assert {m.status for m in tracked} == {"ok"}
    assert {t.id for m in tracked for t in m.tracks} == {tracked[0].tracks[0].id}
    confirmed = [m for m in tracked if m.tracks[0].state == "confirmed"]
    assert len(confirmed) >= len(tracked) - 3
    for m in confirmed:
        (t,) = m.tracks
        assert t.selected and m.target_id == t.id
        assert t.mouth_roi.shape == (88, 88) and t.face_crop.shape == (112, 112, 3)
        assert t.landmarks.shape == (478, 3) and t.lip_geometry.size > 0
    assert diag.values["tracks_started"] == 1


def test_without_a_camera_it_warns_and_says_no_input(bus: str, listen) -> None:
    tracks_sub = listen("faces/tracks", FaceTracks)
    tracker = _start_tracker(bus, "no_input_s:=0.5")
    try:
        diag = wait_heartbeat(bus, "tracker", predicate=lambda d: d.level == "WARN"
                              and d.values.get("no_input", 0) >= 1)
        msg = _next(tracks_sub, lambda m: True)
    finally:
        code = stop(tracker)
    out = tracker.stdout.read()
    assert code == 0, out
    assert diag.values["frames"] == 0
    assert msg.status == "no_input" and msg.tracks == [] and msg.target_id == -1
    # no camera has come yet, so none is called gone (a launch file may start it last)
    assert "no image on camera/image yet" in out and "camera gone" not in out


@needs_grid
def test_bad_frames_are_answered_counted_and_survived(bus: str, listen) -> None:
    tracks_sub, overlay_sub = listen("faces/tracks", FaceTracks), listen("faces/overlay", Image)
    face = cv2.VideoCapture(str(CLIPS[0])).read()[1]
    tracker = _start_tracker(bus, "overlay:=true")
    pub = Publisher(zmq.Context.instance(), bus_endpoints(bus)[0], "camera/image", qos=EVENTS)
    frames = {
        "tiny": Image(pixels=np.zeros((8, 8, 3), np.uint8)),
        "black": Image(pixels=np.zeros((288, 360, 3), np.uint8)),
        "gray": Image(pixels=cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), encoding="mono8"),
        "face": Image(pixels=face),
    }
    replies = {}
    try:
        for name, image in frames.items():
            # Re-sent until answered: the first may go out before the bus has our subscription.
            def answered(image: Image = image) -> FaceTracks | None:
                image.stamp_ns = 0  # a fresh stamp each time
                pub.publish(image)
                got = tracks_sub.recv(0.5)
                return got[1] if got and got[1].stamp_ns == image.stamp_ns else None

            replies[name] = _first(answered)
        diag = wait_heartbeat(bus, "tracker", predicate=lambda d: d.values.get("grayscale_frames", 0) >= 1)
        overlay = _next(overlay_sub, lambda m: m.stamp_ns == replies["face"].stamp_ns)
        assert tracker.poll() is None
    finally:
        pub.close()
        code = stop(tracker)
    assert code == 0, tracker.stdout.read()
    assert replies["tiny"].status == "bad_frame" and replies["tiny"].tracks == []
    assert replies["black"].status == "no_face"
    assert replies["gray"].status == "ok" and len(replies["gray"].tracks) == 1
    assert replies["face"].status == "ok" and replies["face"].tracks[0].id == replies["gray"].tracks[0].id
    assert diag.values["bad_frames"] >= 1 and diag.values["no_face_frames"] >= 1
    # The overlay is the frame with the face's box, id and lips drawn on it.
    assert overlay.pixels.shape == face.shape and not np.array_equal(overlay.pixels, face)


def _track_clip(bus: str, listen, images: list[np.ndarray], origin_ns: int) -> list[FaceTracks]:
    """A fresh tracker's replies to `images` sent 40 ms apart by their stamps from `origin_ns`, one at a
    time (each waits for its reply, so none is skipped)."""
    replies = listen("faces/tracks", FaceTracks)
    tracker = _start_tracker(bus)
    pub = Publisher(zmq.Context.instance(), bus_endpoints(bus)[0], "camera/image", qos=EVENTS)
    got = []
    try:
        assert pub.wait_subscribed(20)
        for k, image in enumerate(images):
            stamp = origin_ns + k * 40_000_000
            pub.publish(Image(pixels=image, stamp_ns=stamp, mono_ns=stamp))
            got.append(_next(replies, lambda m, stamp=stamp: m.stamp_ns == stamp))
    finally:
        pub.close()
        code = stop(tracker)
    assert code == 0, tracker.stdout.read()
    return got


def test_the_same_frames_give_the_same_tracks_whenever_they_were_taken(bus: str, listen) -> None:
    # Smoothing follows the frames' intervals; as differences of epoch seconds in floating point they
    # would round differently at another time of day, and the same video would be spoken differently.
    images = [f.image for f in VideoFileSource(REPO / "launch" / "media" / "lip2speech_sample.mp4",
                                               realtime=False)]
    runs = [_track_clip(bus, listen, images, origin) for origin in
            (1_796_000_000_123_456_789, 1_796_000_123_000_000_001)]
    rois = [[[(t.id, t.mouth_roi.tobytes()) for t in m.tracks] for m in run] for run in runs]
    assert sum(bool(frame) for frame in rois[0]) >= len(images) - 4  # the face is tracked
    assert rois[0] == rois[1]


def _first(attempt: Callable[[], FaceTracks | None], timeout_s: float = 20.0) -> FaceTracks:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (reply := attempt()) is not None:
            return reply
    raise AssertionError(f"no reply within {timeout_s} s")


@needs_grid
def test_track_cli_writes_json_and_overlay(tmp_path: Path, capsys) -> None:
    out_json, out_video = tmp_path / "tracks.json", tmp_path / "overlay.mp4"
    code = track.main([str(CLIPS[0]), "--json", str(out_json), "--overlay", str(out_video), "--no-progress",
                       "--policy", "central"])
    assert code == 0
    data = json.loads(out_json.read_text())
    frames = data["frames"]
    assert len(frames) == 75 and data["policy"] == "central"
    assert all(f["status"] == "ok" and len(f["tracks"]) == 1 for f in frames)
    assert {t["id"] for f in frames for t in f["tracks"]} == {1}
    for f in frames:
        (t,) = f["tracks"]
        assert t["selected"] == (t["state"] == "confirmed") == (f["target"] == t["id"])
        assert len(t["bbox"]) == 4 and len(t["mouth_centre"]) == 2 and t["mouth_opening"] >= 0
    assert data["summary"]["tracks"]["1"]["frames"] == 75
    cap = cv2.VideoCapture(str(out_video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 75
    assert "1 track(s)" in capsys.readouterr().out


@needs_grid
def test_track_cli_survives_a_truncated_file(tmp_path: Path, capsys) -> None:
    data = CLIPS[0].read_bytes()
    cut = tmp_path / "cut.mpg"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    out_json = tmp_path / "tracks.json"
    assert track.main([str(cut), "--json", str(out_json), "--no-progress"]) == 0
    frames = json.loads(out_json.read_text())["frames"]
    assert 0 < len(frames) < 75
    assert all(len(f["tracks"]) == 1 for f in frames)


@pytest.mark.parametrize(("args", "message"), [(["/nonexistent.mp4"], "does not exist"),
                                               (["x.mp4", "--policy", "loudest"], "unknown target policy"),
                                               (["x.mp4", "max_faces:=many"], "max_faces")])
def test_track_cli_refuses_bad_arguments(args: list[str], message: str, capsys) -> None:
    assert track.main([*args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
