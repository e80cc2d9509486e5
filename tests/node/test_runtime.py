"""The node runtime: declared parameters, lifecycle, heartbeats, surviving bad callbacks, clean stops."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import zmq

from node.params import ParamError, RawText, build, describe, param, parse_assignment
from node.runtime import Node
from streams.endpoints import bus_endpoints
from streams.messages import Diagnostic, Image, Transcript
from streams.pubsub import ORDERED, Publisher, Subscriber
from tests.helpers import next_message, stop, voxsight, wait_for, wait_heartbeat


@dataclass
class _Params:
    rate: float = param(25.0, "frames per second")
    count: int = param(3, "how many")
    label: str = param("cam", "a name")
    on: bool = param(False, "a switch")
    mode: str = param("a", "which", choices=("a", "b"))


def test_params_from_the_command_line_take_their_declared_types() -> None:
    raw = dict(parse_assignment(a) for a in ["rate:=12.5", "count:=7", "label:=true", "on:=yes",
                                             "mode:=b"])
    assert all(isinstance(v, RawText) for v in raw.values())
    p = build(_Params, raw)
    assert (p.rate, p.count, p.label, p.on, p.mode) == (12.5, 7, "true", True, "b")
    assert build(_Params, {"label": RawText("'quoted'")}).label == "quoted"
    assert build(_Params, {"rate": 3, "on": True}).rate == 3.0  # launch-file values are typed already


@pytest.mark.parametrize("overrides, message", [
    ({"nope": 1}, "unknown parameter"),
    ({"count": RawText("many")}, "expects int"),
    ({"count": 2.5}, "expects int"),
    ({"on": RawText("maybe")}, "expects bool"),
    ({"mode": "c"}, "one of"),
])
def test_bad_params_are_refused_clearly(overrides: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        build(_Params, overrides)


def test_params_describe_themselves() -> None:
    text = describe(_Params)
    assert "rate (float, default 25.0): frames per second" in text and "(one of a, b)" in text
    with pytest.raises(ParamError, match="name:=value"):
        parse_assignment("rate=3")


class _Echo(Node):
    """Raises on transcripts saying 'boom': a bug in a callback must not stop the node."""

    kind = "echo"

    def on_configure(self) -> None:
        self.seen: list[str] = []
        self.states = [self.state]
        self.create_subscription("text/in", Transcript, self._on_text)

    def on_activate(self) -> None:
        self.states.append(self.state)

    def on_deactivate(self) -> None:
        self.states.append(self.state)

    def _on_text(self, msg: Transcript) -> None:
        if msg.text == "boom":
            raise RuntimeError("boom")
        self.seen.append(msg.text)


def test_lifecycle_heartbeats_and_callback_errors(bus: str) -> None:
    node = _Echo("echo", bus=bus)
    runner = threading.Thread(target=node.run, daemon=True)
    runner.start()
    ctx = zmq.Context()
    pub = Publisher(ctx, bus_endpoints(bus)[0], "text/in")
    try:
        wait_heartbeat(bus, "echo", predicate=lambda d: d.state == "active")

        def delivered() -> bool:
            pub.publish(Transcript(text="hello"))
            return bool(node.seen)

        wait_for(delivered, what="the node to receive")
        pub.publish(Transcript(text="boom"))
        pub.publish(Transcript(text="after"))
        wait_for(lambda: "after" in node.seen, what="the node to carry on after a failing callback")
        diag = wait_heartbeat(bus, "echo", predicate=lambda d: d.values.get("callback_errors", 0) >= 1)
        assert diag.values["sub.text/in.received"] >= 3
        node.request_stop("test")
        runner.join(10)
        assert not runner.is_alive()
    finally:
        pub.close()
        ctx.term()
    assert node.states == ["unconfigured", "inactive", "active"] and node.state == "finalized"
    assert node.exit_code == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_node_process_stops_cleanly_on_signals(bus: str, sig: int) -> None:
    proc = voxsight("run", "tone", "--bus", bus)
    ctx = zmq.Context()
    beats = Subscriber(ctx, bus_endpoints(bus)[1], ["diagnostics"], msg_type=Diagnostic)

    def next_state(want: str) -> Diagnostic:
        # one subscription throughout: once it has seen "active" it is joined, so nothing after is missed
        return next_message(beats, lambda d: d.node == "tone" and d.state == want, 30,
                            f"tone heartbeat with state {want}")

    try:
        next_state("active")
        proc.send_signal(sig)
        last = next_state("finalized")
        assert proc.wait(30) == 0
    finally:
        stop(proc)
        beats.close()
        ctx.term()
    assert last.level == "OK"  # the last word: finalized, with the final counters


def test_run_refuses_bad_invocations(bus: str) -> None:
    for args, message in ((["run", "tone", "bogus:=1"], "unknown parameter"),
                          (["run", "nosuchkind"], "unknown node kind"),
                          (["run", "tone", "--bus", "udp://x"], "unsupported bus transport"),
                          (["run", "tone", "--qos", "depth:=3"], "expected TOPIC.FIELD:=VALUE"),
                          (["run", "tone", "--qos", "camera/image.depth:=-1"], "qos depth must be")):
        out, _ = voxsight(*args).communicate(timeout=60)
        assert message in out
    listing, _ = voxsight("run", "camera", "--help-params").communicate(timeout=60)
    assert "source (str, default 'pattern')" in listing
    assert np.all([k in listing for k in ("fps", "realtime", "loop")])


def test_an_operator_makes_a_latest_only_subscription_keep_every_frame(bus: str) -> None:
    """`--qos`: tone reads camera/image latest-only; with latest:=false and a deep queue, a burst of frames
    is queued whole. A misspelt topic is reported, not silently ignored."""
    burst = 60  # within the bus's own queue per peer (100)
    proc = voxsight("run", "tone", "--bus", bus, "--qos", "camera/image.latest:=false",
                    "--qos", "camera/image.depth:=500", "--qos", "camera/imagery.depth:=3")
    ctx = zmq.Context()
    frames = Publisher(ctx, bus_endpoints(bus)[0], "camera/image", qos=ORDERED, source="cam")
    try:
        assert frames.wait_subscribed(30.0)  # tone's subscription, through the bus
        t0 = time.time_ns()
        for i in range(burst):
            frames.publish(Image(pixels=np.zeros((12, 16, 3), np.uint8), stamp_ns=t0 + i * 40_000_000))
        beat = wait_heartbeat(bus, "tone", predicate=lambda d: d.values["sub.camera/image.received"] >= burst)
        assert beat.values["sub.camera/image.received"] == burst
        assert beat.values["sub.camera/image.superseded"] == 0
    finally:
        frames.close()
        ctx.term()
        assert stop(proc) == 0
    out = proc.stdout.read()
    assert "qos of camera/image (subscription): depth 500, as overridden" in out
    assert "qos override for camera/imagery matches none of this node's topics (audio/info, audio/speech, " \
           "camera/image)" in out
