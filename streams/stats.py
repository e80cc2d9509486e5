"""Counters and meters shared by publishers, subscribers, nodes and the topic tools."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field


class RateMeter:
    """Events per second over a sliding window of arrival times."""

    def __init__(self, window_s: float = 2.0, max_events: int = 10_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque(maxlen=max_events)

    def tick(self, now_ns: int | None = None) -> None:
        self._times.append(time.monotonic_ns() if now_ns is None else now_ns)

    def rate(self, now_ns: int | None = None) -> float:
        now = time.monotonic_ns() if now_ns is None else now_ns
        while self._times and now - self._times[0] > self.window_ns:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) * 1e9 / span if span > 0 else 0.0


@dataclass
class TopicStats:
    """What a subscription has seen. `dropped` counts messages lost upstream (sequence gaps);
    `superseded` counts frames a latest-only subscription replaced before they were taken."""

    received: int = 0
    bytes: int = 0  # on the wire, all frames of the accepted messages
    malformed: int = 0
    dropped: int = 0
    superseded: int = 0
    last_latency_ns: int = 0
    last_recv_mono_ns: int = 0
    rate: RateMeter = field(default_factory=RateMeter)
    _last_seq: dict[str, int] = field(default_factory=dict)

    def on_message(self, source: str, seq: int, stamp_ns: int) -> None:
        now = time.monotonic_ns()
        self.received += 1
        self.last_recv_mono_ns = now
        self.rate.tick(now)
        if stamp_ns:
            self.last_latency_ns = time.time_ns() - stamp_ns
        last = self._last_seq.get(source)
        if last is not None and seq > last + 1:
            self.dropped += seq - last - 1
        # A seq at or below the last one means the publisher restarted: start counting afresh.
        self._last_seq[source] = seq


class RateLimitedLog:
    """Logs the first occurrence of each key at once, then at most once per interval with a count."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self.logger = logger
        self.interval_ns = int(interval_s * 1e9)
        self._last: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic_ns()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_ns:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            extra = self._suppressed.pop(key, 0)
        suffix = f" (+{extra} more since last report)" if extra else ""
        self.logger.log(level, msg + suffix, *args)
