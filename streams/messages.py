"""Message types carried on the bus.

Every message has the common header fields of `Message`; arrays ride as separate raw payload frames
(see `streams.codec`). Each type checks its own invariants in `check()`, which the codec calls on both
encode and decode, so an invalid message can neither be sent nor received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

SCHEMA_VERSION = 1

AUDIO_FORMATS = {"S16LE": np.dtype("<i2"), "F32LE": np.dtype("<f4")}
IMAGE_ENCODINGS = {"bgr8": 3, "rgb8": 3, "mono8": 1}
DIAGNOSTIC_LEVELS = ("OK", "WARN", "ERROR", "STALE")


class InvalidMessage(ValueError):
    """A message that breaks the schema; receivers drop and count it."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise InvalidMessage(what)


@dataclass(kw_only=True)
class Message:
    """Header fields common to every message.

    `stamp_ns` is the wall-clock acquisition time of the data (carried end to end, so downstream
    messages keep the stamp of the frames they came from); `mono_ns` is the monotonic clock at the
    same moment, comparable only on one host. `seq` and `source` are set by the publisher.
    """

    TYPE: ClassVar[str] = ""

    stamp_ns: int = 0
    mono_ns: int = 0
    seq: int = 0
    source: str = ""
    frame_id: str = ""

    def stamp_now(self) -> None:
        """Stamp the message as acquired now (both clocks)."""
        self.stamp_ns = time.time_ns()
        self.mono_ns = time.monotonic_ns()

    def check(self) -> None:
        _require(self.stamp_ns >= 0 and self.mono_ns >= 0 and self.seq >= 0, "negative stamp or seq")


@dataclass(kw_only=True)
class Image(Message):
    TYPE: ClassVar[str] = "Image"

    pixels: np.ndarray
    encoding: str = "bgr8"

    def check(self) -> None:
        super().check()
        _require(self.encoding in IMAGE_ENCODINGS, f"unknown image encoding {self.encoding!r}")
        _require(self.pixels.dtype == np.uint8, "image pixels must be uint8")
        channels = IMAGE_ENCODINGS[self.encoding]
        shape = self.pixels.shape
        ok = (len(shape) == 2 and channels == 1) or (len(shape) == 3 and shape[2] == channels)
        _require(ok, f"image shape {shape} does not fit encoding {self.encoding}")
        _require(shape[0] > 0 and shape[1] > 0, "empty image")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(kw_only=True)
class FaceTrack:
    """One tracked face. Geometry is in source-image pixels; arrays may be empty when not computed."""

    id: int
    bbox: list[float]  # x, y, w, h
    score: float
    landmarks: np.ndarray  # (N, 3) float32
    mouth_roi: np.ndarray  # (88, 88) uint8, or float32 normalised
    face_crop: np.ndarray  # (H, W, 3) uint8 RGB
    lip_geometry: np.ndarray  # (K,) float32
    state: str = "confirmed"  # tentative | confirmed | coasting
    selected: bool = False

    def check(self) -> None:
        _require(len(self.bbox) == 4, "bbox needs 4 numbers")
        _require(self.state in ("tentative", "confirmed", "coasting"), f"bad track state {self.state!r}")
        lm = self.landmarks
        _require(lm.size == 0 or (lm.ndim == 2 and lm.shape[1] in (2, 3)), "landmarks must be (N, 2|3)")
        _require(self.mouth_roi.size == 0 or self.mouth_roi.ndim == 2, "mouth ROI must be 2-D")


@dataclass(kw_only=True)
class FaceTracks(Message):
    TYPE: ClassVar[str] = "FaceTracks"

    image_width: int
    image_height: int
    tracks: list[FaceTrack] = field(default_factory=list)
    target_id: int = -1  # the track the synthesizers voice; -1 when none
    status: str = "ok"  # ok | no_face | bad_frame | no_input

    def check(self) -> None:
        super().check()
        for t in self.tracks:
            t.check()
        ids = [t.id for t in self.tracks]
        _require(len(ids) == len(set(ids)), "duplicate track ids")
        _require(self.target_id == -1 or self.target_id in ids, "target_id names no track")


@dataclass(kw_only=True)
class AudioChunk(Message):
    """PCM samples shaped (frames, channels); the stamp is that of the first source frame voiced."""

    TYPE: ClassVar[str] = "AudioChunk"

    samples: np.ndarray
    sample_rate: int
    channels: int = 1
    format: str = "S16LE"

    def check(self) -> None:
        super().check()
        _require(self.format in AUDIO_FORMATS, f"unknown audio format {self.format!r}")
        _require(self.samples.dtype.newbyteorder("<") == AUDIO_FORMATS[self.format],
                 "samples dtype does not match format")
        _require(self.samples.ndim == 2 and self.samples.shape[1] == self.channels,
                 "samples must be shaped (frames, channels)")
        _require(1 <= self.channels <= 8, "channels out of range")
        _require(1000 <= self.sample_rate <= 384000, "sample rate out of range")

    @property
    def duration_ns(self) -> int:
        return int(self.samples.shape[0] * 1_000_000_000 // self.sample_rate)


@dataclass(kw_only=True)
class AudioInfo(Message):
    """The format of an audio topic, re-published periodically (ZeroMQ has no latching)."""

    TYPE: ClassVar[str] = "AudioInfo"

    sample_rate: int
    channels: int = 1
    format: str = "S16LE"
    chunk_samples: int = 0
    topic: str = ""

    def check(self) -> None:
        super().check()
        _require(self.format in AUDIO_FORMATS, f"unknown audio format {self.format!r}")
        _require(1 <= self.channels <= 8, "channels out of range")
        _require(1000 <= self.sample_rate <= 384000, "sample rate out of range")
        _require(self.chunk_samples >= 0, "negative chunk size")


@dataclass(kw_only=True)
class Transcript(Message):
    TYPE: ClassVar[str] = "Transcript"

    text: str
    end_stamp_ns: int = 0
    final: bool = True
    confidence: float = 0.0


@dataclass(kw_only=True)
class Diagnostic(Message):
    """A node's heartbeat: lifecycle state, level and named figures (rates, latencies, counters)."""

    TYPE: ClassVar[str] = "Diagnostic"

    node: str
    level: str = "OK"
    state: str = "active"
    message: str = ""
    pid: int = 0
    host: str = ""
    values: dict[str, float] = field(default_factory=dict)

    def check(self) -> None:
        super().check()
        _require(self.level in DIAGNOSTIC_LEVELS, f"unknown diagnostic level {self.level!r}")


AUDIO_COMMANDS = ("mute", "unmute", "volume")
MAX_VOLUME = 4.0  # +12 dB: beyond it a soft voice is mostly clipping


@dataclass(kw_only=True)
class AudioControl(Message):
    """An operator's command to the audio outputs: mute (play silence, keeping the stream's timing),
    unmute, or set the volume (a gain on the samples, 0 to MAX_VOLUME). `target`: one audio_out node's full
    name, '' = every one. `id`: the sender's; a node acts once per id, so a sender may repeat its command
    until a heartbeat reports the id (`control_id`)."""

    TYPE: ClassVar[str] = "AudioControl"

    command: str
    volume: float = 1.0
    target: str = ""
    id: int = 0

    def check(self) -> None:
        super().check()
        _require(self.command in AUDIO_COMMANDS, f"unknown audio command {self.command!r}")
        _require(bool(np.isfinite(self.volume)) and 0 <= self.volume <= MAX_VOLUME,
                 f"volume must be in [0, {MAX_VOLUME:g}]")
        _require(0 <= self.id < 2**53, "id out of range")  # heartbeats carry it as a float


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls for cls in (Image, FaceTracks, AudioChunk, AudioInfo, Transcript, Diagnostic, AudioControl)
}
