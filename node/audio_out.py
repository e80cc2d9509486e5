"""`audio_out`: plays an audio topic on a sound device, writes it to a WAV file, or just counts it.

Every chunk is brought to the output format (S16LE at `sample_rate`, `channels`): float samples are
converted with clipping, channels mixed or duplicated, and the rate converted by one stateful
resampler per source stream, so chunk boundaries stay seamless. Lost chunks (gaps in `seq`) and
streams whose stamps jump past the audio they carried are counted, as are chunks that contradict
their stream's `AudioInfo`. On shutdown the resamplers' tails are written and the sink is closed
properly (a WAV file gets its final header; a device plays out its queue).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from node.params import param
from node.runtime import Node
from streams.audio import StreamResampler, map_channels, to_float32, to_int16
from streams.messages import MAX_VOLUME, AudioChunk, AudioControl, AudioInfo
from streams.pubsub import EVENTS, ORDERED
from streams.sinks import AudioSink, NullSink, PyAudioSink, SinkError, WavSink

_STAMP_SLACK_NS = 20_000_000  # stamp jitter tolerated before a jump counts as a gap in the stream
_IDLE_CHECK_S = 0.05
# A stream silent this long has paused or ended: the device plays out its queue, even below the jitter
# target (or an utterance's tail would wait for the next one), and running dry is not an underrun.
_PAUSE_S = 0.3


@dataclass
class AudioOutParams:
    topic: str = param("audio/speech", "audio topic to play (AudioChunk)")
    sink: str = param("wav", "where the audio goes", choices=("device", "wav", "null"))
    path: str = param("out/speech.wav", "WAV file written by sink wav")
    device: str = param("", "sink device: output device index or name substring; '' = the default device")
    sample_rate: int = param(16000, "output sample rate in Hz; other rates are resampled to it")
    channels: int = param(1, "output channels; other layouts are mixed down or duplicated")
    target_ms: float = param(100.0, "sink device: audio queued before playback (re)starts")
    max_ms: float = param(1000.0, "sink device: most audio queued; beyond it the oldest is dropped")
    idle_exit_s: float = param(0.0, "exit cleanly once no audio has arrived for this long after the "
                                    "first chunk (ends demos); 0 = never")
    info_topic: str = param("audio/info", "topic of the streams' AudioInfo (declared format)")
    control_topic: str = param("audio/control", "topic of operators' AudioControl commands (mute, unmute, "
                                                "volume: `voxsight audio`)")
    volume: float = param(1.0, "gain on the samples at start, 0 to 4 (AudioControl changes it)")


@dataclass
class _Stream:
    """What we know of one source's audio: its format, resampler and where it should continue.

    `audio_until_ns` is the stamp time the audio received so far reaches: the first chunk's stamp plus
    every chunk's duration. A chunk stamped later than that (beyond a little slack) means the source
    skipped time. Comparing with the audio *including* the chunk itself makes this hold whether a
    source stamps a chunk with the frame it starts at or, like `tone`, the frame it ends at.
    """

    sample_rate: int
    channels: int
    resampler: StreamResampler | None
    next_seq: int
    audio_until_ns: int


class AudioOutNode(Node):
    kind = "audio_out"
    Params = AudioOutParams

    def on_configure(self) -> None:
        p = self.params
        self.sink: AudioSink | None = None
        self._streams: dict[str, _Stream] = {}
        self._muted, self._volume, self._control_id = False, p.volume, 0  # the heartbeat reports them
        if not (1000 <= p.sample_rate <= 384000 and 1 <= p.channels <= 8):
            self.fail(f"unsupported output format: {p.sample_rate} Hz, {p.channels} channel(s)")
            return
        if not 0 <= p.volume <= MAX_VOLUME:
            self.fail(f"volume must be in [0, {MAX_VOLUME:g}], got {p.volume}")
            return
        if not 0 <= p.target_ms <= p.max_ms or p.max_ms <= 0:
            self.fail(f"need 0 <= target_ms <= max_ms and max_ms > 0 (got {p.target_ms}, {p.max_ms})")
            return
        sink = self._make_sink()
        try:
            sink.open(p.sample_rate, p.channels)
        except SinkError as exc:
            self.fail(str(exc))
            return
        self.sink = sink
        self.log.info("audio out: %s → %s (%d Hz, %d ch)", self.resolve(p.topic),
                      p.path if p.sink == "wav" else p.sink, p.sample_rate, p.channels)
        for key in ("chunks", "samples_out", "resampled_chunks", "format_mismatches", "dropped",
                    "stamp_gaps", "muted_chunks"):
            self.count(key, 0)
        self._infos: dict[str, AudioInfo] = {}
        self._last_chunk_mono: float | None = None
        self._paused = False
        self._audio_topic = self.resolve(p.topic)
        self.create_subscription(p.topic, AudioChunk, self._on_chunk, ORDERED)
        self.create_subscription(p.info_topic, AudioInfo, self._on_info, ORDERED)
        self.create_subscription(p.control_topic, AudioControl, self._on_control, EVENTS)
        self.create_timer(_IDLE_CHECK_S, self._check_idle)

    def _make_sink(self) -> AudioSink:
        p = self.params
        if p.sink == "wav":
            return WavSink(p.path)
        if p.sink == "null":
            return NullSink()
        return PyAudioSink(p.device or None, target_ms=p.target_ms, max_ms=p.max_ms)

    # ------------------------------------------------------------ input

    def _on_info(self, info: AudioInfo) -> None:
        if info.topic and info.topic != self._audio_topic:
            return  # the info topic may describe several streams
        self._infos[info.source] = info

    def _on_control(self, control: AudioControl) -> None:
        if control.target not in ("", self.full_name) or (control.id and control.id == self._control_id):
            return  # for another node, or a repeat of the last command
        self._control_id = control.id
        if control.command == "volume":
            self._volume = control.volume
        else:
            self._muted = control.command == "mute"
        self.log.info("%s from %s: %s, volume %g", control.command, control.source or "?",
                      "muted" if self._muted else "playing", self._volume)

    def _on_chunk(self, chunk: AudioChunk) -> None:
        self._last_chunk_mono = time.monotonic()
        self._paused = False
        self.count("chunks", 1)
        info = self._infos.get(chunk.source)
        if info is not None and (info.sample_rate, info.channels, info.format) != (
                chunk.sample_rate, chunk.channels, chunk.format):
            self.warn("format_mismatches", "chunk from %s is %s %d Hz %d ch but its AudioInfo says "
                      "%s %d Hz %d ch; playing it as the chunk says", chunk.source, chunk.format,
                      chunk.sample_rate, chunk.channels, info.format, info.sample_rate, info.channels)
        stream = self._stream_for(chunk)
        self._write(self._loudness(self._convert(chunk, stream)))

    def _stream_for(self, chunk: AudioChunk) -> _Stream:
        """The source's stream state, checked for lost chunks and stamp jumps, and advanced past `chunk`."""
        stream = self._streams.get(chunk.source)
        restarted = stream is not None and chunk.seq < stream.next_seq  # the publisher started over
        if stream is None or restarted or (stream.sample_rate, stream.channels) != (chunk.sample_rate,
                                                                                   chunk.channels):
            if stream is not None:
                self._finish(stream)
            resampler = None
            if chunk.sample_rate != self.params.sample_rate:
                resampler = StreamResampler(chunk.sample_rate, self.params.sample_rate, self.params.channels)
            stream = _Stream(chunk.sample_rate, chunk.channels, resampler, chunk.seq, chunk.stamp_ns)
            self._streams[chunk.source] = stream
        stream.audio_until_ns += chunk.duration_ns
        if chunk.seq > stream.next_seq:
            lost = chunk.seq - stream.next_seq
            self.count("dropped", lost)
            self.warn("audio_gaps", "lost %d audio chunk(s) from %s", lost, chunk.source)
        elif chunk.stamp_ns > stream.audio_until_ns + _STAMP_SLACK_NS:
            self.warn("stamp_gaps", "%s skipped %.0f ms of audio (its stamps ran ahead of the audio sent)",
                      chunk.source, (chunk.stamp_ns - stream.audio_until_ns) / 1e6)
        stream.audio_until_ns = max(stream.audio_until_ns, chunk.stamp_ns)  # a gap counts once
        stream.next_seq = chunk.seq + 1
        return stream

    def _convert(self, chunk: AudioChunk, stream: _Stream) -> np.ndarray:
        p = self.params
        if chunk.format == "S16LE" and chunk.channels == p.channels and stream.resampler is None:
            return chunk.samples
        frames = map_channels(to_float32(chunk.samples), p.channels)
        if stream.resampler is not None:
            frames = stream.resampler.process(frames)
            self.count("resampled_chunks", 1)
        return to_int16(frames)

    def _loudness(self, frames: np.ndarray) -> np.ndarray:
        if self._muted:
            self.count("muted_chunks")
            return np.zeros_like(frames)
        if self._volume == 1.0:
            return frames
        return to_int16(to_float32(frames) * self._volume)  # clipped, never wrapped

    # ------------------------------------------------------------ output

    def _write(self, frames: np.ndarray) -> None:
        if self.sink is None or not self.sink.is_open or frames.shape[0] == 0:
            return
        try:
            self.sink.write(frames)
        except (SinkError, OSError) as exc:
            self.sink.close()
            self.fail(f"audio sink failed: {exc}")
            return
        self.count("samples_out", frames.shape[0])

    def _finish(self, stream: _Stream) -> None:
        """The stream ended: write what its resampler still holds."""
        if stream.resampler is not None:
            self._write(to_int16(stream.resampler.flush()))

    def _check_idle(self) -> None:
        if self._last_chunk_mono is None or self.sink is None:
            return
        idle = time.monotonic() - self._last_chunk_mono
        if idle > _PAUSE_S and not self._paused:
            self._paused = True
            self.sink.drain()
        limit = self.params.idle_exit_s
        if 0 < limit < idle:
            self.request_stop(f"no audio for {limit:g} s")

    def diagnostic_values(self) -> dict[str, float]:
        values = super().diagnostic_values()
        # File sinks have no queue: report zeros so every audio_out heartbeat has the same figures.
        values.update({"underruns": 0, "overruns": 0, "jitter_depth_ms": 0.0})
        values.update({"muted": float(self._muted), "volume": self._volume, "control_id": self._control_id})
        if self.sink is not None:
            values.update(self.sink.stats())
        return values

    def on_shutdown(self) -> None:
        if self.sink is None:
            return
        for stream in self._streams.values():
            self._finish(stream)
        self.sink.close()
