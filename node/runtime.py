"""The node runtime: lifecycle, an event loop over subscriptions and timers, heartbeats, clean stop.

A node subclasses `Node`, declares `Params` (a dataclass of `param(...)` fields) and overrides the
lifecycle hooks, ROS 2 managed-node style: `on_configure` loads resources and creates publishers and
subscriptions, `on_activate` starts the work, `on_deactivate` stops it, `on_shutdown` frees it.
Every node publishes a `Diagnostic` heartbeat on `diagnostics` once a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import zmq

from node.params import NoParams
from streams.endpoints import CurveKeys, bus_endpoints, default_bus
from streams.messages import Diagnostic, Message
from streams.pubsub import EVENTS, ORDERED, LatestSubscriber, Publisher, QoS, Subscriber, override_qos
from streams.stats import RateLimitedLog

HEARTBEAT_S = 1.0
DIAGNOSTICS_TOPIC = "diagnostics"
_MAX_POLL_MS = 200  # bounds how long a stop request waits


@dataclass
class _Timer:
    period_ns: int
    callback: Callable[[], None]
    due_ns: int


@dataclass
class _Subscription:
    topic: str
    sub: Subscriber | LatestSubscriber
    callback: Callable[[Any], None]


class Node:
    """Base class of every voxsight process."""

    kind: ClassVar[str] = "node"
    Params: ClassVar[type] = NoParams

    def __init__(self, name: str, params: Any = None, *, namespace: str = "",
                 remaps: dict[str, str] | None = None, bus: str | None = None,
                 curve_dir: str | None = None, qos: Mapping[str, Mapping[str, object]] | None = None) -> None:
        self.name = name
        self.namespace = namespace.strip("/")
        self.full_name = f"{self.namespace}/{name}" if self.namespace else name
        self.params = params if params is not None else self.Params()
        self.remaps = dict(remaps or {})
        # An override's topic is resolved like the node's own, so `camera/image` names it under a
        # namespace or a remap too; unmatched ones are reported once configured.
        self._qos = {self.resolve(topic): (topic, dict(changes)) for topic, changes in (qos or {}).items()}
        self._qos_used: set[str] = set()
        self.bus = bus or default_bus()
        self.pub_endpoint, self.sub_endpoint = bus_endpoints(self.bus)
        self.curve = CurveKeys.load(curve_dir, server=False) if curve_dir else None
        self.log = logging.getLogger(self.full_name)
        self.state = "unconfigured"
        self.counters: dict[str, float] = {}
        self._counters_lock = threading.Lock()  # worker threads count too (capture, playback)
        self.exit_code = 0
        self.ctx = zmq.Context()
        self._publishers: list[Publisher] = []
        self._subs: list[_Subscription] = []
        self._timers: list[_Timer] = []
        self._stop_reason: str | None = None
        self._warned_since_beat = False
        self._error: str | None = None
        self._limited = RateLimitedLog(self.log)
        self._started_ns = time.monotonic_ns()
        self._heartbeat: Publisher | None = None
        # Self-pipe: a stop request (even from a signal handler) wakes the event loop at once, and the
        # loop always has something to poll (an empty zmq poll returns immediately: a busy loop).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # ------------------------------------------------------------ names and wiring

    def resolve(self, topic: str) -> str:
        """Apply remaps, then the namespace; a topic starting with '/' is absolute."""
        topic = self.remaps.get(topic, topic)
        if topic.startswith("/"):
            return topic[1:]
        return f"{self.namespace}/{topic}" if self.namespace else topic

    def _qos_for(self, resolved: str, qos: QoS, role: str) -> QoS:
        if resolved not in self._qos:
            return qos
        self._qos_used.add(resolved)
        qos = override_qos(qos, self._qos[resolved][1])
        latest = ", latest only" if qos.latest_only and role == "subscription" else ""
        self.log.info("qos of %s (%s): depth %d%s, as overridden", resolved, role, qos.depth, latest)
        return qos

    def create_publisher(self, topic: str, qos: QoS = EVENTS) -> Publisher:
        resolved = self.resolve(topic)
        pub = Publisher(self.ctx, self.pub_endpoint, resolved, qos=self._qos_for(resolved, qos, "publisher"),
                        source=self.full_name, curve=self.curve)
        self._publishers.append(pub)
        return pub

    def create_subscription(self, topic: str, msg_type: type[Message], callback: Callable[[Any], None],
                            qos: QoS = ORDERED) -> TopicHandle:
        resolved = self.resolve(topic)
        qos = self._qos_for(resolved, qos, "subscription")
        if qos.latest_only:
            sub: Subscriber | LatestSubscriber = LatestSubscriber(
                self.ctx, self.sub_endpoint, resolved, qos=qos, msg_type=msg_type, curve=self.curve)
        else:
            sub = Subscriber(self.ctx, self.sub_endpoint, [resolved], qos=qos, msg_type=msg_type,
                             curve=self.curve)
        self._subs.append(_Subscription(resolved, sub, callback))
        return TopicHandle(resolved, sub)

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> None:
        period = int(period_s * 1e9)
        self._timers.append(_Timer(period, callback, time.monotonic_ns() + period))

    # ------------------------------------------------------------ reporting

    def warn(self, key: str, msg: str, *args: object) -> None:
        """Count and log (rate limited) a recoverable problem; the heartbeat turns WARN."""
        self.count(key)
        self._warned_since_beat = True
        self._limited(logging.WARNING, key, msg, *args)

    def count(self, key: str, n: float = 1) -> None:
        """Add to a heartbeat counter; safe from any thread."""
        with self._counters_lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def fail(self, msg: str, exit_code: int = 1) -> None:
        """Stop with a clear message: an unrecoverable problem (bad configuration, missing device)."""
        self._error = msg
        self.log.error(msg)
        self.request_stop(msg, exit_code)

    def request_stop(self, reason: str = "requested", exit_code: int = 0) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            self.exit_code = exit_code
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"!")

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def diagnostic_values(self) -> dict[str, float]:
        """Figures for the heartbeat; nodes add their own by extending this or via `counters`."""
        values = {"uptime_s": (time.monotonic_ns() - self._started_ns) / 1e9}
        for pub in self._publishers:
            values[f"pub.{pub.topic}.rate_hz"] = pub.rate.rate()
            values[f"pub.{pub.topic}.sent"] = pub.sent
        for s in self._subs:
            st = s.sub.stats
            prefix = f"sub.{s.topic}"
            values.update({
                f"{prefix}.rate_hz": st.rate.rate(), f"{prefix}.received": st.received,
                f"{prefix}.malformed": st.malformed, f"{prefix}.dropped": st.dropped,
                f"{prefix}.superseded": st.superseded, f"{prefix}.latency_ms": st.last_latency_ns / 1e6,
            })
        with self._counters_lock:
            values.update(self.counters)
        return values

    def _beat(self) -> None:
        level = "ERROR" if self._error else ("WARN" if self._warned_since_beat else "OK")
        self._warned_since_beat = False
        diag = Diagnostic(node=self.full_name, level=level, state=self.state, message=self._error or "",
                          pid=os.getpid(), host=socket.gethostname(), values=self.diagnostic_values())
        assert self._heartbeat is not None
        self._heartbeat.publish(diag)

    # ------------------------------------------------------------ lifecycle hooks

    def on_configure(self) -> None: ...

    def on_activate(self) -> None: ...

    def on_deactivate(self) -> None: ...

    def on_shutdown(self) -> None: ...

    # ------------------------------------------------------------ running

    def _transition(self, hook: Callable[[], None], state: str) -> bool:
        try:
            hook()
        except Exception as exc:
            self.log.exception("%s failed", hook.__name__)
            self._error = f"{hook.__name__} failed: {exc}"
            self.request_stop(self._error, 1)
            return False
        self.state = state
        return True

    def run(self) -> int:
        """configure → activate → spin until stopped → deactivate → shutdown; the exit code."""
        self._heartbeat = Publisher(self.ctx, self.pub_endpoint, self.resolve("/" + DIAGNOSTICS_TOPIC),
                                    qos=EVENTS, source=self.full_name, curve=self.curve)
        self.create_timer(HEARTBEAT_S, self._beat)
        try:
            configured = self._transition(self.on_configure, "inactive") and not self.stopping
            if configured:
                self._report_unused_qos()
            if configured and self._transition(self.on_activate, "active"):
                self._beat()
                self._spin()
                self._transition(self.on_deactivate, "inactive")
            self._transition(self.on_shutdown, "finalized")
            self._beat()  # the last word: finalized, with the final counters
        finally:
            self._close()
        self.log.info("stopped (%s)", self._stop_reason)
        return self.exit_code

    def _report_unused_qos(self) -> None:
        """A QoS override that matches nothing is most likely a misspelt topic: say so, with the real ones."""
        topics = sorted({p.topic for p in self._publishers} | {s.topic for s in self._subs})
        for resolved in sorted(self._qos.keys() - self._qos_used):
            self.log.warning("qos override for %s matches none of this node's topics (%s)",
                             self._qos[resolved][0], ", ".join(topics) or "none")

    def _dispatch(self, s: _Subscription, msg: Message) -> None:
        try:
            s.callback(msg)
        except Exception as exc:  # bad input must not kill the node: count it and carry on
            self.warn("callback_errors", "callback on %s raised %s: %s", s.topic, type(exc).__name__, exc)

    def _spin(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        for s in self._subs:
            target = s.sub.fileno() if isinstance(s.sub, LatestSubscriber) else s.sub.socket
            poller.register(target, zmq.POLLIN)
        latched = [pub for pub in self._publishers if pub.latched]
        for pub in latched:
            poller.register(pub.socket, zmq.POLLIN)
        while not self.stopping:
            now = time.monotonic_ns()
            next_due = min((t.due_ns for t in self._timers), default=now + _MAX_POLL_MS * 10**6)
            timeout_ms = max(0, min(_MAX_POLL_MS, (next_due - now) // 10**6))
            ready = dict(poller.poll(timeout_ms))
            for s in self._subs:
                if isinstance(s.sub, LatestSubscriber):
                    if s.sub.fileno() in ready and (item := s.sub.take(0.0)) is not None:
                        self._dispatch(s, item[1])
                elif s.sub.socket in ready:
                    for _topic, msg in s.sub.poll_ready():
                        self._dispatch(s, msg)
                if self.stopping:
                    break
            for pub in latched:
                if pub.socket in ready:
                    pub.serve()
            now = time.monotonic_ns()
            for t in self._timers:
                if now >= t.due_ns:
                    # Skip missed periods rather than firing a burst after a stall.
                    t.due_ns += max(1, (now - t.due_ns) // t.period_ns + 1) * t.period_ns
                    try:
                        t.callback()
                    except Exception as exc:
                        self.warn("timer_errors", "timer raised %s: %s", type(exc).__name__, exc)

    def _close(self) -> None:
        for s in self._subs:
            s.sub.close()
        for pub in self._publishers:
            pub.close()
        if self._heartbeat is not None:
            self._heartbeat.close()
        # destroy, not term: it also closes sockets a failed hook left open, which would block term forever
        self.ctx.destroy()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


@dataclass
class TopicHandle:
    """What `create_subscription` returns: the resolved topic and its live counters."""

    topic: str
    sub: Subscriber | LatestSubscriber

    @property
    def stats(self):
        return self.sub.stats


def die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies, even by kill -9: no orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def install_signal_handlers(node: Node) -> None:
    def handler(signum: int, _frame: object) -> None:
        node.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
