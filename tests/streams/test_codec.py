"""Every message type round-trips over a real socket; arrays arrive without copies; bad input is refused."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq

from streams.codec import decode, encode
from streams.messages import (
    AudioChunk,
    AudioControl,
    AudioInfo,
    Diagnostic,
    FaceTrack,
    FaceTracks,
    Image,
    InvalidMessage,
    Message,
    Transcript,
)


def _track(i: int) -> FaceTrack:
    rng = np.random.default_rng(i)
    return FaceTrack(id=i, bbox=[10.0 * i, 20.0, 64.0, 80.0], score=0.9,
                     landmarks=rng.random((478, 3), dtype=np.float32),
                     mouth_roi=rng.integers(0, 255, (88, 88), dtype=np.uint8),
                     face_crop=rng.integers(0, 255, (112, 112, 3), dtype=np.uint8),
                     lip_geometry=rng.random(42, dtype=np.float32), state="confirmed", selected=i == 2)


SAMPLES: list[Message] = [
    Image(pixels=np.arange(480 * 640 * 3, dtype=np.uint32).astype(np.uint8).reshape(480, 640, 3),
          frame_id="cam0_optical"),
    Image(pixels=np.zeros((10, 12), np.uint8), encoding="mono8"),
    FaceTracks(image_width=640, image_height=480, tracks=[_track(1), _track(2)], target_id=2),
    FaceTracks(image_width=640, image_height=480, status="no_face"),
    AudioChunk(samples=(np.arange(320, dtype=np.int16) * 7).reshape(320, 1), sample_rate=16000),
    AudioChunk(samples=np.linspace(-1, 1, 960, dtype=np.float32).reshape(480, 2), sample_rate=48000,
               channels=2, format="F32LE"),
    AudioInfo(sample_rate=16000, chunk_samples=320, topic="audio/speech"),
    Transcript(text="bin blue at f two now", end_stamp_ns=5, final=False, confidence=0.5),
    Diagnostic(node="ns/tracker", level="WARN", state="active", message="no face", pid=12,
               values={"rate_hz": 25.0, "drops": 3}),
    AudioControl(command="volume", volume=0.5, target="ns/audio_out", id=2**31),
]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_equal, a, b))
    if hasattr(a, "__dataclass_fields__"):
        fields = a.__dataclass_fields__
        return type(a) is type(b) and all(_equal(getattr(a, f), getattr(b, f)) for f in fields)
    return a == b


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://codec")
    b.connect("inproc://codec")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.TYPE)
def test_round_trip_over_a_socket(pair, msg: Message) -> None:
    msg.stamp_now()
    tx, rx = pair
    tx.send_multipart(encode("some/topic", msg), copy=False)
    topic, got = decode(rx.recv_multipart(copy=False))
    assert topic == "some/topic"
    assert _equal(msg, got)


def test_arrays_are_not_copied(pair) -> None:
    tx, rx = pair
    img = SAMPLES[0]
    frames = encode("camera/image", img)
    assert frames[2] is img.pixels or np.shares_memory(frames[2], img.pixels)  # encode: no copy
    tx.send_multipart(frames, copy=False)
    received = rx.recv_multipart(copy=False)
    _, got = decode(received)
    # decode wraps the received frame's own buffer: read-only, no private copy
    assert not got.pixels.flags.owndata and not got.pixels.flags.writeable
    assert np.shares_memory(got.pixels, np.frombuffer(received[2].buffer, np.uint8))


def test_big_endian_and_strided_arrays_are_normalised() -> None:
    samples = np.arange(640, dtype=">i2").reshape(320, 2)[:, :1]
    _, got = decode(encode("a", AudioChunk(samples=samples, sample_rate=16000)))
    assert got.samples.dtype == np.dtype("<i2") and np.array_equal(got.samples, samples)


def _header(frames: list) -> dict:
    return msgpack.unpackb(frames[1])


def _with_header(frames: list, **changes) -> list:
    h = _header(frames)
    h.update(changes)
    return [frames[0], msgpack.packb(h), *frames[2:]]


GOOD = encode("camera/image", Image(pixels=np.zeros((4, 4, 3), np.uint8)))


@pytest.mark.parametrize("frames, reason", [
    ([GOOD[0]], "frames"),
    (GOOD[:2], "frame count"),
    ([*GOOD, b"extra"], "frame count"),
    ([GOOD[0], b"\xc1", GOOD[2]], "Unpack|Extra|Format"),
    ([GOOD[0], msgpack.packb([1, 2]), GOOD[2]], "not a map"),
    (_with_header(GOOD, v=2), "schema version"),
    (_with_header(GOOD, type="Pickle"), "unknown message type"),
    (_with_header(GOOD, extra=1), "unknown fields"),
    (_with_header(GOOD, seq="7"), "expected int"),
    (_with_header(GOOD, seq=True), "expected int"),
    (_with_header(GOOD, encoding="yuv"), "encoding"),
    (_with_header(GOOD, payload=[["<f4", [4, 4, 3]]]), "size"),
    (_with_header(GOOD, payload=[["O", [48]]]), "dtype"),
    (_with_header(GOOD, payload=[["|u1", [-48]]]), "shape"),
    (_with_header(GOOD, pixels=3), "index"),
    ([GOOD[0], GOOD[1], b"\x00" * 47], "size"),
    ([b"\xff\xfe", GOOD[1], GOOD[2]], "utf-8"),
])
def test_malformed_is_rejected(frames: list, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        decode(frames)


def test_missing_field_and_ext_types_are_rejected() -> None:
    h = _header(GOOD)
    del h["encoding"]  # has a default: still fine
    decode([GOOD[0], msgpack.packb(h), GOOD[2]])
    del h["pixels"]
    with pytest.raises(InvalidMessage, match="missing"):
        decode([GOOD[0], msgpack.packb(h), GOOD[2]])
    h = _header(GOOD)
    h["frame_id"] = msgpack.ExtType(1, b"x")
    with pytest.raises(InvalidMessage, match="extension"):
        decode([GOOD[0], msgpack.packb(h), GOOD[2]])


def test_non_finite_values_never_travel() -> None:
    bad = np.zeros((10, 1), np.float32)
    bad[3] = np.nan
    with pytest.raises(InvalidMessage, match="non-finite"):
        encode("a", AudioChunk(samples=bad, sample_rate=16000, format="F32LE"))
    good = encode("a", AudioChunk(samples=np.zeros((10, 1), np.float32), sample_rate=16000, format="F32LE"))
    with pytest.raises(InvalidMessage, match="non-finite"):
        decode([good[0], good[1], bad.tobytes()])
    with pytest.raises(InvalidMessage, match="finite"):
        decode(_with_header(encode("t", Transcript(text="x")), confidence=float("inf")))


def test_invalid_messages_cannot_be_sent() -> None:
    with pytest.raises(InvalidMessage, match="dtype"):
        encode("a", AudioChunk(samples=np.zeros((4, 1), np.float32), sample_rate=16000, format="S16LE"))
    with pytest.raises(InvalidMessage, match="target_id"):
        encode("a", FaceTracks(image_width=1, image_height=1, target_id=4))
    with pytest.raises(InvalidMessage, match="duplicate"):
        encode("a", FaceTracks(image_width=1, image_height=1, tracks=[_track(1), _track(1)]))
    with pytest.raises(InvalidMessage, match="level"):
        encode("a", Diagnostic(node="x", level="PANIC"))
