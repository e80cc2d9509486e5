"""The camera node as a real process on a real bus."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from streams.endpoints import bus_endpoints
from streams.messages import Diagnostic, Image
from streams.pubsub import Subscriber
from streams.sources import PatternSource
from tests.helpers import REPO, next_message, stop, voxsight, wait_heartbeat

PATTERN_CLIP = REPO / "launch" / "media" / "pattern.mp4"


@pytest.fixture
def subscribe(bus: str) -> Iterator:
    """Open subscriptions on the bus, each on its own socket so a flood of images cannot crowd out
    heartbeats; proven live by a heartbeat of the bus itself before the test goes on."""
    ctx = zmq.Context.instance()
    subs: list[Subscriber] = []

    def open_(topic: str, msg_type: type) -> Subscriber:
        sub = Subscriber(ctx, bus_endpoints(bus)[1], [topic], msg_type=msg_type)
        subs.append(sub)
        return sub

    diags = open_("diagnostics", Diagnostic)
    assert _next_from(diags, "bus", lambda d: True)
    yield open_, diags
    for sub in subs:
        sub.close()


def _next_from(diags: Subscriber, node: str, predicate, timeout_s: float = 15.0) -> Diagnostic:
    return next_message(diags, lambda d: d.node == node and predicate(d), timeout_s,
                        f"heartbeat from {node!r}")


def _collect_until_exit(sub: Subscriber, proc: subprocess.Popen, timeout_s: float = 60.0) -> list:
    """Every message received until the process has exited and the bus has gone quiet."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(0.3)
        if msg is not None:
            got.append(msg[1])
        elif proc.poll() is not None:
            return got
    raise AssertionError(f"process still running after {timeout_s} s")


def test_file_streams_every_frame_then_exits_cleanly(bus: str, subscribe) -> None:
    open_, diags = subscribe
    images = open_("camera/image", Image)
    before = time.time_ns()
    proc = voxsight("run", "camera", "--bus", bus, f"source:={PATTERN_CLIP}", "realtime:=false")
    try:
        got = _collect_until_exit(images, proc)
        after = time.time_ns()
        output = proc.communicate(timeout=10)[0]
    finally:
        stop(proc)
    assert proc.returncode == 0, output
    assert "end of stream" in output
    # The bus may drop video under load (latest-only), so not every frame need arrive; those that do
    # are in order, correctly stamped, and carry the very frame their seq names. The first is never
    # lost: the camera waited for our subscription before sending it.
    assert len(got) >= 2
    assert all(isinstance(m, Image) for m in got)
    seqs = [m.seq for m in got]
    assert seqs[0] == 0
    assert seqs == sorted(set(seqs))
    assert [PatternSource.decode_index(m.pixels) for m in got] == seqs
    assert all(m.pixels.shape == (240, 320, 3) and m.pixels.dtype == np.uint8 for m in got)
    assert {(m.frame_id, m.source) for m in got} == {("camera", "camera")}
    assert all(before <= m.stamp_ns <= after and m.mono_ns > 0 for m in got)
    assert all(a.stamp_ns <= b.stamp_ns and a.mono_ns <= b.mono_ns for a, b in itertools.pairwise(got))
    final = _next_from(diags, "camera", lambda d: d.state == "finalized")
    assert final.level == "OK"
    assert final.values["frames_published"] == final.values["source_frames"] == 250
    assert final.values["decode_errors"] == 0


def test_resamples_to_the_requested_rate(bus: str, subscribe) -> None:
    _, diags = subscribe
    proc = voxsight("run", "camera", "--bus", bus, f"source:={PATTERN_CLIP}", "realtime:=false",
                    "fps:=12.5")
    try:
        final = _next_from(diags, "camera", lambda d: d.state == "finalized", timeout_s=60)
        assert proc.wait(10) == 0
    finally:
        stop(proc)
    assert final.values["source_frames"] == 250
    assert final.values["frames_published"] == 125
    assert final.values["resampler_dropped"] == 125


@pytest.mark.parametrize(("name", "message"), [("missing", "does not exist"),
                                                ("garbage", "cannot open video file")])
def test_unusable_file_fails_with_its_reason(bus: str, tmp_path, name: str, message: str) -> None:
    path = tmp_path / f"{name}.mp4"
    if name == "garbage":
        path.write_bytes(b"\x00junk" * 4000)
    proc = voxsight("run", "camera", "--bus", bus, f"source:={path}", stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert message in err and str(path) in err


def test_missing_camera_keeps_retrying_with_warn_heartbeat(bus: str) -> None:
    proc = voxsight("run", "camera", "--bus", bus, "source:=99", "reopen_backoff_s:=0.1",
                    "reopen_backoff_max_s:=0.2")
    try:
        diag = wait_heartbeat(bus, "camera", predicate=lambda d: d.level == "WARN"
                              and d.values.get("reopen_attempts", 0) >= 2)
        assert diag.state == "active"
        assert proc.poll() is None
    finally:
        code = stop(proc)
    output = proc.stdout.read()
    assert code == 0, output
    assert "cannot open camera 99" in output


def test_the_first_frame_waits_for_a_subscriber(bus: str, subscribe) -> None:
    """A fresh publisher's first messages are lost until the bus's subscriptions reach it (ZeroMQ's slow
    joiner); the pattern opens so fast that, without the wait, its frame 0 was often lost this way."""
    open_, _ = subscribe
    images = open_("camera/image", Image)
    for run in ("one", "two", "three"):
        proc = voxsight("run", "camera", "--bus", bus, "source:=pattern", f"frame_id:={run}")
        try:
            first = next_message(images, lambda m, run=run: m.frame_id == run, 15.0, "the first frame")
        finally:
            assert stop(proc) == 0
        assert first.seq == 0 and PatternSource.decode_index(first.pixels) == 0


def test_without_a_subscriber_the_camera_publishes_anyway(bus: str, subscribe) -> None:
    _, diags = subscribe
    proc = voxsight("run", "camera", "--bus", bus, "source:=pattern", "wait_subscriber_s:=0.5")
    try:
        _next_from(diags, "camera", lambda d: d.values.get("frames_published", 0) > 0)
    finally:
        assert stop(proc) == 0
    assert "no subscriber to camera/image after 0.5 s; publishing anyway" in proc.stdout.read()
