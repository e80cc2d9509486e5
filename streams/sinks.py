"""Where played audio ends up: a sound device (PortAudio), a WAV file, or nowhere (counted).

Every sink takes int16 frames shaped (frames, channels) at the rate and channel count it was opened
with; converting to that format is the caller's job (see `streams.audio`).
"""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from streams.jitter import JitterBuffer

_DRAIN_MARGIN_S = 0.5  # on close, how long past the queued audio's duration we wait for it to play


class SinkError(RuntimeError):
    """A sink that cannot be opened or used (missing package, no such device, unwritable file)."""


class AudioSink:
    """open(sample_rate, channels) → write(frames)* → close(). `close()` may be called more than once."""

    sample_rate = 0
    channels = 0
    is_open = False

    def open(self, sample_rate: int, channels: int) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise SinkError(f"bad output format: {sample_rate} Hz, {channels} channel(s)")
        self.sample_rate, self.channels = sample_rate, channels
        self.is_open = True

    def write(self, frames: np.ndarray) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        """The stream paused or ended: play out what is queued without waiting for more."""

    def close(self) -> None:
        self.is_open = False

    def stats(self) -> dict[str, float]:
        """Counters for a heartbeat."""
        return {}

    def _check(self, frames: np.ndarray) -> np.ndarray:
        if not self.is_open:
            raise SinkError(f"{type(self).__name__} is not open")
        if frames.dtype != np.int16 or frames.ndim != 2 or frames.shape[1] != self.channels:
            raise ValueError(f"expected int16 frames (n, {self.channels}), got {frames.dtype} {frames.shape}")
        return frames

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullSink(AudioSink):
    """Discards audio, counting it."""

    def __init__(self) -> None:
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        self.frames_written += self._check(frames).shape[0]

    def stats(self) -> dict[str, float]:
        return {"frames_written": self.frames_written}


class WavSink(AudioSink):
    """16-bit PCM WAV, written as audio arrives. The `wave` module rewrites the header's sizes after
    every write, so the file is valid at any moment, not only after `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames_written = 0
        self._file: Any = None
        self._wav: Any = None

    def open(self, sample_rate: int, channels: int) -> None:
        super().open(sample_rate, channels)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 (open across writes until close())
        except OSError as exc:
            self.is_open = False
            raise SinkError(f"cannot write {self.path}: {exc}") from exc
        self._wav = wave.open(self._file, "wb")  # noqa: SIM115 (closed by close())
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    def write(self, frames: np.ndarray) -> None:
        frames = np.ascontiguousarray(self._check(frames), dtype="<i2")
        self._wav.writeframes(frames)
        self.frames_written += frames.shape[0]

    def close(self) -> None:
        if self._wav is not None:
            try:
                self._wav.close()  # writes the final sizes into the header
            finally:
                self._file.close()
                self._wav = self._file = None
        super().close()

    def stats(self) -> dict[str, float]:
        return {"frames_written": self.frames_written}


def _import_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:
        raise SinkError("sound device output needs PyAudio: pip install 'voxsight[audio]' "
                        "(it builds against PortAudio: apt-get install portaudio19-dev)") from exc
    return pyaudio


def _output_devices(pa: Any) -> list[tuple[int, str]]:
    devices = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if info.get("maxOutputChannels", 0) > 0:
            devices.append((i, str(info.get("name", "?"))))
    return devices


def list_output_devices() -> list[tuple[int, str]]:
    """(index, name) of every PortAudio output device."""
    pa = _import_pyaudio().PyAudio()
    try:
        return _output_devices(pa)
    finally:
        pa.terminate()


def describe_devices(devices: list[tuple[int, str]]) -> str:
    if not devices:
        return "PortAudio sees no output device (no sound card? ALSA_CONFIG_PATH can add a null device)"
    return "output devices: " + "; ".join(f"{i}: {name}" for i, name in devices)


def find_output_device(pa: Any, device: int | str | None) -> int | None:
    """PortAudio index for `device`: None or "" (the default device), an index, or a name substring
    (case-insensitive; an exact name wins over a partial one)."""
    if device is None or device == "":
        return None
    devices = _output_devices(pa)
    if isinstance(device, int) or device.strip().isdigit():
        index = int(device)
        if any(i == index for i, _ in devices):
            return index
        raise SinkError(f"no output device with index {index}; {describe_devices(devices)}")
    wanted = device.strip().lower()
    exact = [i for i, name in devices if name.lower() == wanted]
    partial = [i for i, name in devices if wanted in name.lower()]
    if exact or partial:
        return (exact or partial)[0]
    raise SinkError(f"no output device matching {device!r}; {describe_devices(devices)}")


class PyAudioSink(AudioSink):
    """Plays through PortAudio in callback mode. `write()` feeds a `JitterBuffer`; PortAudio's thread
    pulls from it. The callback never raises (PyAudio would inject the exception into the main thread
    and stop the stream) and reuses one preallocated buffer."""

    def __init__(self, device: int | str | None = None, *, target_ms: float = 100.0,
                 max_ms: float = 1000.0, frames_per_buffer: int = 256) -> None:
        self.device = device
        self.target_ms, self.max_ms = target_ms, max_ms
        self.frames_per_buffer = frames_per_buffer
        self.device_underflows = 0
        self.callback_errors = 0
        self.jitter: JitterBuffer | None = None
        self._pa: Any = None
        self._stream: Any = None
        self._out = np.zeros((0, 1), dtype=np.int16)

    def open(self, sample_rate: int, channels: int) -> None:
        pyaudio = _import_pyaudio()
        super().open(sample_rate, channels)
        self._continue = pyaudio.paContinue
        self._underflow = pyaudio.paOutputUnderflow
        self.jitter = JitterBuffer(sample_rate, channels, self.target_ms, self.max_ms)
        self._out = np.zeros((self.frames_per_buffer, channels), dtype=np.int16)
        self._pa = pyaudio.PyAudio()
        try:
            index = find_output_device(self._pa, self.device)
            self._stream = self._pa.open(
                format=pyaudio.paInt16, channels=channels, rate=sample_rate, output=True,
                output_device_index=index, frames_per_buffer=self.frames_per_buffer,
                stream_callback=self._callback)
        except (OSError, ValueError) as exc:
            devices = describe_devices(_output_devices(self._pa))
            self._release()
            raise SinkError(f"cannot open output device {self.device or '(default)'!s} at {sample_rate} Hz, "
                            f"{channels} channel(s): {exc}; {devices}") from exc
        except SinkError:
            self._release()
            raise

    def _callback(self, _in: object, frame_count: int, _time: object, status: int) -> tuple[Any, int]:
        try:
            if status & self._underflow:
                self.device_underflows += 1
            if frame_count != self._out.shape[0]:  # only when PortAudio changes its block size
                self._out = np.zeros((frame_count, self.channels), dtype=np.int16)
            self.jitter.read_into(self._out)
            return self._out, self._continue
        except Exception:
            self.callback_errors += 1
            # Full length, or PyAudio pads with zeros and ends the stream.
            return bytes(2 * frame_count * self.channels), self._continue

    def write(self, frames: np.ndarray) -> None:
        self.jitter.write(self._check(frames))

    def drain(self) -> None:
        if self.jitter is not None:
            self.jitter.drain()

    def close(self) -> None:
        """Play out what is queued (bounded wait), then stop the device."""
        if self._stream is not None and self.jitter is not None:
            self.drain()
            deadline = time.monotonic() + self.jitter.depth_ms() / 1000 + _DRAIN_MARGIN_S
            while self.jitter.depth_frames() and time.monotonic() < deadline and self._stream.is_active():
                time.sleep(0.01)  # the device plays in real time; there is nothing to wait on but the clock
        self._release()
        super().close()

    def _release(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()  # Pa_StopStream: lets the device's own buffers play out
            finally:
                self._stream.close()
                self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None

    def stats(self) -> dict[str, float]:
        values = self.jitter.stats() if self.jitter is not None else {}
        return {**values, "device_underflows": self.device_underflows,
                "callback_errors": self.callback_errors}
