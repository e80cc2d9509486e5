"""The jitter buffer: prebuffering, underrun and overrun policy, ring wraparound, and one writer
thread against one reader thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streams.jitter import JitterBuffer

RATE = 16000  # 16 frames per ms


def _ramp(start: int, n: int) -> np.ndarray:
    """Frames numbered start, start+1, ... (never 0, so they cannot be mistaken for silence)."""
    return (((np.arange(start, start + n) - 1) % 32767) + 1).astype(np.int16).reshape(-1, 1)


def _numbered(start: int, n: int) -> np.ndarray:
    """Stereo frames carrying a unique index up to 2**30 as (high, low) 15-bit halves."""
    idx = np.arange(start, start + n)
    return np.stack([idx >> 15, idx & 0x7FFF], axis=1).astype(np.int16)


def _indices(frames: np.ndarray) -> np.ndarray:
    idx = (frames[:, 0].astype(np.int64) << 15) | frames[:, 1].astype(np.int64)
    return idx[idx != 0]  # silence is index 0


def test_prebuffers_to_target_before_playing() -> None:
    jb = JitterBuffer(RATE, 1, target_ms=100, max_ms=1000)
    jb.write(_ramp(1, 1000))
    assert not jb.read(256).any()
    assert (jb.silence_frames, jb.frames_played, jb.underruns) == (256, 0, 0)
    jb.write(_ramp(1001, 600))  # 1600 frames = 100 ms: the target
    assert jb.depth_ms() == 100.0
    assert np.array_equal(jb.read(256), _ramp(1, 256))
    assert jb.frames_played == 256 and jb.underruns == 0


def test_underrun_plays_silence_counts_once_and_prebuffers_again() -> None:
    jb = JitterBuffer(RATE, 1, target_ms=10, max_ms=1000)  # 160 frames
    jb.write(_ramp(1, 200))
    out = jb.read(256)
    assert np.array_equal(out[:200], _ramp(1, 200)) and not out[200:].any()
    assert jb.underruns == 1
    for _ in range(3):  # still dry: the same episode
        assert not jb.read(64).any()
    assert jb.underruns == 1
    jb.write(_ramp(201, 100))  # below the target again: keep waiting
    assert not jb.read(64).any()
    jb.write(_ramp(301, 100))
    assert np.array_equal(jb.read(200), _ramp(201, 200))
    assert jb.underruns == 1
    assert jb.frames_played == 400 and jb.silence_frames == 56 + 3 * 64 + 64


def test_overrun_drops_the_oldest_audio() -> None:
    jb = JitterBuffer(RATE, 1, target_ms=0, max_ms=100)  # 1600 frames
    jb.write(_ramp(1, 1000))
    jb.write(_ramp(1001, 1000))
    assert jb.overruns == 1 and jb.depth_frames() == 1600
    assert np.array_equal(jb.read(1600), _ramp(401, 1600))  # frames 1..400 went
    assert jb.dropped_frames == 400


def test_a_write_bigger_than_the_buffer_keeps_its_newest_part() -> None:
    jb = JitterBuffer(RATE, 1, target_ms=0, max_ms=100)
    jb.write(_ramp(1, 300))
    jb.write(_ramp(301, 5000))
    assert jb.overruns == 1
    assert np.array_equal(jb.read(1600), _ramp(3701, 1600))
    assert jb.dropped_frames == 300 + 3400  # the old 300 count once the reader has skipped them
    assert jb.frames_played + jb.dropped_frames == jb.frames_written


def test_drain_plays_out_a_tail_below_the_target_without_an_underrun() -> None:
    jb = JitterBuffer(RATE, 1, target_ms=100, max_ms=1000)
    jb.write(_ramp(1, 300))
    assert not jb.read(128).any()
    jb.drain()
    out = jb.read(512)
    assert np.array_equal(out[:300], _ramp(1, 300)) and not out[300:].any()
    assert jb.underruns == 0 and jb.depth_frames() == 0
    jb.write(_ramp(301, 10))  # a new burst prebuffers again
    assert not jb.read(10).any()


def test_wraparound_over_many_random_writes_and_reads() -> None:
    rng = np.random.default_rng(7)
    jb = JitterBuffer(RATE, 1, target_ms=20, max_ms=50)  # 800-frame ring: wraps hundreds of times
    written, played = 1, []
    for _ in range(3000):
        n = int(rng.integers(0, 400))
        if jb.depth_frames() + n <= jb.capacity:
            jb.write(_ramp(written, n))
            written += n
        played.append(jb.read(int(rng.integers(1, 300))))
    jb.drain()
    while jb.depth_frames():
        played.append(jb.read(256))
    out = np.concatenate(played)
    assert jb.overruns == 0 and jb.underruns > 0
    assert np.array_equal(out[out[:, 0] != 0], _ramp(1, written - 1))
    assert jb.frames_played == written - 1
    assert jb.silence_frames == int((out[:, 0] == 0).sum())


def test_a_read_overrun_mid_copy_starts_again_from_the_oldest_valid_frame() -> None:
    """The interleaving the threaded test can only hope to hit: the writer overruns while the reader
    is copying (numpy copies can run without the GIL). The reader must not play the overwritten slots."""

    class WriterCutsIn(JitterBuffer):
        cut_in = True

        def _copy_out(self, out: np.ndarray, start: int, count: int) -> None:
            super()._copy_out(out, start, count)
            if self.cut_in:
                self.cut_in = False
                self.write(_ramp(1601, 1000))  # overwrites frames 1..1000, which we just copied

    jb = WriterCutsIn(RATE, 1, target_ms=0, max_ms=100)
    jb.write(_ramp(1, 1600))
    assert np.array_equal(jb.read(500), _ramp(1001, 500))
    assert np.array_equal(jb.read(1100), _ramp(1501, 1100))
    assert jb.dropped_frames == 1000 and jb.frames_played == 1600


@pytest.mark.parametrize("overrun", [False, True], ids=["bounded-writer", "overrunning-writer"])
def test_one_writer_thread_and_one_reader_thread(overrun: bool) -> None:
    """Whatever the interleaving, frames come out in order, untorn, and each is either played or
    counted as dropped."""
    jb = JitterBuffer(RATE, 2, target_ms=5, max_ms=20)  # 320-frame ring
    total = 200_000
    done = threading.Event()
    played: list[np.ndarray] = []

    def writer() -> None:
        rng = np.random.default_rng(3)
        i = 1
        while i <= total:
            n = min(int(rng.integers(1, 200)), total - i + 1)
            if not overrun and jb.depth_frames() + n > jb.capacity:
                time.sleep(0)  # a producer that never overruns: let the reader make room
                continue
            jb.write(_numbered(i, n))
            i += n
        jb.drain()
        done.set()

    def reader() -> None:
        out = np.empty((64, 2), np.int16)
        while not (done.is_set() and jb.depth_frames() == 0):
            jb.read_into(out)
            played.append(out.copy())
            time.sleep(0)  # the GIL would otherwise hand the writer only every 5 ms

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    idx = _indices(np.concatenate(played))
    assert np.all(np.diff(idx) > 0), "frames out of order or torn"
    assert jb.frames_written == total
    assert jb.frames_played == idx.size
    assert jb.frames_played + jb.dropped_frames == total
    if not overrun:
        assert jb.overruns == 0 and np.array_equal(idx, np.arange(1, total + 1))
