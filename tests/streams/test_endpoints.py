"""Loopback by default; CURVE required beyond it, and working when given."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import zmq

from streams.endpoints import CurveKeys, EndpointError, bus_endpoints, generate_keys, is_loopback, prepare
from streams.messages import AudioChunk
from streams.pubsub import Publisher, Subscriber
from tests.helpers import stop, voxsight, wait_for


@pytest.mark.parametrize("endpoint, local", [
    ("ipc:///tmp/x", True), ("inproc://x", True), ("tcp://127.0.0.1:5555", True),
    ("tcp://127.8.0.1:5555", True), ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True),
    ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://192.168.1.4:5555", False),
    ("tcp://eth0:5555", False),
])
def test_is_loopback(endpoint: str, local: bool) -> None:
    assert is_loopback(endpoint) is local


def test_bus_endpoints() -> None:
    assert bus_endpoints("ipc:///run/v/bus") == ("ipc:///run/v/bus.in", "ipc:///run/v/bus.out")
    assert bus_endpoints("tcp://127.0.0.1:7000") == ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001")
    for bad in ("udp://x:1", "127.0.0.1:7000", "tcp://127.0.0.1", "ipc://"):
        with pytest.raises(EndpointError):
            bus_endpoints(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_binding_beyond_loopback_requires_keys(tmp_path) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    with pytest.raises(EndpointError, match="CURVE"):
        prepare(sock, f"tcp://0.0.0.0:{_free_port()}", bind=True, curve=None)
    sock.close(0)
    ctx.term()
    proc = voxsight("bus", "--bus", f"tcp://0.0.0.0:{_free_port()}")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "CURVE" in out


def test_curve_bus_carries_only_keyed_clients(tmp_path) -> None:
    keys = generate_keys(tmp_path / "keys")
    port = _free_port()
    base = f"tcp://0.0.0.0:{port}"
    local = f"tcp://127.0.0.1:{port}"
    bus = voxsight("bus", "--bus", base, f"server_keys:={keys}")
    ctx = zmq.Context()
    client = CurveKeys.load(keys, server=False)
    pe, se = bus_endpoints(local)
    pub = Publisher(ctx, pe, "audio/speech", curve=client)
    sub = Subscriber(ctx, se, ["audio/speech"], msg_type=AudioChunk, curve=client)
    plain = Subscriber(ctx, se, ["audio/speech"], msg_type=AudioChunk)  # no keys: handshake fails
    chunk = AudioChunk(samples=np.ones((160, 1), np.int16), sample_rate=16000)
    try:

        def flowing() -> bool:
            pub.publish(chunk)
            return sub.recv(0.05) is not None

        wait_for(flowing, timeout_s=20, what="messages over the CURVE bus")
        before = sub.stats.received
        for _ in range(20):
            pub.publish(chunk)
        wait_for(lambda: sub.recv(0.05) is None and sub.stats.received - before >= 20,
                 what="keyed subscriber to get the burst")
        assert plain.recv(0.5) is None
    finally:
        for s in (pub, sub, plain):
            s.close()
        ctx.term()
        stop(bus)


def test_a_second_bus_on_a_live_address_is_refused(bus: str) -> None:
    second = voxsight("bus", "--bus", bus)
    out, _ = second.communicate(timeout=30)
    assert second.returncode != 0 and "already runs" in out
