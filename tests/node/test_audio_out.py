"""The audio_out node as a real process on a real bus: exact WAV output, format conversion and
resampling, counters in the heartbeat, clean exits (idle, SIGTERM), and a device under ALSA's null PCM."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import zmq

from streams.codec import encode
from streams.endpoints import bus_endpoints
from streams.messages import AudioChunk, AudioControl, AudioInfo, Diagnostic, InvalidMessage
from streams.pubsub import ORDERED, Publisher, Subscriber
from tests.alsa import alsa_env
from tests.helpers import stop, voxsight, wait_for

WARMUP = 160


class Feed:
    """The test's end of the bus: publishes audio and info, and watches the node's heartbeats."""

    def __init__(self, bus: str, node: str = "audio_out") -> None:
        ctx = zmq.Context.instance()
        pub, sub = bus_endpoints(bus)
        self.node = node
        self.audio = Publisher(ctx, pub, "audio/speech", qos=ORDERED, source="feed")
        self.info = Publisher(ctx, pub, "audio/info", qos=ORDERED, source="feed")
        self.diag = Subscriber(ctx, sub, ["diagnostics"], msg_type=Diagnostic)
        self.last: Diagnostic | None = None
        self.clock_ns = time.time_ns()  # chunks are stamped back to back, like a real source's

    def send(self, samples: np.ndarray, rate: int = 16000, fmt: str = "S16LE") -> None:
        chunk = AudioChunk(samples=samples, sample_rate=rate, channels=samples.shape[1], format=fmt,
                           stamp_ns=self.clock_ns)
        self.clock_ns += chunk.duration_ns
        self.audio.publish(chunk)

    def beat(self, predicate=lambda d: True) -> Diagnostic | None:
        """The newest heartbeat of the node so far, if it satisfies `predicate`."""
        while (got := self.diag.recv(0)) is not None:
            if got[1].node == self.node:
                self.last = got[1]
        return self.last if self.last is not None and predicate(self.last) else None

    def warm_up(self) -> None:
        """Publish silence and info until the node has received both: its subscriptions are live."""
        def joined(d: Diagnostic) -> bool:
            return d.values.get("sub.audio/speech.received", 0) >= 1 and \
                d.values.get("sub.audio/info.received", 0) >= 1

        def step() -> Diagnostic | None:
            self.info.publish(AudioInfo(sample_rate=16000, channels=1, format="S16LE", topic="audio/speech"))
            self.send(np.zeros((WARMUP, 1), np.int16))
            return self.beat(joined)

        wait_for(step, timeout_s=20, what="audio_out to receive audio and info", poll_s=0.05)

    def settle(self) -> int:
        """Wait until the node has handled every chunk sent so far; return how many it has handled.

        Warm-up chunks sent before the node joined are lost, so the count sent says nothing. A marker
        does: silence in a format that contradicts the stream's info, which the node counts as a mismatch.
        """
        mismatches = self.beat().values["format_mismatches"]
        self.send(np.zeros((WARMUP, 1), "<f4"), fmt="F32LE")
        return wait_for(lambda: self.beat(lambda d: d.values["format_mismatches"] > mismatches),
                        what="the marker chunk").values["chunks"]

    def close(self) -> None:
        for s in (self.audio, self.info, self.diag):
            s.close()


@pytest.fixture
def feed(bus: str):
    f = Feed(bus)
    yield f
    f.close()


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels()), \
            w.getframerate()


def _in_chunks(x: np.ndarray, size: int) -> list[np.ndarray]:
    return [x[i:i + size] for i in range(0, len(x), size)]


def _sine(hz: float, rate: int, n: int) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(n) / rate)


def test_wav_output_is_exact_converted_and_resampled_then_exits_when_idle(bus: str, feed: Feed,
                                                                         tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    proc = voxsight("run", "audio_out", "--bus", bus, f"path:={wav}", "idle_exit_s:=1.0")
    try:
        feed.warm_up()
        ramp = np.arange(1, 3201, dtype=np.int16).reshape(-1, 1)  # S16LE, as the info says
        for i, chunk in enumerate(_in_chunks(ramp, 320)):
            if i == 5:
                feed.audio._seq += 1  # one chunk lost on the way
            feed.send(chunk)
        neg = -np.arange(1, 3201).reshape(-1, 1) / 32768.0  # F32LE values int16 represents exactly
        for chunk in _in_chunks(neg.astype("<f4"), 320):
            feed.send(chunk, fmt="F32LE")
        k = np.arange(1600)
        stereo = np.stack([2 * k + 1000, 2 * k + 3000], axis=1).astype(np.int16)  # mixes to 2k + 2000
        for chunk in _in_chunks(stereo, 160):
            feed.send(chunk)
        low = _sine(500.0, 8000, 4000)
        for chunk in _in_chunks(np.rint(low * 32767).astype(np.int16).reshape(-1, 1), 160):
            feed.send(chunk, rate=8000)
        high = _sine(1000.0, 48000, 9600)
        for chunk in _in_chunks(high.astype("<f4").reshape(-1, 1), 960):
            feed.send(chunk, rate=48000, fmt="F32LE")
        assert proc.wait(timeout=30) == 0, proc.stdout.read()
    finally:
        stop(proc)
    final = wait_for(lambda: feed.beat(lambda d: d.state == "finalized"), what="the final heartbeat")

    out, rate = _read_wav(wav)
    assert rate == 16000 and out.shape[1] == 1
    start = int(np.flatnonzero(out[:, 0])[0])
    assert start % WARMUP == 0 and not out[:start].any()  # warm-up silence, whole chunks of it
    out = out[start:, 0]
    expected_len = 3200 + 3200 + 1600 + 8000 + 3200
    assert out.size == expected_len
    assert np.array_equal(out[:3200], ramp[:, 0])
    assert np.array_equal(out[3200:6400], -np.arange(1, 3201))
    assert np.array_equal(out[6400:8000], 2 * k + 2000)
    up = out[8000:16000] / 32768.0
    down = out[16000:] / 32768.0
    edge = 64  # each resampled stream starts from and ends in silence
    np.testing.assert_allclose(up[edge:-edge], _sine(500.0, 16000, 8000)[edge:-edge], atol=3e-3)
    np.testing.assert_allclose(down[edge:-edge], _sine(1000.0, 16000, 3200)[edge:-edge], atol=3e-3)

    v = final.values
    chunks = 10 + 10 + 10 + 25 + 10
    assert v["chunks"] == v["sub.audio/speech.received"] == start // WARMUP + chunks
    assert v["samples_out"] == start + expected_len
    assert v["format_mismatches"] == chunks - 10  # every chunk but the first S16LE mono 16 kHz ten
    assert v["resampled_chunks"] == 25 + 10
    assert v["dropped"] == 1 and v["stamp_gaps"] == 0


def test_sigterm_leaves_a_complete_wav(bus: str, feed: Feed, tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    proc = voxsight("run", "audio_out", "--bus", bus, f"path:={wav}")
    try:
        feed.warm_up()
        tone = np.rint(_sine(440.0, 16000, 4800) * 32767).astype(np.int16).reshape(-1, 1)
        for i, chunk in enumerate(_in_chunks(tone, 320)):
            if i == 7:
                feed.clock_ns += 500_000_000  # the source skipped half a second
            feed.send(chunk)

        def tone_written() -> bool:
            try:  # the file is valid mid-stream, but we may read it between a write and its header update
                out, _ = _read_wav(wav)
            except (wave.Error, EOFError):
                return False
            return np.array_equal(out[-4800:], tone)

        wait_for(tone_written, what="the tone in the WAV")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop(proc)
    out, _ = _read_wav(wav)
    assert np.array_equal(out[-4800:], tone) and not out[:-4800].any()
    final = wait_for(lambda: feed.beat(lambda d: d.state == "finalized"), what="the final heartbeat")
    assert final.values["stamp_gaps"] == 1 and final.values["dropped"] == 0


def _command(bus: str, *args: str) -> tuple[int, str]:
    """`voxsight audio ARGS` on the bus: its exit status and output."""
    proc = voxsight("audio", *args, "--bus", bus)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def test_an_operator_sets_the_volume_and_mutes_and_the_audio_keeps_its_timing(bus: str, feed: Feed,
                                                                              tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    proc = voxsight("run", "audio_out", "--bus", bus, f"path:={wav}")
    steps = [(("volume", "0.5"), "audio_out: playing, volume 0.5"),
             (("mute",), "audio_out: muted, volume 0.5"),
             (("unmute",), "audio_out: playing, volume 0.5"),
             (("volume", "4"), "audio_out: playing, volume 4")]
    chunk = np.array([[1000], [-1000], [20000], [-20000]], np.int16).repeat(80, axis=0)
    try:
        feed.warm_up()
        played = feed.settle()

        def send_and_wait() -> None:
            nonlocal played
            feed.send(chunk)
            played += 1  # the next command must come after this chunk, not overtake it on the bus
            wait_for(lambda: feed.beat(lambda d: d.values["chunks"] >= played), what="the chunk played")

        send_and_wait()
        for args, answer in steps:
            code, out = _command(bus, *args)
            assert code == 0 and answer in out, out
            send_and_wait()
        code, out = _command(bus, "mute", "--node", "another_speaker", "--timeout", "1")
        assert code == 1 and "audio_out node 'another_speaker' confirmed mute within 1 s" in out
        send_and_wait()  # still playing: the command was for another node
    finally:
        assert stop(proc) == 0
    out, _ = _read_wav(wav)
    start = int(np.flatnonzero(out[:, 0])[0])
    assert start % WARMUP == 0 and not out[:start].any()
    # muted, the chunk is as long as ever; louder, it clips instead of wrapping around
    gains = (1.0, 0.5, 0.0, 0.5, 4.0, 4.0)
    expected = np.concatenate([np.clip(np.rint(chunk[:, 0] * g), -32768, 32767) for g in gains])
    assert np.array_equal(out[start:, 0], expected)
    final = wait_for(lambda: feed.beat(lambda d: d.state == "finalized"), what="the final heartbeat")
    assert final.values["muted_chunks"] == 1 and final.values["volume"] == 4.0


def test_controls_out_of_range_are_refused_before_they_reach_a_node(bus: str) -> None:
    code, out = _command(bus, "volume", "5")
    assert code == 2 and "volume must be in [0, 4]" in out
    code, out = _command(bus, "volume")
    assert code == 2 and "volume takes a gain" in out
    with pytest.raises(InvalidMessage, match="volume must be"):
        encode("audio/control", AudioControl(command="volume", volume=float("nan")))
    with pytest.raises(InvalidMessage, match="unknown audio command"):
        encode("audio/control", AudioControl(command="louder"))
    node = voxsight("run", "audio_out", "--bus", bus, "volume:=-1")
    assert node.wait(timeout=30) == 1 and "volume must be in [0, 4], got -1" in node.stdout.read()


needs_pyaudio = pytest.mark.skipif(importlib.util.find_spec("pyaudio") is None,
                                   reason="the audio extra (pyaudio) is not installed")


@needs_pyaudio
def test_device_sink_under_the_alsa_null_device(bus: str, feed: Feed, tmp_path: Path) -> None:
    proc = voxsight("run", "audio_out", "--bus", bus, "sink:=device", "target_ms:=40",
                    env=alsa_env(tmp_path, "null"))
    try:
        tone = np.rint(_sine(440.0, 16000, 320) * 32767).astype(np.int16).reshape(-1, 1)

        def playing() -> Diagnostic | None:
            feed.send(tone)
            return feed.beat(lambda d: d.values.get("frames_played", 0) >= 320 * 10)

        beat = wait_for(playing, timeout_s=20, what="audio_out to play through the null device", poll_s=0.02)
        assert {"underruns", "overruns", "jitter_depth_ms", "device_underflows"} <= beat.values.keys()
        assert beat.values["chunks"] >= 10 and beat.values["callback_errors"] == 0
        assert beat.state == "active"
    finally:
        assert stop(proc) == 0


@needs_pyaudio
def test_a_tail_below_the_jitter_target_plays_once_the_stream_pauses(bus: str, feed: Feed,
                                                                    tmp_path: Path) -> None:
    proc = voxsight("run", "audio_out", "--bus", bus, "sink:=device", "target_ms:=1000", "max_ms:=2000",
                    env=alsa_env(tmp_path, "null"))
    try:
        blip = np.full((16, 1), 1000, np.int16)  # far below the 1 s target, however many arrive

        def received() -> Diagnostic | None:
            feed.send(blip)
            return feed.beat(lambda d: d.values.get("chunks", 0) >= 1)

        wait_for(received, timeout_s=20, what="audio_out to receive audio")
        def all_played(d: Diagnostic) -> bool:
            return 0 < d.values["frames_written"] == d.values["frames_played"]

        beat = wait_for(lambda: feed.beat(all_played), what="the queued tail to be played")
        assert beat.values["underruns"] == 0  # a pause is not an underrun
    finally:
        assert stop(proc) == 0


@needs_pyaudio
def test_missing_device_stops_with_a_clear_message(bus_url: str, tmp_path: Path) -> None:
    proc = voxsight("run", "audio_out", "--bus", bus_url, "sink:=device", "device:=no-such-card",
                    env=alsa_env(tmp_path, "null"))
    assert proc.wait(timeout=30) == 1
    assert "no output device matching 'no-such-card'" in proc.stdout.read()


@needs_pyaudio
def test_an_operator_lists_the_output_devices_by_the_names_audio_out_takes(tmp_path: Path) -> None:
    proc = voxsight("audio", "devices", env=alsa_env(tmp_path, "null"), stderr=subprocess.DEVNULL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "nullpcm" in {line.split(": ", 1)[1] for line in out.splitlines() if ": " in line}
    refused = voxsight("audio", "devices", "2", stderr=subprocess.PIPE)
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2 and "devices takes no gain" in err
