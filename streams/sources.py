"""Video sources: files, cameras and a synthetic test pattern, each an iterable of `Frame`.

Every source is opened by its constructor (so a bad spec fails at once, with a clear `SourceError`),
yields frames stamped at acquisition, and is a context manager that releases what it holds. A source
is iterated by one thread; `stop()` may be called from any other thread and ends the iteration at the
next frame (a pacing wait wakes at once), after which the iterating thread calls `close()`.

Errors come in two kinds. `SourceError` may pass (a camera that is unplugged or not there yet: reopen
it later). `SourceUnusable`, its subclass, will not (a missing or undecodable file, a malformed spec):
retrying cannot help.

Live sources (cameras) report a failed read by raising `SourceError` from the iteration, so the caller
can reopen with a backoff; their iteration never simply ends while the device works.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

DEFAULT_FPS = 25.0  # the project's video rate; used when a container does not declare one
MAX_LAG_S = 0.5  # a paced source this far behind its schedule starts a new one instead of bursting


@dataclass
class Frame:
    """One acquired image. `stamp_ns` (wall clock) and `mono_ns` (monotonic) are the same moment;
    `pts_s` is media time for files (continuing across loops) and time since opening for live sources."""

    image: np.ndarray  # BGR uint8, H x W x 3
    stamp_ns: int
    mono_ns: int
    index: int
    pts_s: float


class SourceError(RuntimeError):
    """A source that cannot deliver frames now; it may work later (a camera not plugged in yet)."""


class SourceUnusable(SourceError):
    """A source that will never work as specified: retrying cannot help."""


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Cameras may hand over grey or BGRA images; downstream expects 3-channel BGR."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _now() -> tuple[int, int]:
    return time.time_ns(), time.monotonic_ns()


class Pacer:
    """Releases frame n at `start + n / fps`: an absolute schedule, so late frames do not push the
    later ones back and the average rate never drifts. A stall longer than `max_lag_s` (a suspended
    process, a slow consumer) starts a new schedule rather than releasing a burst of stale frames.

    A paced frame is stamped with its moment on the schedule (`stamps`), not with when the scheduler
    happened to release it: the smoothing downstream works on the stamps, so the same file gives the
    same tracks, and so the same speech, on every run, and the release's lateness still counts as latency.
    """

    def __init__(self, fps: float, max_lag_s: float = MAX_LAG_S) -> None:
        if not fps > 0:
            raise ValueError(f"pacing needs a positive rate, got {fps}")
        self.period_ns = 1e9 / fps
        self.max_lag_ns = max_lag_s * 1e9
        self.restarts = 0
        self._start_ns: float | None = None
        self._wall_offset_ns = 0  # wall clock − monotonic, read once per schedule so stamps keep its spacing

    def _start(self, n: int, now_ns: int) -> None:
        self._start_ns = now_ns - n * self.period_ns
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def delay_ns(self, n: int, now_ns: int) -> int:
        """How long frame `n` must still wait at monotonic time `now_ns` (0: release it now)."""
        if self._start_ns is None:
            self._start(n, now_ns)
        due = self._start_ns + n * self.period_ns
        if now_ns - due > self.max_lag_ns:
            self._start(n, now_ns)
            self.restarts += 1
            return 0
        return max(0, math.ceil(due - now_ns))

    def stamps(self, n: int) -> tuple[int, int]:
        """(wall clock, monotonic) nanoseconds at which frame `n` was due, once `delay_ns` has seen it."""
        if self._start_ns is None:
            raise RuntimeError("the schedule starts with the first delay_ns")
        mono = round(self._start_ns + n * self.period_ns)
        return mono + self._wall_offset_ns, mono

    def wait(self, n: int, halt: threading.Event) -> bool:
        """Sleep until frame `n` is due; False when `halt` was set meanwhile."""
        delay = self.delay_ns(n, time.monotonic_ns())
        return not halt.wait(delay / 1e9) if delay else not halt.is_set()


class Source:
    """Base of all sources: stop/close and the context manager."""

    live = False  # True for cameras: an end of frames is a failure to recover from, not the end
    fps: float = 0.0  # frames per second; 0 when unknown (some cameras)
    frame_size: tuple[int, int] = (0, 0)  # width, height

    def __init__(self) -> None:
        self._halt = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def stop(self) -> None:
        """End the iteration at the next frame; safe from any thread."""
        self._halt.set()

    def close(self) -> None:
        """Release the device or file; call from the iterating thread (or once iteration is over)."""
        self._halt.set()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoFileSource(Source):
    """A video file decoded by OpenCV, paced at its own rate when `realtime`, looping if asked.

    A file whose decoding breaks off (truncated, corrupt) yields the frames that decode and then ends;
    `missing_frames` adds up, over all passes, how many frames the container declared but did not give.
    """

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        if not self.path.exists():
            raise SourceUnusable(f"video file {self.path} does not exist")
        if not self.path.is_file():
            raise SourceUnusable(f"{self.path} is not a file")
        self._cap = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else DEFAULT_FPS
        self.frames_expected = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.frames_decoded = 0
        self.missing_frames = 0
        # Decoding the first frame now turns a file OpenCV opens but cannot decode into an open error.
        self._first = self._read()
        if self._first is None:
            self._cap.release()
            raise SourceUnusable(f"cannot decode any frame of {self.path}")
        height, width = self._first[0].shape[:2]
        self.frame_size = (width, height)

    def _open(self) -> cv2.VideoCapture:
        try:
            cap = cv2.VideoCapture(str(self.path))
        except cv2.error as exc:
            raise SourceUnusable(f"cannot open video file {self.path}: {exc}") from exc
        if not cap.isOpened():
            raise SourceUnusable(f"cannot open video file {self.path}: not a video OpenCV can decode")
        return cap

    def _read(self) -> tuple[np.ndarray, float] | None:
        try:
            ok, image = self._cap.read()
        except cv2.error:
            return None  # a broken frame ends the file like EOF would
        if not ok or image is None or image.size == 0:
            return None
        self.frames_decoded += 1
        return _as_bgr(image), self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def __iter__(self) -> Iterator[Frame]:
        pacer = Pacer(self.fps) if self.realtime else None
        index = 0
        pass_start = 0  # index of this pass's first frame
        pts_offset = 0.0  # media time of the passes before this one
        last_pts = 0.0
        pending, self._first = self._first, None
        while not self._halt.is_set():
            if pending is None:
                pending = self._read()
            if pending is None:
                passed = index - pass_start
                if self.frames_expected > passed:
                    self.missing_frames += self.frames_expected - passed
                if not self.loop or passed == 0:
                    return
                self._cap.release()
                self._cap = self._open()
                pts_offset = last_pts + 1.0 / self.fps
                pass_start = index
                continue
            image, pts = pending
            pending = None
            # Some containers report no position; fall back to the nominal frame time.
            pts = pts if pts >= 0 else (index - pass_start) / self.fps
            last_pts = pts_offset + pts
            if pacer is not None and not pacer.wait(index, self._halt):
                return
            stamp, mono = pacer.stamps(index) if pacer is not None else _now()
            yield Frame(image, stamp, mono, index, last_pts)
            index += 1

    def close(self) -> None:
        super().close()
        self._cap.release()


def _camera_target(spec: str) -> tuple[str | int, int, str]:
    """(what to pass to VideoCapture, backend, a description) for a camera spec."""
    if spec.isdigit():
        return int(spec), cv2.CAP_ANY, f"camera {spec}"
    if "!" in spec:
        if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceUnusable(f"GStreamer pipeline {spec!r} given, but this OpenCV build has no "
                                 "GStreamer support (use a device index, /dev/video path or URL)")
        return spec, cv2.CAP_GSTREAMER, f"GStreamer pipeline {spec!r}"
    if "://" in spec:
        return spec, cv2.CAP_FFMPEG, f"stream {spec}"
    return spec, cv2.CAP_V4L2, f"video device {spec}"


class CameraSource(Source):
    """A live camera: a device index ("0"), a /dev/video path, a URL (rtsp://, http://...) or a
    GStreamer pipeline (a spec containing '!'). Frames are stamped at grab, before decoding.

    Opening raises `SourceError` when the camera is not there; the iteration raises it when a read
    fails (unplugged, stream lost) so the caller can reopen with a backoff.
    """

    live = True
    STREAM_TIMEOUT_MS = 5000  # a network stream that goes quiet this long counts as lost

    def __init__(self, spec: str | int) -> None:
        super().__init__()
        self.spec = str(spec).strip()
        target, backend, self.description = _camera_target(self.spec)
        params = []
        if backend == cv2.CAP_FFMPEG:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.STREAM_TIMEOUT_MS,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.STREAM_TIMEOUT_MS]
        try:
            self._cap = cv2.VideoCapture(target, backend, params)
        except cv2.error as exc:
            raise SourceError(f"cannot open {self.description}: {exc}") from exc
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"cannot open {self.description}: not found or busy")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 0.0
        self.frame_size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                           int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        first_mono: int | None = None
        while not self._halt.is_set():
            try:
                grabbed = self._cap.grab()
                stamp, mono = _now()
                ok, image = self._cap.retrieve() if grabbed else (False, None)
            except cv2.error as exc:
                raise SourceError(f"{self.description}: read failed: {exc}") from exc
            if not ok or image is None or image.size == 0:
                raise SourceError(f"{self.description}: read failed (disconnected or stream lost)")
            first_mono = mono if first_mono is None else first_mono
            yield Frame(_as_bgr(image), stamp, mono, index, (mono - first_mono) / 1e9)
            index += 1

    def close(self) -> None:
        super().close()
        self._cap.release()


class PatternSource(Source):
    """A synthetic test card: colour bars whose brightness swells and fades, a moving disc, the frame
    number as text, and the frame number as a strip of black/white blocks along the top edge that
    survives lossy compression (`decode_index` reads it back)."""

    CODE_BITS = 20  # numbers frames up to ~11.6 h at 25 fps before wrapping
    MIN_SIZE = (160, 120)
    BRIGHTNESS_PERIOD_S = 4.0
    BRIGHTNESS_STEP_S = 0.2

    def __init__(self, width: int = 640, height: int = 480, fps: float = DEFAULT_FPS,
                 frames: int | None = None, realtime: bool = True) -> None:
        super().__init__()
        if width < self.MIN_SIZE[0] or height < self.MIN_SIZE[1]:
            raise SourceUnusable(f"test pattern must be at least {self.MIN_SIZE[0]}x{self.MIN_SIZE[1]}, "
                                 f"got {width}x{height}")
        if not fps > 0:
            raise SourceUnusable(f"test pattern rate must be positive, got {fps}")
        self.fps = float(fps)
        self.frame_size = (width, height)
        self.frames = frames
        self.realtime = realtime
        bars = np.array([[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0],
                         [255, 0, 255], [0, 0, 255], [255, 0, 0], [40, 40, 40]], np.float32)
        columns = (np.arange(width) * len(bars) // width)
        self._bars = np.broadcast_to(bars[columns], (height, width, 3))
        self._strip_h = max(8, height // 12)

    def render(self, index: int) -> np.ndarray:
        """The image of frame `index`."""
        width, height = self.frame_size
        t = index / self.fps
        # Brightness moves in steps: a change on every frame would make encoded clips twice as big.
        step = max(1, round(self.BRIGHTNESS_STEP_S * self.fps))
        t_light = (index - index % step) / self.fps
        gain = 0.65 + 0.35 * math.sin(2 * math.pi * t_light / self.BRIGHTNESS_PERIOD_S)
        image = (self._bars * gain).astype(np.uint8)
        radius = max(6, height // 10)
        cx = int(width / 2 + (width / 2 - radius) * math.sin(2 * math.pi * t / 3.0))
        cy = int(height * 0.6 + height * 0.2 * math.sin(2 * math.pi * t / 2.0))
        cv2.circle(image, (cx, cy), radius, (255, 255, 255), -1)
        cv2.circle(image, (cx, cy), radius, (0, 0, 0), 2)
        scale = height / 240
        cv2.putText(image, f"#{index}", (width // 20, self._strip_h + int(40 * scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, int(3 * scale)), cv2.LINE_AA)
        block = width // self.CODE_BITS
        image[: self._strip_h] = 0
        for bit in range(self.CODE_BITS):
            if (index >> (self.CODE_BITS - 1 - bit)) & 1:
                image[: self._strip_h, bit * block:(bit + 1) * block] = 255
        return image

    @classmethod
    def decode_index(cls, image: np.ndarray) -> int:
        """The frame number coded in a pattern image's top strip (modulo 2**CODE_BITS)."""
        height, width = image.shape[:2]
        strip_h = max(8, height // 12)
        block = width // cls.CODE_BITS
        grey = image[: strip_h].mean(axis=2) if image.ndim == 3 else image[: strip_h]
        value = 0
        for bit in range(cls.CODE_BITS):
            # The block's centre only: codecs smear edges.
            core = grey[strip_h // 4: strip_h - strip_h // 4,
                        bit * block + block // 4:(bit + 1) * block - block // 4]
            value = (value << 1) | int(core.mean() > 127)
        return value

    def __iter__(self) -> Iterator[Frame]:
        pacer = Pacer(self.fps) if self.realtime else None
        index = 0
        while not self._halt.is_set() and (self.frames is None or index < self.frames):
            image = self.render(index)
            if pacer is not None and not pacer.wait(index, self._halt):
                return
            stamp, mono = pacer.stamps(index) if pacer is not None else _now()
            yield Frame(image, stamp, mono, index, index / self.fps)
            index += 1


class FpsResampler:
    """Resamples frames onto a fixed-rate grid by timestamp, dropping or repeating frames.

    The grid starts at the first frame's time. Each frame takes the next free slot within half a
    target period of its own time; slots that no frame came near (the source is slower) repeat the
    previous frame, and a frame with no slot near it (the source is faster) is dropped. A gap longer
    than `max_gap_s`, or time running backwards that far, restarts the grid rather than filling it with
    a long run of repeats.

    Output frames keep their acquisition stamps (`stamp_ns`, `mono_ns`: when the pixels were taken, so
    latency figures stay true and stamps never run backwards); their `pts_s` becomes their slot's
    time, evenly spaced at the target rate from the `pts_s` of the frame that started the grid.

    `clock` chooses the time axis: "mono" (acquisition time, for cameras) or "media" (`pts_s`, for files
    and the pattern: exact whatever the decoding jitter, and meaningful even when they are decoded as
    fast as possible).
    """

    def __init__(self, target_fps: float, *, clock: str = "mono", max_gap_s: float = 1.0) -> None:
        if not target_fps > 0:
            raise ValueError(f"target rate must be positive, got {target_fps}")
        if clock not in ("mono", "media"):
            raise ValueError(f"clock must be 'mono' or 'media', got {clock!r}")
        self.target_fps = target_fps
        self.clock = clock
        self.period_ns = 1e9 / target_fps
        self.max_gap_ns = max_gap_s * 1e9
        self.dropped = 0
        self.repeated = 0
        self.restarts = 0
        self._origin_ns = 0
        self._origin_pts = 0.0
        self._slot = 0
        self._prev: Frame | None = None
        self._prev_t = 0

    def _time_ns(self, frame: Frame) -> int:
        return frame.mono_ns if self.clock == "mono" else round(frame.pts_s * 1e9)

    def _slot_ns(self) -> int:
        return self._origin_ns + round(self._slot * self.period_ns)

    def _emit(self, frame: Frame) -> Frame:
        pts = self._origin_pts + self._slot / self.target_fps
        self._slot += 1
        return replace(frame, pts_s=pts)

    def push(self, frame: Frame) -> list[Frame]:
        """The frames to emit now that `frame` arrived, in order (none, one, or a repeat run and it)."""
        t = self._time_ns(frame)
        if self._prev is None or abs(t - self._prev_t) > self.max_gap_ns:
            if self._prev is not None:
                self.restarts += 1
            self._origin_ns, self._origin_pts, self._slot = t, frame.pts_s, 0
        out = []
        half = self.period_ns / 2
        while self._prev is not None and self._slot_ns() < t - half:
            out.append(self._emit(self._prev))
            self.repeated += 1
        if self._slot_ns() < t + half:
            out.append(self._emit(frame))
        else:
            self.dropped += 1
        self._prev, self._prev_t = frame, t
        return out


_PATTERN_SPEC = re.compile(r"pattern(?::(?:(\d+)x(\d+))?(?:@(\d+(?:\.\d*)?))?)?")


def source_kind(spec: str) -> str:
    """"pattern", "file" or "camera": how `open_source` reads a spec.

    An existing file is a file; digits, URLs, GStreamer pipelines and /dev paths are cameras; anything
    else is taken for a file path (so a mistyped path is reported as a missing file, not as a camera
    that is not there yet).
    """
    spec = spec.strip()
    if spec == "pattern" or spec.startswith("pattern:"):
        return "pattern"
    if Path(spec).is_file():
        return "file"
    if spec.isdigit() or "://" in spec or "!" in spec or spec.startswith("/dev/"):
        return "camera"
    return "file"


def open_source(spec: str, *, realtime: bool = True, loop: bool = False, fps: float = 0.0,
                width: int = 640, height: int = 480) -> Source:
    """Open a source from a spec (see `source_kind`).

    "pattern" makes a `PatternSource` of `width` x `height` at `fps` (25 when 0); "pattern:WxH@FPS"
    sets those in the spec, each part optional ("pattern:320x240", "pattern:@30"). `realtime` and
    `loop` apply to files (and `realtime` to the pattern); cameras run at their own rate.
    """
    spec = spec.strip()
    kind = source_kind(spec)
    if kind == "pattern":
        m = _PATTERN_SPEC.fullmatch(spec)
        if m is None:
            raise SourceUnusable(f"bad pattern spec {spec!r}: expected pattern[:WxH][@FPS], "
                                 "e.g. pattern:640x480@25")
        w, h, rate = m.groups()
        return PatternSource(int(w) if w else width, int(h) if h else height,
                             float(rate) if rate else (fps or DEFAULT_FPS), realtime=realtime)
    if kind == "file":
        return VideoFileSource(spec, realtime=realtime, loop=loop)
    return CameraSource(spec)
