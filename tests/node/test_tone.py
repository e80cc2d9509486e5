"""The tone node as a real process: frames in, stamped phase-continuous audio out, its length from the
frames' stamps and its pitch from their brightness; AudioInfo for late subscribers."""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import zmq

from streams.endpoints import bus_endpoints
from streams.messages import AudioChunk, AudioInfo, Diagnostic, Image
from streams.pubsub import ORDERED, SENSOR, Publisher, Subscriber
from tests.helpers import next_message, stop, voxsight, wait_for, wait_heartbeat

RATE = 16000
MS = 1_000_000


def _frame(brightness: int, stamp_ns: int) -> Image:
    return Image(pixels=np.full((12, 16, 3), brightness, np.uint8), stamp_ns=stamp_ns)


def _pitch(brightness: int) -> float:
    return 220.0 + 660.0 * brightness / 255.0


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n=1 << 18))
    return float(np.argmax(spectrum)) * RATE / (1 << 18)


def _sine_residual(x: np.ndarray, hz: float) -> float:
    """How far `x` is from the best-fitting single sine at `hz` (any phase and amplitude)."""
    w = 2 * np.pi * hz * np.arange(x.size) / RATE
    basis = np.stack([np.sin(w), np.cos(w)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.abs(basis @ coef - x).max())


class Camera:
    """The test's camera: publishes frames and waits for the tone node's chunk for each."""

    def __init__(self, bus: str) -> None:
        ctx = zmq.Context.instance()
        pub_ep, sub_ep = bus_endpoints(bus)
        self.pub = Publisher(ctx, pub_ep, "camera/image", qos=SENSOR, source="cam")
        self.audio = Subscriber(ctx, sub_ep, ["audio/speech"], qos=ORDERED, msg_type=AudioChunk)
        self.stamp = time.time_ns()

    def warm_up(self, ready=lambda: True) -> None:
        """Frames every 40 ms (of stamp time) until tone answers and `ready()` holds."""
        def step() -> bool:
            self.stamp += 40 * MS
            self.pub.publish(_frame(0, self.stamp))
            return self.audio.recv(0) is not None and ready()

        wait_for(step, timeout_s=20, what="tone to answer a frame", poll_s=0.05)

    def voice(self, brightness: int, gap_ms: int) -> AudioChunk:
        """Publish one frame `gap_ms` after the last and wait for its chunk (chunks of warm-up frames
        still on their way are skipped)."""
        self.stamp += gap_ms * MS
        self.pub.publish(_frame(brightness, self.stamp))
        deadline = time.monotonic() + 10
        while (got := self.audio.recv(max(0.0, deadline - time.monotonic()))) is not None:
            if got[1].stamp_ns == self.stamp:
                return got[1]
        raise AssertionError(f"no chunk stamped {self.stamp}")

    def close(self) -> None:
        self.pub.close()
        self.audio.close()


def test_tone_voices_frames_with_their_stamps_and_brightness(bus: str) -> None:
    camera = Camera(bus)
    infos: list[Subscriber] = []
    proc = voxsight("run", "tone", "--bus", bus)
    try:
        camera.warm_up()
        camera.voice(0, 10_000)  # after 10 s without frames: capped; the reference for the gaps below
        # (gap since the previous frame, brightness, samples expected)
        plan = [(200, 0, 3200), (300, 255, 4800), (250, 128, 4000), (2000, 128, 8000), (40, 64, 640),
                (1001, 192, 8000)]
        chunks = [(camera.voice(brightness, gap_ms), camera.stamp) for gap_ms, brightness, _ in plan]

        for (chunk, at), (_, brightness, n) in zip(chunks, plan, strict=True):
            assert chunk.stamp_ns == at
            assert (chunk.sample_rate, chunk.channels, chunk.format) == (RATE, 1, "S16LE")
            assert chunk.samples.shape == (n, 1)
            if n >= 3200:
                assert abs(_peak_hz(chunk.samples[:, 0] / 32768.0) - _pitch(brightness)) < 3.0
        # Two chunks at one pitch, back to back, are one unbroken sine: no phase jump between them.
        joined = np.concatenate([chunks[2][0].samples[:, 0], chunks[3][0].samples[:, 0]]) / 32768.0
        assert _sine_residual(joined, _pitch(128)) < 3 / 32768
        assert abs(np.abs(joined).max() - 0.3) < 1e-3  # the default amplitude

        # The format is latched: each subscriber that joins this late gets it, though it was sent once.
        for n in range(2):
            infos.append(Subscriber(zmq.Context.instance(), bus_endpoints(bus)[1], ["audio/info"],
                                    msg_type=AudioInfo))
            got = next_message(infos[-1], what=f"AudioInfo for late subscriber {n}")
            assert (got.sample_rate, got.channels, got.format, got.topic) == (RATE, 1, "S16LE",
                                                                             "audio/speech")
        beat = wait_heartbeat(bus, "tone", predicate=lambda d: d.values.get("capped_gaps", 0) >= 3)
        assert beat.level in ("OK", "WARN")
    finally:
        assert stop(proc) == 0
        camera.close()
        for info in infos:
            info.close()


def test_tone_into_audio_out_is_a_working_graph(bus: str, tmp_path: Path) -> None:
    """camera frames → tone → audio_out → WAV: the file ends with exactly the audio tone sent."""
    wav = tmp_path / "graph.wav"
    camera = Camera(bus)
    diag = Subscriber(zmq.Context.instance(), bus_endpoints(bus)[1], ["diagnostics"], msg_type=Diagnostic)
    tone = voxsight("run", "tone", "--bus", bus)
    out = voxsight("run", "audio_out", "--bus", bus, f"path:={wav}", "idle_exit_s:=1.0")
    seen: dict[str, Diagnostic] = {}

    def audio_out_receives() -> bool:
        while (got := diag.recv(0)) is not None:
            seen[got[1].node] = got[1]
        return seen.get("audio_out", Diagnostic(node="")).values.get("sub.audio/speech.received", 0) > 0

    try:
        camera.warm_up(audio_out_receives)
        sent = [camera.voice(b, 120) for b in (30, 60, 90, 120, 150)]
        assert out.wait(timeout=30) == 0  # idle_exit_s: the frames stopped, so does the audio

        def audio_out_final() -> Diagnostic | None:
            audio_out_receives()
            final = seen["audio_out"]
            return final if final.state == "finalized" else None

        final = wait_for(audio_out_final, what="audio_out's last heartbeat")
        # tone's stamps and durations agree, so audio_out sees no time skipped and nothing lost
        assert final.values["stamp_gaps"] == 0 and final.values["dropped"] == 0
    finally:
        stop(out)
        assert stop(tone) == 0
        camera.close()
        diag.close()
    with wave.open(str(wav)) as w:
        played = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    expected = np.concatenate([c.samples[:, 0] for c in sent])
    assert np.array_equal(played[-expected.size:], expected)


def test_bad_parameters_stop_with_a_clear_message(bus_url: str) -> None:
    proc = voxsight("run", "tone", "--bus", bus_url, "amplitude:=1.5")
    assert proc.wait(timeout=30) == 1
    assert "amplitude 1.5 out of range" in proc.stdout.read()
