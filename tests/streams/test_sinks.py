"""Sinks: WAV files, the null sink, and PortAudio playback through an ALSA file device that records
what was played (in a child process: PortAudio reads the ALSA configuration once per process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from streams.sinks import NullSink, PyAudioSink, SinkError, WavSink
from tests.alsa import alsa_env
from tests.helpers import REPO

needs_pyaudio = pytest.mark.skipif(importlib.util.find_spec("pyaudio") is None,
                                   reason="the audio extra (pyaudio) is not installed")

# Plays frames from an .npy file through PyAudioSink in chunks, then prints the sink's counters.
PLAY = """
import json, sys
import numpy as np
from streams.sinks import PyAudioSink, SinkError
frames = np.load(sys.argv[1])
sink = PyAudioSink(sys.argv[2] or None, target_ms=20, max_ms=2000, frames_per_buffer=256)
try:
    sink.open(16000, frames.shape[1])
except SinkError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
for i in range(0, len(frames), 320):
    sink.write(frames[i:i + 320])
sink.close()
print(json.dumps(sink.stats()))
"""


def _stereo_ramp(n: int) -> np.ndarray:
    k = np.arange(1, n + 1) % 30000 + 1  # never 0: silence can be told apart
    return np.stack([k, -k], axis=1).astype(np.int16)


def _play(tmp_path: Path, frames: np.ndarray, device: str,
          env: dict[str, str]) -> subprocess.CompletedProcess:
    src = tmp_path / "frames.npy"
    np.save(src, frames)
    return subprocess.run([sys.executable, "-c", PLAY, str(src), device], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


def test_wav_round_trip_with_a_valid_header_at_every_step(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.wav"  # missing folders are made
    frames = _stereo_ramp(5000)
    with WavSink(path) as sink:
        sink.open(22050, 2)
        for i in range(0, 5000, 1234):
            sink.write(frames[i:i + 1234])
            with wave.open(str(path)) as partial:  # readable mid-stream: the header tracks the data
                assert partial.getnframes() == min(i + 1234, 5000)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 22050)
        back = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    assert np.array_equal(back, frames)
    assert sink.stats()["frames_written"] == 5000


def test_sinks_reject_what_they_cannot_take(tmp_path: Path) -> None:
    sink = NullSink()
    with pytest.raises(SinkError):
        sink.write(np.zeros((4, 1), np.int16))  # not open
    sink.open(16000, 1)
    with pytest.raises(ValueError):
        sink.write(np.zeros((4, 2), np.int16))
    with pytest.raises(ValueError):
        sink.write(np.zeros((4, 1), np.float32))
    sink.write(np.zeros((4, 1), np.int16))
    assert sink.stats() == {"frames_written": 4}
    with pytest.raises(SinkError, match="cannot write"):
        WavSink(tmp_path).open(16000, 1)  # a folder, not a file


def test_missing_pyaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # what `import pyaudio` meets without the extra
    with pytest.raises(SinkError, match=r"voxsight\[audio\]"):
        PyAudioSink().open(16000, 1)


@needs_pyaudio
def test_device_playback_records_every_sample_in_order(tmp_path: Path) -> None:
    record = tmp_path / "played.raw"
    frames = _stereo_ramp(16000)
    done = _play(tmp_path, frames, "defa", alsa_env(tmp_path, "file", record))  # name substring lookup
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["frames_written"] == 16000 and stats["overruns"] == 0 and stats["callback_errors"] == 0
    played = np.fromfile(record, "<i2").reshape(-1, 2)
    # The file device does not pace, so the callback plays silence whenever the buffer is empty.
    audible = played[np.any(played != 0, axis=1)]
    assert np.array_equal(audible, frames)
    assert stats["frames_played"] == 16000


@needs_pyaudio
def test_unknown_device_lists_the_devices_there_are(tmp_path: Path) -> None:
    done = _play(tmp_path, _stereo_ramp(10), "no-such-card", alsa_env(tmp_path, "null"))
    assert done.returncode == 3
    assert "no output device matching 'no-such-card'" in done.stderr
    assert "nullpcm" in done.stderr
