"""Pub/sub over a real bus process: bounded memory under a slow consumer, latest-only video, exact
topics, reconnection after the bus restarts, publishers that wait for a subscriber or latch their last
message."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import time

import numpy as np
import psutil
import pytest
import zmq

from streams.endpoints import bus_endpoints
from streams.messages import AudioChunk, AudioInfo, Image
from streams.pubsub import LATCHED, ORDERED, SENSOR, LatestSubscriber, Publisher, Subscriber
from tests.helpers import stop, voxsight, wait_for, wait_heartbeat

SOAK_S = 30.0
VIDEO_HZ = 25.0
AUDIO_HZ = 50.0
SLOWDOWN = 10.0


def _publish(bus: str, published: mp.Value, stop_evt: mp.Event) -> None:
    """640x480 BGR at 25 Hz and 20 ms audio chunks at 50 Hz, on an absolute schedule."""
    ctx = zmq.Context()
    pe = bus_endpoints(bus)[0]
    video = Publisher(ctx, pe, "camera/image", qos=SENSOR, source="soak")
    audio = Publisher(ctx, pe, "audio/speech", qos=ORDERED, source="soak")
    frame = np.zeros((480, 640, 3), np.uint8)
    samples = np.zeros((320, 1), np.int16)
    t0 = time.monotonic()
    n = 0
    while not stop_evt.is_set():
        due = t0 + n / AUDIO_HZ
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the stream, not synchronisation
        audio.publish(AudioChunk(samples=samples, sample_rate=16000))
        if n % int(AUDIO_HZ / VIDEO_HZ) == 0:
            video.publish(Image(pixels=frame))
            published.value = video._seq - 1  # the seq just sent
        n += 1
    video.close()
    audio.close()
    ctx.term()


def _consume_video(bus: str, published: mp.Value, out: mp.Queue, stop_evt: mp.Event) -> None:
    """Takes the newest frame, then 'works' 10x longer than the frame period."""
    ctx = zmq.Context()
    sub = LatestSubscriber(ctx, bus_endpoints(bus)[1], "camera/image", msg_type=Image)
    lags, taken = [], 0
    while not stop_evt.is_set():
        item = sub.take(timeout_s=1.0)
        if item is None:
            continue
        lags.append(published.value - item[1].seq)
        taken += 1
        time.sleep(SLOWDOWN / VIDEO_HZ)  # simulated processing cost
    out.put({"lags": lags, "taken": taken, "superseded": sub.stats.superseded})
    sub.close()
    ctx.term()


def _consume_audio(bus: str, out: mp.Queue, stop_evt: mp.Event) -> None:
    """Works 10x slower than the chunk rate; once the publisher stops, drains what is queued."""
    ctx = zmq.Context()
    sub = Subscriber(ctx, bus_endpoints(bus)[1], ["audio/speech"], qos=ORDERED, msg_type=AudioChunk)
    first_seq = last_seq = -1
    while (got := sub.recv(1.0 if not stop_evt.is_set() else 2.0)) is not None or not stop_evt.is_set():
        if got is not None:
            last_seq = got[1].seq
            first_seq = last_seq if first_seq < 0 else first_seq
            if not stop_evt.is_set():
                time.sleep(SLOWDOWN / AUDIO_HZ)  # simulated processing cost
    out.put({"received": sub.stats.received, "dropped": sub.stats.dropped, "span": last_seq - first_seq + 1})
    sub.close()
    ctx.term()


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(180)
def test_slow_subscribers_stay_bounded_and_video_stays_fresh(bus: str) -> None:
    spawn = mp.get_context("spawn")
    published = spawn.Value("q", -1)
    stop_evt = spawn.Event()
    out = spawn.Queue()
    procs = {
        "publisher": spawn.Process(target=_publish, args=(bus, published, stop_evt)),
        "video": spawn.Process(target=_consume_video, args=(bus, published, out, stop_evt)),
        "audio": spawn.Process(target=_consume_audio, args=(bus, out, stop_evt)),
    }
    for p in procs.values():
        p.start()
    bus_pid = next(p.pid for p in psutil.Process().children() if "bus" in " ".join(p.cmdline()))
    pids = {**{k: p.pid for k, p in procs.items()}, "bus": bus_pid}
    try:
        wait_for(lambda: published.value > 2 * VIDEO_HZ, what="publisher to run for 2 s")
        rss_start = {k: _rss(pid) for k, pid in pids.items()}
        deadline = time.monotonic() + SOAK_S
        rss_peak = dict(rss_start)
        while time.monotonic() < deadline:  # sample memory through the soak
            for k, pid in pids.items():
                rss_peak[k] = max(rss_peak[k], _rss(pid))
            stop_evt.wait(1.0)
        stop_evt.set()
        results = [out.get(timeout=30), out.get(timeout=30)]
    finally:
        stop_evt.set()
        for p in procs.values():
            p.join(10)
            if p.is_alive():
                p.kill()
    video = next(r for r in results if "lags" in r)
    audio = next(r for r in results if "dropped" in r)
    frames_sent = published.value + 1
    # ~1.3 GB of video and 50 chunks/s went through; no process may have kept it.
    for k in pids:
        assert rss_peak[k] - rss_start[k] < 30 * 2**20, f"{k} grew {(rss_peak[k] - rss_start[k]) >> 20} MiB"
    assert video["taken"] >= 0.5 * frames_sent / SLOWDOWN
    assert max(video["lags"]) <= 1, f"latest-only lagged by {max(video['lags'])} frames"
    assert video["superseded"] > 0.5 * frames_sent
    # the ordered subscriber fell behind: the bounded queues dropped, and every loss was counted
    assert audio["dropped"] > 0
    assert audio["received"] + audio["dropped"] == audio["span"]


def test_topics_match_exactly(bus: str) -> None:
    ctx = zmq.Context()
    pe, se = bus_endpoints(bus)
    sub = Subscriber(ctx, se, ["camera/image"], msg_type=Image)
    near = Publisher(ctx, pe, "camera/image_overlay", qos=SENSOR)
    exact = Publisher(ctx, pe, "camera/image", qos=SENSOR)
    img = Image(pixels=np.zeros((2, 2, 3), np.uint8))
    try:
        def got_exact() -> bool:
            near.publish(img)
            exact.publish(img)
            return (r := sub.recv(0.05)) is not None and r[0] == "camera/image"

        wait_for(got_exact, what="a message on the exact topic")
        for _ in range(20):
            near.publish(img)
        assert all(r[0] == "camera/image" for r in iter(lambda: sub.recv(0.2), None))
    finally:
        for s in (sub, near, exact):
            s.close()
        ctx.term()


def _restarted(bus: subprocess.Popen, bus_url: str) -> subprocess.Popen:
    """A new bus at `bus_url` after killing `bus` outright (no clean goodbye to its peers)."""
    os.kill(bus.pid, signal.SIGKILL)
    bus.wait()
    return voxsight("bus", "--bus", bus_url)


def test_publishers_and_subscribers_survive_a_bus_restart(bus_url: str) -> None:
    ctx = zmq.Context()
    pe, se = bus_endpoints(bus_url)
    pub = Publisher(ctx, pe, "audio/speech", qos=ORDERED, source="t")
    sub = Subscriber(ctx, se, ["audio/speech"], msg_type=AudioChunk)
    chunk = AudioChunk(samples=np.zeros((160, 1), np.int16), sample_rate=16000)

    def flowing() -> bool:
        pub.publish(chunk)
        return sub.recv(0.05) is not None

    bus = voxsight("bus", "--bus", bus_url)
    try:
        wait_heartbeat(bus_url, "bus")
        wait_for(flowing, what="messages through the first bus")
        bus = _restarted(bus, bus_url)
        wait_for(flowing, timeout_s=20, what="messages through the restarted bus")
    finally:
        stop(bus)
        pub.close()
        sub.close()
        ctx.term()


def test_a_publisher_can_wait_for_its_first_subscriber_and_then_loses_nothing(bus: str) -> None:
    ctx = zmq.Context()
    pe, se = bus_endpoints(bus)
    pub = Publisher(ctx, pe, "audio/speech", qos=ORDERED, source="t")
    other = Subscriber(ctx, se, ["audio/speech_denoised"], msg_type=AudioChunk)  # longer: never ours
    try:
        assert not pub.wait_subscribed(0.5)
        sub = Subscriber(ctx, se, ["audio/speech"], msg_type=AudioChunk)
        try:
            assert pub.wait_subscribed(10.0)
            for _ in range(5):
                pub.publish(AudioChunk(samples=np.zeros((160, 1), np.int16), sample_rate=16000))
            assert [sub.recv(10.0)[1].seq for _ in range(5)] == [0, 1, 2, 3, 4]
        finally:
            sub.close()
    finally:
        for s in (pub, other):
            s.close()
        ctx.term()


def test_a_latched_publisher_answers_each_new_subscriber_with_its_last_message(bus_url: str) -> None:
    ctx = zmq.Context()
    pe, se = bus_endpoints(bus_url)
    info = Publisher(ctx, pe, "audio/info", qos=LATCHED, source="t")
    audio = Publisher(ctx, pe, "audio/speech", qos=ORDERED, source="t")  # not latched
    subs: list[Subscriber] = []

    def next_on(sub: Subscriber) -> tuple[str, object] | None:
        """What `sub` gets next while the publisher serves subscriptions, as a node's loop does."""
        if info.socket.poll(20):
            info.serve()
        return sub.recv(0.02)

    def join() -> Subscriber:
        subs.append(Subscriber(ctx, se, ["audio/info", "audio/speech"]))
        return subs[-1]

    bus = voxsight("bus", "--bus", bus_url)
    try:
        wait_heartbeat(bus_url, "bus")
        info.publish(AudioInfo(sample_rate=16000, topic="audio/speech"))
        info.publish(AudioInfo(sample_rate=48000, topic="audio/speech"))  # the last one is latched
        audio.publish(AudioChunk(samples=np.zeros((160, 1), np.int16), sample_rate=16000))
        seen = -1
        for n in range(2):  # each late subscriber, not just the topic's first
            sub = join()
            topic, msg = wait_for(lambda s=sub: next_on(s), what=f"the latched message for subscriber {n}")
            assert (topic, msg.sample_rate) == ("audio/info", 48000)
            seen = msg.seq
        bus = _restarted(bus, bus_url)  # it hears the subscriptions again; the publisher answers again
        for sub in subs:
            topic, msg = wait_for(lambda s=sub: (got := next_on(s)) and got[1].seq > seen and got,
                                  timeout_s=20, what="the latched message again after a bus restart")
            assert (topic, msg.sample_rate) == ("audio/info", 48000)
    finally:
        stop(bus)
        for s in (info, audio, *subs):
            s.close()
        ctx.term()
