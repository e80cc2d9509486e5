"""Video sources on real media: the bundled test-pattern clip and, when present, real GRID clips."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streams.sources import (
    CameraSource,
    FpsResampler,
    Frame,
    Pacer,
    PatternSource,
    SourceError,
    SourceUnusable,
    VideoFileSource,
    open_source,
    source_kind,
)
from tests.helpers import REPO, SHARED

PATTERN_CLIP = REPO / "launch" / "media" / "pattern.mp4"
GRID_DIR = SHARED / "real" / "grid-dev"
GRID_CLIPS = sorted(GRID_DIR.glob("*.mpg"))
needs_grid = pytest.mark.skipif(not GRID_CLIPS, reason=f"no real GRID clips in {GRID_DIR}")


def test_pattern_clip_every_frame_in_order() -> None:
    with VideoFileSource(PATTERN_CLIP, realtime=False) as src:
        assert src.fps == 25.0
        assert src.frame_size == (320, 240)
        frames = list(src)
    assert len(frames) == 250
    assert [f.index for f in frames] == list(range(250))
    assert [PatternSource.decode_index(f.image) for f in frames] == list(range(250))
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [f.pts_s for f in frames] == pytest.approx([i / 25 for i in range(250)], abs=1e-3)
    assert all(a.mono_ns <= b.mono_ns and a.stamp_ns <= b.stamp_ns for a, b in itertools.pairwise(frames))
    assert src.missing_frames == 0


@needs_grid
@pytest.mark.parametrize("clip", GRID_CLIPS, ids=lambda p: p.name)
def test_grid_clip(clip: Path) -> None:
    with VideoFileSource(clip, realtime=False) as src:
        assert src.fps == 25.0
        assert src.frame_size == (360, 288)
        frames = list(src)
    assert len(frames) == 75
    assert all(f.image.shape == (288, 360, 3) for f in frames)
    assert src.missing_frames == 0


def test_loop_continues_numbering_and_media_time() -> None:
    with VideoFileSource(PATTERN_CLIP, realtime=False, loop=True) as src:
        frames = list(itertools.islice(src, 600))
    assert [f.index for f in frames] == list(range(600))
    assert [PatternSource.decode_index(f.image) for f in frames] == [i % 250 for i in range(600)]
    assert [f.pts_s for f in frames] == pytest.approx([i / 25 for i in range(600)], abs=1e-3)


def test_realtime_file_yields_frames_and_stops_on_request() -> None:
    with VideoFileSource(PATTERN_CLIP, realtime=True) as src:
        got = []
        for frame in src:
            got.append(frame.index)
            if len(got) == 3:
                src.stop()
    assert got == [0, 1, 2]


def _truncated(src: Path, tmp_path: Path, fraction: float = 0.3) -> Path:
    data = src.read_bytes()
    out = tmp_path / f"truncated{src.suffix}"
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


@needs_grid
@pytest.mark.timeout(30)
def test_truncated_mpeg_yields_what_decodes_then_ends(tmp_path: Path) -> None:
    with VideoFileSource(_truncated(GRID_CLIPS[0], tmp_path), realtime=False) as src:
        frames = list(src)
    assert 0 < len(frames) < 75
    assert [f.index for f in frames] == list(range(len(frames)))


@needs_grid
@pytest.mark.timeout(30)
def test_clip_missing_its_middle_counts_missing_frames(tmp_path: Path) -> None:
    data = GRID_CLIPS[0].read_bytes()
    cut = tmp_path / "cut.mpg"
    cut.write_bytes(data[: len(data) // 3] + data[2 * len(data) // 3:])
    with VideoFileSource(cut, realtime=False) as src:
        frames = list(src)
    assert 0 < len(frames) < 75
    assert src.missing_frames == src.frames_expected - len(frames) > 0


def test_truncated_mp4_is_unusable(tmp_path: Path) -> None:
    # mp4v from OpenCV writes its index (moov) last: a cut file has none and cannot be opened.
    with pytest.raises(SourceUnusable, match="cannot open"):
        VideoFileSource(_truncated(PATTERN_CLIP, tmp_path))


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="cannot open"):
        VideoFileSource(garbage)
    with pytest.raises(SourceError, match="does not exist"):
        VideoFileSource(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match="not a file"):
        VideoFileSource(tmp_path)


# ---------------------------------------------------------------- pattern


def test_pattern_numbers_frames() -> None:
    with PatternSource(640, 480, fps=25, frames=60, realtime=False) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(60))
    assert [PatternSource.decode_index(f.image) for f in frames] == list(range(60))
    assert all(f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[10].pts_s == pytest.approx(0.4)
    # Brightness swells and fades, and something moves.
    means = [float(f.image[100:].mean()) for f in frames]
    assert max(means) - min(means) > 20
    assert not np.array_equal(frames[0].image[100:], frames[1].image[100:])


def test_pattern_code_wraps_at_its_width() -> None:
    src = PatternSource(160, 120, realtime=False)
    big = 2**PatternSource.CODE_BITS + 5
    assert PatternSource.decode_index(src.render(big)) == 5
    top = 2**PatternSource.CODE_BITS - 1
    assert PatternSource.decode_index(src.render(top)) == top


def test_pattern_realtime_yields_and_stops() -> None:
    with PatternSource(160, 120, fps=200, frames=5) as src:
        frames = []
        for frame in src:
            assert frame.mono_ns <= time.monotonic_ns()  # stamped when due, never ahead of the clock
            frames.append(frame)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    # On the schedule, not when released: the same spacing on every run, whatever the load.
    assert {b.mono_ns - a.mono_ns for a, b in itertools.pairwise(frames)} == {5_000_000}
    assert {f.stamp_ns - f.mono_ns for f in frames} == {frames[0].stamp_ns - frames[0].mono_ns}


def test_pattern_rejects_bad_geometry() -> None:
    with pytest.raises(SourceUnusable, match="at least"):
        PatternSource(100, 50)
    with pytest.raises(SourceUnusable, match="positive"):
        PatternSource(fps=0)


def test_stop_from_another_thread_wakes_a_pacing_wait() -> None:
    src = PatternSource(160, 120, fps=0.001)  # frame 1 would be due in ~17 minutes
    frames = iter(src)
    next(frames)
    # Whether stop() lands before or during the wait, the iteration must end at once.
    threading.Timer(0.05, src.stop).start()
    assert next(frames, None) is None


# ---------------------------------------------------------------- pacing (synthetic clock)


def test_pacer_schedule_is_absolute() -> None:
    pacer = Pacer(25.0)
    t0 = 1_000_000_000
    assert pacer.delay_ns(0, t0) == 0
    assert pacer.delay_ns(1, t0 + 1_000_000) == 39_000_000
    # Frame 2 handled 10 ms late: frame 3 is still due at t0 + 120 ms, not 10 ms later.
    assert pacer.delay_ns(2, t0 + 90_000_000) == 0
    assert pacer.delay_ns(3, t0 + 100_000_000) == 20_000_000
    assert pacer.delay_ns(1000, t0 + 39_990_000_000) == 10_000_000
    assert pacer.restarts == 0


def test_pacer_restarts_after_a_stall() -> None:
    pacer = Pacer(25.0, max_lag_s=0.5)
    t0 = 0
    pacer.delay_ns(0, t0)
    assert pacer.delay_ns(1, t0 + 2_000_000_000) == 0  # 2 s stall: released at once...
    assert pacer.restarts == 1
    assert pacer.delay_ns(2, t0 + 2_000_000_000) == 40_000_000  # ...and no burst after it
    assert pacer.stamps(2)[1] == t0 + 2_040_000_000  # stamped on the new schedule


def test_pacer_stamps_frames_when_due_not_when_released() -> None:
    pacer = Pacer(30.0)
    with pytest.raises(RuntimeError, match="first delay_ns"):
        pacer.stamps(0)
    t0 = 5_000_000_123
    late = [0, 3_000_000, 700_000, 9_000_000]  # how late each frame was handled
    for n, lag in enumerate(late):
        pacer.delay_ns(n, t0 + round(n * 1e9 / 30) + lag)
    stamps = [pacer.stamps(n) for n in range(len(late))]
    assert [mono for _, mono in stamps] == [t0 + round(n * 1e9 / 30) for n in range(len(late))]
    assert len({wall - mono for wall, mono in stamps}) == 1


# ---------------------------------------------------------------- resampling (synthetic stamps)


def _frames(times_s: list[float]) -> list[Frame]:
    img = np.zeros((2, 2, 3), np.uint8)
    return [Frame(img, 1_700_000_000_000_000_000 + round(t * 1e9), round(t * 1e9) + 5, i, t)
            for i, t in enumerate(times_s)]


def _resample(rs: FpsResampler, frames: list[Frame]) -> list[Frame]:
    return [out for f in frames for out in rs.push(f)]


def _assert_on_grid(out: list[Frame], src: list[Frame], fps: float, tolerance_s: float) -> None:
    """Slot times evenly spaced at `fps`, each holding a frame from within `tolerance_s` of it; the
    frames keep their own acquisition stamps."""
    assert [f.pts_s for f in out] == pytest.approx([out[0].pts_s + k / fps for k in range(len(out))])
    for f in out:
        assert (f.stamp_ns, f.mono_ns) == (src[f.index].stamp_ns, src[f.index].mono_ns)
        assert abs(f.pts_s - src[f.index].pts_s) <= tolerance_s + 1e-9
    assert all(a.stamp_ns <= b.stamp_ns for a, b in itertools.pairwise(out))


def test_resample_30_to_25_drops_one_in_six() -> None:
    src = _frames([i / 30 for i in range(90)])
    rs = FpsResampler(25)
    out = _resample(rs, src)
    assert len(out) == 75
    _assert_on_grid(out, src, 25, tolerance_s=0.02)
    idx = [f.index for f in out]
    assert idx == sorted(set(idx))  # no repeats, order kept
    assert rs.dropped == 15 and rs.repeated == 0


def test_resample_24_to_25_repeats_one_in_twenty_four() -> None:
    src = _frames([i / 24 for i in range(72)])
    rs = FpsResampler(25)
    out = _resample(rs, src)
    assert len(out) == 75
    # A repeat holds the latest frame before its slot: up to one source period plus half a slot old.
    _assert_on_grid(out, src, 25, tolerance_s=0.02 + 1 / 24)
    assert rs.dropped == 0 and rs.repeated == 3
    assert sorted(set(f.index for f in out)) == list(range(72))


def test_resample_jittery_25_passes_every_frame_once() -> None:
    jitter = np.random.default_rng(1).uniform(-0.008, 0.008, 200)
    src = _frames([i / 25 + j for i, j in enumerate(jitter)])
    rs = FpsResampler(25)
    out = _resample(rs, src)
    assert [f.index for f in out] == list(range(200))
    _assert_on_grid(out, src, 25, tolerance_s=0.02)
    assert rs.dropped == rs.repeated == 0


def test_resample_long_gap_restarts_instead_of_repeating() -> None:
    src = _frames([0.0, 0.04, 0.08, 5.0, 5.04])
    rs = FpsResampler(25, max_gap_s=1.0)
    out = _resample(rs, src)
    assert [f.index for f in out] == [0, 1, 2, 3, 4]
    assert rs.restarts == 1 and rs.repeated == 0
    assert out[3].pts_s == src[3].pts_s  # the new grid starts at the frame after the gap


def test_resample_drops_time_going_backwards() -> None:
    src = _frames([0.0, 0.04, 0.08, 0.02, 0.12])
    rs = FpsResampler(25)
    assert [f.index for f in _resample(rs, src)] == [0, 1, 2, 4]
    assert rs.dropped == 1


def test_resample_on_media_time() -> None:
    # Decoded as fast as possible: acquisition times bunch up, media times are what count.
    img = np.zeros((2, 2, 3), np.uint8)
    src = [Frame(img, 1000 + i, 1000 + i, i, i / 50) for i in range(100)]
    out = _resample(FpsResampler(25, clock="media"), src)
    assert [f.index for f in out] == list(range(0, 100, 2))
    assert [f.pts_s for f in out] == pytest.approx([i / 25 for i in range(50)])


def test_resampler_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        FpsResampler(0)
    with pytest.raises(ValueError):
        FpsResampler(25, clock="sundial")


# ---------------------------------------------------------------- dispatch and cameras


def test_open_source_dispatch() -> None:
    with open_source("pattern", realtime=False) as src:
        assert isinstance(src, PatternSource)
        assert (src.frame_size, src.fps) == ((640, 480), 25.0)
    with open_source("pattern:320x240@30", realtime=False) as src:
        assert (src.frame_size, src.fps) == ((320, 240), 30.0)
    with open_source("pattern", fps=12.5, width=200, height=150) as src:
        assert (src.frame_size, src.fps) == ((200, 150), 12.5)
    with open_source(str(PATTERN_CLIP), realtime=False, loop=True) as src:
        assert isinstance(src, VideoFileSource) and src.loop and not src.realtime
    with pytest.raises(SourceUnusable, match="bad pattern spec"):
        open_source("pattern:big")
    with pytest.raises(SourceUnusable, match="does not exist"):
        open_source("clips/typo.mp4")


@pytest.mark.parametrize(("spec", "kind"), [
    ("pattern", "pattern"), ("pattern:64x48", "pattern"), (str(PATTERN_CLIP), "file"),
    ("no/such/file.avi", "file"), ("0", "camera"), ("/dev/video3", "camera"),
    ("rtsp://10.0.0.2/stream", "camera"), ("v4l2src ! videoconvert ! appsink", "camera"),
])
def test_source_kind(spec: str, kind: str) -> None:
    assert source_kind(spec) == kind


@pytest.mark.parametrize("spec", ["99", "/dev/video99", "rtsp://127.0.0.1:1/none"])
def test_absent_camera_is_a_retryable_error(spec: str) -> None:
    with pytest.raises(SourceError, match="cannot open") as exc:
        open_source(spec)
    assert not isinstance(exc.value, SourceUnusable)


def test_camera_source_by_int_index() -> None:
    with pytest.raises(SourceError, match="camera 99"):
        CameraSource(99)
