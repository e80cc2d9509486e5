"""Publishers and subscribers over ZeroMQ PUB/SUB, with bounded queues everywhere.

- `Publisher`: one topic per socket, so each stream has its own high-water mark. It never blocks:
  at the mark it drops, and the subscriber sees the gap in `seq`. Its socket is an XPUB, which hears
  subscriptions, so a source can wait for its first listener (a fresh connection drops what is sent
  before the subscriptions have reached it: ZeroMQ's slow joiner). A latched publisher sends its
  last message again whenever a new subscription reaches it, so a late subscriber learns a stream's
  format at once (ROS's transient_local with depth 1).
- `Subscriber`: ordered and bounded (audio, transcripts, diagnostics); malformed messages are
  dropped, counted and logged at a limited rate.
- `LatestSubscriber`: latest-only (video). An IO thread drains the socket and keeps just the newest
  message, so a slow consumer never works on stale frames; CONFLATE can't be used because it does
  not support multipart messages.

High-water marks are set before bind/connect (they apply only to later connections). Connect-side
sockets reconnect by themselves when a peer restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import zmq

from streams.codec import decode, encode
from streams.endpoints import CurveKeys, prepare
from streams.messages import InvalidMessage, Message
from streams.stats import RateLimitedLog, RateMeter, TopicStats

log = logging.getLogger("voxsight.streams")


@dataclass(frozen=True)
class QoS:
    """Queue policy of one stream. `depth` is the ZeroMQ high-water mark in messages."""

    depth: int
    latest_only: bool = False
    linger_ms: int = 0
    send_depth: int | None = None  # the publisher's mark, when it must differ from `depth`
    latched: bool = False  # the publisher sends its last message again to each new subscription


# Video: newest frame only. The publisher's queue is deeper than 2 because libzmq learns of the
# peer's reads only about once per millisecond: with 2 it drops frames sent in quick succession
# even to a subscriber that keeps up. Staleness is the subscriber's job (its IO thread).
SENSOR = QoS(depth=2, latest_only=True, send_depth=16)
ORDERED = QoS(depth=200, linger_ms=500)  # audio: every chunk in order, bounded, flushed on close
EVENTS = QoS(depth=100, linger_ms=200)  # transcripts, diagnostics
LATCHED = QoS(depth=10, linger_ms=200, latched=True)  # a stream's declared format (AudioInfo)

MAX_DEPTH = 100_000
QOS_FIELDS = ("depth", "latest")  # what an operator may change of a stream's QoS


def check_qos_field(field: str, value: object) -> None:
    """Raise ValueError, naming the problem, unless `value` is a valid `field` of a QoS override."""
    if field == "depth":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEPTH:
            raise ValueError(f"qos depth must be a whole number of messages from 1 to {MAX_DEPTH}, "
                             f"got {value!r}")
    elif field == "latest":
        if not isinstance(value, bool):
            raise ValueError(f"qos latest must be true or false, got {value!r}")
    else:
        raise ValueError(f"unknown qos field {field!r}; known: {', '.join(QOS_FIELDS)}")


def override_qos(qos: QoS, changes: Mapping[str, object]) -> QoS:
    """`qos` with an operator's changes: `depth`, the messages queued (a publisher's as well as a
    subscriber's queue), and `latest`, whether a subscriber keeps only the newest message."""
    for field, value in changes.items():
        check_qos_field(field, value)
    depth = changes.get("depth")
    if depth is not None:
        qos = replace(qos, depth=depth, send_depth=depth)
    return replace(qos, latest_only=changes.get("latest", qos.latest_only))


def _configure(sock: zmq.Socket, qos: QoS) -> None:
    sock.setsockopt(zmq.SNDHWM, qos.send_depth or qos.depth)
    sock.setsockopt(zmq.RCVHWM, qos.depth)
    sock.setsockopt(zmq.LINGER, qos.linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    # ZMTP heartbeats notice a dead TCP peer that never closed its connection.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)


class Publisher:
    """Publishes one topic. Sets `seq` (per publisher) and `source`; stamps messages that lack one."""

    def __init__(self, ctx: zmq.Context, endpoint: str, topic: str, *, qos: QoS = EVENTS,
                 source: str = "", bind: bool = False, curve: CurveKeys | None = None) -> None:
        self.topic = topic
        self.source = source
        self.sent = 0
        self.rate = RateMeter()
        self._seq = 0
        self._subscribed = False
        self.latched = qos.latched
        self._last: Message | None = None
        self._sock = ctx.socket(zmq.XPUB)
        _configure(self._sock, qos)
        if qos.latched:
            # Without it XPUB passes on only a topic's first subscription, and through the bus every
            # later subscriber of the topic arrives on the same connection as the first.
            self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        try:
            prepare(self._sock, endpoint, bind=bind, curve=curve)
        except Exception:
            self._sock.close(linger=0)
            raise

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until a subscription that covers our topic reaches this socket; False after `timeout_s`.

        Through the bus this means the bus has a subscriber for the topic; connected directly, a
        subscriber itself.
        """
        deadline = time.monotonic() + timeout_s
        while not self._subscribed:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(left * 1000, zmq.POLLIN):
                return False
            self._read_subscriptions()
        return True

    @property
    def socket(self) -> zmq.Socket:
        """Readable while subscriptions wait: a latched publisher's owner polls it and calls `serve`."""
        return self._sock

    def _read_subscriptions(self) -> bool:
        """Read the subscriptions waiting; True when one of them covers our topic."""
        # XPUB queues every new subscription for us to read, without bound: read them as they come.
        topic = self.topic.encode()
        covered = False
        while self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            event = self._sock.recv()
            covered |= event[:1] == b"\x01" and topic.startswith(event[1:])
        self._subscribed |= covered
        return covered

    def serve(self) -> None:
        """Read new subscriptions; a latched publisher sends its last message again for them."""
        if self._read_subscriptions() and self.latched and self._last is not None:
            self._send(self._last)

    def publish(self, msg: Message) -> None:
        self._read_subscriptions()  # a subscription that comes now gets `msg` itself
        if self.latched:
            self._last = msg
        self._send(msg)

    def _send(self, msg: Message) -> None:
        if not msg.stamp_ns:
            msg.stamp_now()
        elif not msg.mono_ns:
            msg.mono_ns = time.monotonic_ns()
        msg.seq = self._seq
        msg.source = self.source
        frames = encode(self.topic, msg)
        self._sock.send_multipart(frames, copy=False)
        self._seq += 1
        self.sent += 1
        self.rate.tick()

    def close(self) -> None:
        self._sock.close()


class _Receiver:
    """Shared by both subscriptions: the socket set-up and decoding with counting."""

    def __init__(self, endpoint: str, topics: Iterable[str] | None, qos: QoS, curve: CurveKeys | None,
                 msg_type: type[Message] | None) -> None:
        self.endpoint, self.qos, self.curve, self.msg_type = endpoint, qos, curve, msg_type
        self.topics = None if topics is None else {t.encode() for t in topics}
        self.stats = TopicStats()
        self._log = RateLimitedLog(log)

    def open(self, ctx: zmq.Context) -> zmq.Socket:
        sock = ctx.socket(zmq.SUB)
        _configure(sock, self.qos)
        for t in self.topics if self.topics is not None else [b""]:
            sock.setsockopt(zmq.SUBSCRIBE, t)
        try:
            prepare(sock, self.endpoint, bind=False, curve=self.curve)
        except Exception:
            sock.close(linger=0)
            raise
        return sock

    def parse(self, frames: list) -> tuple[str, Message] | None:
        # ZeroMQ filters by prefix; a topic that merely starts with ours is not ours.
        if self.topics is not None and frames[0].bytes not in self.topics:
            return None
        try:
            topic, msg = decode(frames)
            if self.msg_type is not None and not isinstance(msg, self.msg_type):
                raise InvalidMessage(f"{msg.TYPE} on a {self.msg_type.TYPE} subscription")
        except InvalidMessage as exc:
            self.stats.malformed += 1
            self._log(logging.WARNING, "malformed", "dropped malformed message on %s: %s",
                      self.endpoint, exc)
            return None
        self.stats.on_message(f"{topic}/{msg.source}", msg.seq, msg.stamp_ns)
        self.stats.bytes += sum(f.buffer.nbytes for f in frames)
        return topic, msg


class Subscriber:
    """Ordered, bounded subscription. `topics=None` subscribes to everything (the topic tools)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, topics: Iterable[str] | None, *,
                 qos: QoS = EVENTS, msg_type: type[Message] | None = None,
                 curve: CurveKeys | None = None) -> None:
        self._rx = _Receiver(endpoint, topics, qos, curve, msg_type)
        self.stats = self._rx.stats
        self.socket = self._rx.open(ctx)

    def poll_ready(self) -> list[tuple[str, Message]]:
        """Every message waiting now, without blocking (for an event loop that polled `socket`)."""
        out = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return out
            parsed = self._rx.parse(frames)
            if parsed is not None:
                out.append(parsed)

    def recv(self, timeout_s: float | None = None) -> tuple[str, Message] | None:
        """The next valid message, or None when `timeout_s` passes first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.socket.poll(None if remaining is None else int(remaining * 1000)):
                return None
            parsed = self._rx.parse(self.socket.recv_multipart(copy=False))
            if parsed is not None:
                return parsed

    def close(self) -> None:
        self.socket.close(linger=0)


class LatestSubscriber:
    """Latest-only subscription: an IO thread keeps the newest message; `take()` hands it over once.

    `fileno()` is readable while a message waits, so an event loop can poll it beside ZeroMQ sockets.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, topic: str, *, qos: QoS = SENSOR,
                 msg_type: type[Message] | None = None, curve: CurveKeys | None = None) -> None:
        self._rx = _Receiver(endpoint, [topic], qos, curve, msg_type)
        self.stats = self._rx.stats
        self._slot: tuple[str, Message] | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ctx, opened), daemon=True,
                                        name=f"latest:{topic}")
        self._thread.start()
        opened.wait()
        if self._error is not None:
            raise self._error

    def _run(self, ctx: zmq.Context, opened: threading.Event) -> None:
        try:
            sock = self._rx.open(ctx)  # sockets belong to the thread that uses them
        except BaseException as exc:
            self._error = exc
            opened.set()
            return
        opened.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                newest = None
                while True:  # drain: whatever is queued is already old
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    parsed = self._rx.parse(frames)
                    if parsed is not None:
                        if newest is not None:
                            self.stats.superseded += 1
                        newest = parsed
                if newest is not None:
                    self._put(newest)
        finally:
            sock.close(linger=0)

    def _put(self, item: tuple[str, Message]) -> None:
        with self._lock:
            if self._slot is not None:
                self.stats.superseded += 1
            self._slot = item
            if not self._ready.is_set():
                self._ready.set()
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wfd, b"!")

    def take(self, timeout_s: float | None = 0.0) -> tuple[str, Message] | None:
        """The newest message not yet taken, waiting up to `timeout_s` (None: forever)."""
        if timeout_s != 0.0:
            self._ready.wait(timeout_s)
        with self._lock:
            item, self._slot = self._slot, None
            self._ready.clear()
            try:
                while os.read(self._rfd, 64):
                    pass
            except BlockingIOError:
                pass
        return item

    def fileno(self) -> int:
        return self._rfd

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for fd in (self._rfd, self._wfd):
            os.close(fd)
