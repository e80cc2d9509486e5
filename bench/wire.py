"""Wire benchmark: throughput and latency of a 640x480 BGR image and a 20 ms audio chunk over ipc and
tcp loopback, direct (publisher binds) and through the real bus node; CPU per 25 fps video stream.

Run: `make bench` or `.venv/bin/python bench/wire.py [--seconds S]`. Prints markdown tables.
Latency is publish → decoded at the subscriber, both read from CLOCK_MONOTONIC (system-wide).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

from streams.codec import encode
from streams.endpoints import bus_endpoints
from streams.messages import AudioChunk, Image, Message
from streams.pubsub import Publisher, QoS, Subscriber

REPO = Path(__file__).resolve().parents[1]

PAYLOADS = {
    "image 640x480 bgr8": lambda: Image(pixels=np.zeros((480, 640, 3), np.uint8)),
    "audio 20 ms s16": lambda: AudioChunk(samples=np.zeros((320, 1), np.int16), sample_rate=16000),
}
DEEP = QoS(depth=100_000)  # measure the transport, not our drop policy


def _publisher(endpoint: str, bind: bool, payload: str, rate_hz: float, seconds: float, ready: mp.Event,
               go: mp.Event, cpu: mp.Queue) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, endpoint, "bench", qos=DEEP, bind=bind)
    msg: Message = PAYLOADS[payload]()
    ready.set()
    go.wait()
    t0 = time.monotonic()
    n = 0
    while (now := time.monotonic()) - t0 < seconds:
        if rate_hz:
            time.sleep(max(0.0, t0 + n / rate_hz - now))  # absolute schedule
        msg.stamp_ns = 0  # restamp: latency counts from this publish
        pub.publish(msg)
        n += 1
    cpu.put(time.process_time())
    pub.close()
    ctx.term()


def _start_bus(base: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "node", "bus", "--bus", base, "depth:=100000",
                             "--log-level", "WARNING"], cwd=REPO)
    ctx = zmq.Context()
    beat = Subscriber(ctx, bus_endpoints(base)[1], ["diagnostics"])
    up = beat.recv(20.0) is not None
    beat.close()
    ctx.term()
    if not up:
        proc.kill()
        raise RuntimeError("the bus did not come up")
    return proc


def _run(base: str, via_bus: bool, payload: str, rate_hz: float, seconds: float) -> dict:
    """One publisher process → a subscriber here; arrival figures and each process's CPU seconds."""
    spawn = mp.get_context("spawn")
    bus = _start_bus(base) if via_bus else None
    pub_ep, sub_ep = bus_endpoints(base) if via_bus else (base, base)
    ready, go, cpu = spawn.Event(), spawn.Event(), spawn.Queue()
    pub = spawn.Process(target=_publisher,
                        args=(pub_ep, not via_bus, payload, rate_hz, seconds, ready, go, cpu))
    pub.start()
    ready.wait(20)
    ctx = zmq.Context()
    sub = Subscriber(ctx, sub_ep, ["bench"], qos=DEEP)
    sub.socket.poll(500)  # give the subscription time to reach the publisher before it starts
    bus_cpu0 = sum(psutil.Process(bus.pid).cpu_times()[:2]) if bus else 0.0
    go.set()
    lat, t_first, t_last = [], 0, 0
    cpu0 = time.process_time()
    while (got := sub.recv(1.5)) is not None:
        t_last = time.monotonic_ns()
        t_first = t_first or t_last
        lat.append((t_last - got[1].mono_ns) / 1e6)
    sub_cpu = time.process_time() - cpu0
    pub_cpu = cpu.get(timeout=10)
    pub.join(10)
    bus_cpu = sum(psutil.Process(bus.pid).cpu_times()[:2]) - bus_cpu0 if bus else 0.0
    if bus:
        bus.send_signal(signal.SIGINT)
        bus.wait(10)
    sub.close()
    ctx.term()
    span = (t_last - t_first) / 1e9
    arr = np.array(lat or [np.nan])
    return {"msg_per_s": (len(lat) - 1) / span if span > 0 else 0.0, "received": len(lat),
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "pub_cpu_s": pub_cpu, "sub_cpu_s": sub_cpu, "bus_cpu_s": bus_cpu}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base(transport: str) -> str:
    if transport == "ipc":
        return f"ipc://{tempfile.mkdtemp(prefix='vxb', dir='/tmp')}/b"
    return f"tcp://127.0.0.1:{_free_port()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = ap.parse_args()
    print(f"command: {' '.join(sys.argv)}  ({psutil.cpu_count()} cores)\n")
    print("| payload | transport | path | max rate msg/s | MB/s | latency p50 ms @100 Hz | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for payload, make in PAYLOADS.items():
        size = sum(memoryview(f).nbytes for f in encode("bench", make()))
        for transport in ("ipc", "tcp"):
            for via_bus in (False, True):
                thr = _run(_base(transport), via_bus, payload, 0.0, args.seconds)
                lat = _run(_base(transport), via_bus, payload, 100.0, args.seconds)
                print(f"| {payload} | {transport} | {'bus' if via_bus else 'direct'} "
                      f"| {thr['msg_per_s']:.0f} | {thr['msg_per_s'] * size / 1e6:.0f} "
                      f"| {lat['p50_ms']:.3f} | {lat['p99_ms']:.3f} |", flush=True)
    seconds = max(10.0, 3 * args.seconds)
    s = _run(_base("ipc"), True, "image 640x480 bgr8", 25.0, seconds)
    print(f"\nCPU for one 25 fps 640x480 bgr8 stream over the ipc bus, {seconds:.0f} s "
          "(% of one core; the subscriber decodes every frame):\n")
    print("| publisher | bus | subscriber | frames |\n|---|---|---|---|")
    print(f"| {100 * s['pub_cpu_s'] / seconds:.1f} | {100 * s['bus_cpu_s'] / seconds:.1f} "
          f"| {100 * s['sub_cpu_s'] / seconds:.1f} | {s['received']} |")


if __name__ == "__main__":
    main()
