"""The camera node: frames from a camera, a video file or the test pattern, published on `camera/image`.

Capture runs in its own thread (a blocking read must not hold up heartbeats or a stop request); the
thread is the only user of the image publisher. A camera that fails or is not there yet is retried
with a doubling backoff and the heartbeat stays WARN meanwhile; a file that cannot be opened stops the
node with its reason; the end of a file (without `loop`) ends the node cleanly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from node.params import param
from node.runtime import Node
from streams.messages import Image, InvalidMessage
from streams.pubsub import SENSOR, Publisher
from streams.sources import (
    FpsResampler,
    Frame,
    Source,
    SourceError,
    SourceUnusable,
    VideoFileSource,
    open_source,
    source_kind,
)

IMAGE_TOPIC = "camera/image"
_JOIN_S = 5.0  # how long deactivation waits for a capture read to return


@dataclass
class CameraParams:
    source: str = param("pattern", "camera index, /dev/video path, URL, GStreamer pipeline (with '!'), "
                                   "video file, or pattern[:WxH][@FPS]")
    fps: float = param(0.0, "output rate; 0 keeps the source's own, otherwise frames are resampled "
                            "to this rate by timestamp (dropped or repeated)")
    realtime: bool = param(True, "play files and the pattern at their own rate (false: as fast as "
                                 "they decode)")
    loop: bool = param(False, "restart a video file at its end")
    frame_id: str = param("camera", "frame_id stamped on every image")
    width: int = param(640, "test pattern width")
    height: int = param(480, "test pattern height")
    reopen_backoff_s: float = param(1.0, "first wait before reopening a failed camera; doubles on "
                                         "each failure")
    reopen_backoff_max_s: float = param(10.0, "longest wait between reopen attempts")
    wait_subscriber_s: float = param(2.0, "before the first frame, wait up to this long for a subscriber "
                                          "to camera/image (0: publish at once)")


class CameraNode(Node):
    kind = "camera"
    Params = CameraParams

    def on_configure(self) -> None:
        p = self.params
        self._source: Source | None = None
        self._thread: threading.Thread | None = None
        problems = [msg for bad, msg in (
            (p.fps < 0, "fps must be >= 0"),
            (p.wait_subscriber_s < 0, "wait_subscriber_s must be >= 0"),
            (p.width <= 0 or p.height <= 0, "width and height must be positive"),
            (not 0 < p.reopen_backoff_s <= p.reopen_backoff_max_s,
             "reopen_backoff_s must be positive and at most reopen_backoff_max_s"),
        ) if bad]
        if problems:
            self.fail(f"bad parameters: {'; '.join(problems)}")
            return
        # Every key the capture thread touches exists before it starts: the heartbeat iterates this
        # dict from the main thread, which must not see it change size.
        for key in ("frames_published", "source_frames", "decode_errors", "files_ended_early",
                    "reopen_attempts", "source_errors", "source_down_s", "bad_frames",
                    "resampler_dropped", "resampler_repeated"):
            self.counters[key] = 0
        self._pub: Publisher = self.create_publisher(IMAGE_TOPIC, SENSOR)
        # Files and the pattern resample on media time: exact whatever the decoding or scheduling
        # jitter (and the only meaningful time when they are decoded as fast as possible).
        clock = "mono" if source_kind(p.source) == "camera" else "media"
        self._resampler = FpsResampler(p.fps, clock=clock) if p.fps else None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._missing_seen = 0  # of the current source's missing_frames, already counted
        try:
            self._source = self._open()
        except SourceUnusable as exc:
            self.fail(str(exc))
            return
        except SourceError as exc:
            self._down_since = time.monotonic()
            self.warn("source_errors", "%s; retrying in %.1f s", exc, p.reopen_backoff_s)
        self.create_timer(1.0, self._report_down)

    def _open(self) -> Source:
        p = self.params
        source = open_source(p.source, realtime=p.realtime, loop=p.loop, fps=p.fps, width=p.width,
                             height=p.height)
        self.log.info("opened %s: %dx%d at %s fps", p.source, *source.frame_size,
                      f"{source.fps:g}" if source.fps else "unknown")
        return source

    def on_activate(self) -> None:
        if self.stopping:
            return
        self._thread = threading.Thread(target=self._capture, daemon=True, name="capture")
        self._thread.start()

    def on_deactivate(self) -> None:
        if self._thread is None:
            return
        self._halt.set()
        with self._lock:
            if self._source is not None:
                self._source.stop()
        self._thread.join(_JOIN_S)
        if self._thread.is_alive():
            self.log.warning("capture thread still blocked in a read after %.0f s; leaving it", _JOIN_S)

    def on_shutdown(self) -> None:
        # A source opened by on_configure whose capture thread never ran.
        if self._thread is None and self._source is not None:
            self._source.close()

    # ------------------------------------------------------------ capture thread

    def _capture(self) -> None:
        try:
            self._capture_loop()
        except Exception as exc:  # a bug, not bad input: stop loudly rather than hang silently
            self.log.exception("capture thread failed")
            self.fail(f"capture failed: {type(exc).__name__}: {exc}")

    def _await_subscriber(self) -> None:
        """Frames sent before a subscription reaches us are lost: a file's first frames, a demo's start."""
        deadline = time.monotonic() + self.params.wait_subscriber_s
        while not self._halt.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._pub.wait_subscribed(min(left, 0.1)):  # in slices, so a stop is not held up
                return
        if self.params.wait_subscriber_s > 0 and not self._halt.is_set():
            self.log.info("no subscriber to %s after %g s; publishing anyway", IMAGE_TOPIC,
                          self.params.wait_subscriber_s)

    def _capture_loop(self) -> None:
        p = self.params
        backoff = p.reopen_backoff_s
        source = self._source
        self._await_subscriber()
        while not self._halt.is_set():
            if source is None:
                if self._halt.wait(backoff):
                    return
                backoff = min(2 * backoff, p.reopen_backoff_max_s)
                self.count("reopen_attempts", 1)
                try:
                    source = self._open()
                except SourceUnusable as exc:
                    self.fail(str(exc))
                    return
                except SourceError as exc:
                    self.warn("source_errors", "%s; retrying in %.1f s", exc, backoff)
                    continue
                with self._lock:
                    self._source = source
            self._missing_seen = 0
            try:
                with source:
                    for frame in source:
                        if self._halt.is_set():  # set before this source was registered for stop()
                            break
                        if self._down_since is not None:
                            self._down_since = None
                            backoff = p.reopen_backoff_s
                        self._publish(frame)
                        self._count_missing(source)  # a looping file reports each short pass
                ended = True
            except SourceError as exc:
                self.warn("source_errors", "%s; reopening in %.1f s", exc, backoff)
                ended = False
            self._count_missing(source)
            if self._halt.is_set():
                return
            if ended and not source.live:
                self.request_stop("end of stream")
                return
            if ended:
                self.warn("source_errors", "%s stopped delivering frames; reopening in %.1f s",
                          p.source, backoff)
            with self._lock:
                self._source = source = None
            self._down_since = self._down_since or time.monotonic()

    def _publish(self, frame: Frame) -> None:
        self.count("source_frames", 1)
        out = [frame]
        if self._resampler is not None:
            out = self._resampler.push(frame)
            self.counters["resampler_dropped"] = self._resampler.dropped
            self.counters["resampler_repeated"] = self._resampler.repeated
        for f in out:
            try:
                self._pub.publish(Image(pixels=f.image, stamp_ns=f.stamp_ns, mono_ns=f.mono_ns,
                                        frame_id=self.params.frame_id))
            except InvalidMessage as exc:
                self.warn("bad_frames", "dropped frame %d of %s: %s", f.index, self.params.source, exc)
                continue
            self.count("frames_published", 1)

    def _count_missing(self, source: Source) -> None:
        """Add the frames a file declared but did not decode to `decode_errors`, and say so."""
        if not isinstance(source, VideoFileSource) or source.missing_frames <= self._missing_seen:
            return
        self.count("decode_errors", source.missing_frames - self._missing_seen)
        self._missing_seen = source.missing_frames
        self.warn("files_ended_early", "%s ended after %d frames of the %d it declares (truncated or "
                  "corrupt?)", source.path, source.frames_decoded, source.frames_expected)

    # ------------------------------------------------------------ main thread

    def _report_down(self) -> None:
        """Keep the heartbeat WARN for as long as no frames come."""
        if self._down_since is not None:
            self.warn("source_down_s", "no frames from %s for %.0f s; retrying",
                      self.params.source, time.monotonic() - self._down_since)
