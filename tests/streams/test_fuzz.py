"""Property test: mutated and malformed multiparts over a real socket never crash a subscriber, and
every one is counted, either as received (it was still valid) or as malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.codec import decode, encode
from streams.messages import AudioChunk, Diagnostic, FaceTrack, FaceTracks, Image, InvalidMessage, Transcript
from streams.pubsub import QoS, Subscriber
from tests.helpers import wait_for

BATCH = 50
EXAMPLES = 205  # 205 × 50 = 10,250 messages

BASES = [
    [bytes(memoryview(f)) for f in encode(topic, msg)]
    for topic, msg in [
        ("camera/image", Image(pixels=np.arange(48, dtype=np.uint8).reshape(4, 4, 3))),
        ("audio/speech", AudioChunk(samples=np.arange(32, dtype=np.int16).reshape(16, 2), sample_rate=16000,
                                    channels=2)),
        ("audio/speech", AudioChunk(samples=np.zeros((8, 1), np.float32), sample_rate=16000, format="F32LE")),
        ("faces/tracks", FaceTracks(image_width=64, image_height=48, target_id=3, tracks=[FaceTrack(
            id=3, bbox=[1, 2, 3, 4], score=0.5, landmarks=np.zeros((5, 3), np.float32),
            mouth_roi=np.zeros((8, 8), np.uint8), face_crop=np.zeros((4, 4, 3), np.uint8),
            lip_geometry=np.ones(4, np.float32))])),
        ("text/lipread", Transcript(text="set red in x nine soon")),
        ("diagnostics", Diagnostic(node="n", values={"a": 1.5})),
    ]
]

_any_value = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                       st.text(max_size=8), st.binary(max_size=8),
                       st.lists(st.integers(-9, 2**40), max_size=4),
                       st.dictionaries(st.text(max_size=4), st.integers(-9, 9), max_size=3))


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    frames = list(draw(st.sampled_from(BASES)))
    op = draw(st.sampled_from(["keep", "flip", "truncate", "drop", "dup", "extra", "swap", "field",
                               "delete_field", "random_header", "random_all", "empty"]))
    i = draw(st.integers(0, len(frames) - 1))
    if op == "flip" and frames[i]:
        b = bytearray(frames[i])
        for _ in range(draw(st.integers(1, 4))):
            j = draw(st.integers(0, len(b) - 1))
            b[j] = draw(st.integers(0, 255))
        frames[i] = bytes(b)
    elif op == "truncate":
        frames[i] = frames[i][: draw(st.integers(0, max(0, len(frames[i]) - 1)))]
    elif op == "drop":
        del frames[i]
    elif op == "dup":
        frames.insert(i, frames[i])
    elif op == "extra":
        frames.insert(i + 1, draw(st.binary(max_size=64)))
    elif op == "swap" and len(frames) > 2:
        j = draw(st.integers(0, len(frames) - 1))
        frames[i], frames[j] = frames[j], frames[i]
    elif op in ("field", "delete_field"):
        header = msgpack.unpackb(frames[1])
        key = draw(st.sampled_from(sorted(header)))
        if op == "field":
            header[key] = draw(_any_value)
        else:
            del header[key]
        frames[1] = msgpack.packb(header)
    elif op == "random_header":
        frames[1] = draw(st.binary(max_size=200))
    elif op == "random_all":
        frames = draw(st.lists(st.binary(max_size=64), min_size=0, max_size=5))
    elif op == "empty":
        frames = [b""] * draw(st.integers(1, 4))
    return frames


def _valid(frames: list[bytes]) -> bool:
    try:
        decode(frames)
    except InvalidMessage:
        return False
    return True


@pytest.fixture(scope="module")
def link(tmp_path_factory):
    endpoint = f"ipc://{tmp_path_factory.mktemp('fz')}/fuzz"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 10 * BATCH)
    pub.bind(endpoint)
    sub = Subscriber(ctx, endpoint, None, qos=QoS(depth=10 * BATCH))
    # PUB/SUB joins asynchronously: probe until the subscription has reached the publisher.
    probe = BASES[-1]

    def joined() -> bool:
        pub.send_multipart(probe)
        return sub.recv(0.05) is not None

    wait_for(joined, what="subscriber to join")
    while sub.recv(0.05) is not None:  # drain stray probes
        pass
    yield pub, sub
    sub.close()
    pub.close(0)
    ctx.term()


def test_fuzzed_messages_are_all_counted(link) -> None:
    pub, sub = link
    totals = {"sent": 0, "valid": 0}
    start_received, start_malformed = sub.stats.received, sub.stats.malformed

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutated(), min_size=BATCH, max_size=BATCH))
    def batch(messages: list[list[bytes]]) -> None:
        sent = 0
        for frames in messages:
            if frames:  # ZeroMQ cannot send a message of zero parts
                pub.send_multipart(frames)
                sent += 1
        expected_valid = sum(_valid(f) for f in messages if f)
        before_r, before_m = sub.stats.received, sub.stats.malformed
        got = 0

        def all_counted() -> bool:
            nonlocal got
            while sub.recv(0.01) is not None:
                got += 1
            return sub.stats.received - before_r + sub.stats.malformed - before_m >= sent

        wait_for(all_counted, timeout_s=10, what="every fuzzed message to be counted")
        assert sub.stats.received - before_r == expected_valid == got
        assert sub.stats.malformed - before_m == sent - expected_valid
        totals["sent"] += sent
        totals["valid"] += expected_valid

    batch()
    assert totals["sent"] >= 10_000
    assert sub.stats.received - start_received == totals["valid"]
    assert sub.stats.malformed - start_malformed == totals["sent"] - totals["valid"]
    assert totals["sent"] - totals["valid"] > 5_000  # most were really malformed
