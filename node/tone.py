"""`tone`: the passthrough "synthesizer" that proves a graph end to end without a model.

For each camera frame it publishes the audio for the time since the previous frame: a sine whose
pitch follows the frame's mean brightness (base_hz + span_hz · mean/255), phase-continuous across
chunks, stamped with the frame's acquisition stamp so `voxsight topic delay` shows true end-to-end
latency. The chunk length comes from the frames' stamps (a fractional-sample carry keeps the total
exact); the first chunk is one 25 fps frame long and a stall is capped so it does not come out as a
burst. AudioInfo is latched: a subscriber that joins late gets it at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from node.params import param
from node.runtime import Node
from streams.audio import to_int16
from streams.messages import AudioChunk, AudioInfo, Image
from streams.pubsub import LATCHED, ORDERED, SENSOR

FIRST_CHUNK_NS = 40_000_000  # one frame at 25 fps
MAX_CHUNK_NS = 500_000_000
_NS = 1_000_000_000


@dataclass
class ToneParams:
    sample_rate: int = param(16000, "output sample rate in Hz")
    amplitude: float = param(0.3, "sine amplitude as a fraction of full scale (0..1)")
    base_hz: float = param(220.0, "pitch of a black frame, Hz")
    span_hz: float = param(660.0, "pitch added at full brightness: base_hz + span_hz * mean/255")


class ToneNode(Node):
    kind = "tone"
    Params = ToneParams

    def on_configure(self) -> None:
        p = self.params
        if not 1000 <= p.sample_rate <= 384000:
            self.fail(f"sample_rate {p.sample_rate} out of range (1000..384000)")
            return
        if not 0.0 <= p.amplitude <= 1.0:
            self.fail(f"amplitude {p.amplitude} out of range (0..1)")
            return
        top = max(p.base_hz, p.base_hz + p.span_hz)
        if min(p.base_hz, p.base_hz + p.span_hz) < 0 or top >= p.sample_rate / 2:
            self.fail(f"pitch range {p.base_hz}..{p.base_hz + p.span_hz} Hz must lie in "
                      f"0..{p.sample_rate / 2:g} Hz")
            return
        self.count("capped_gaps", 0)
        self._prev_stamp: int | None = None
        self._carry = 0  # sample-time remainder, in 1e-9 samples, so chunk lengths add up exactly
        self._phase = 0.0
        self._audio = self.create_publisher("audio/speech", ORDERED)
        self._info = self.create_publisher("audio/info", LATCHED)
        self.create_subscription("camera/image", Image, self._on_frame, SENSOR)

    def on_activate(self) -> None:
        rate = self.params.sample_rate
        self._info.publish(AudioInfo(sample_rate=rate, channels=1, format="S16LE",
                                     chunk_samples=rate * FIRST_CHUNK_NS // _NS, topic=self._audio.topic))

    def _chunk_ns(self, stamp: int) -> int | None:
        """How much time this frame's chunk covers; None for a repeated stamp (nothing new to voice)."""
        prev = self._prev_stamp
        if prev is not None and stamp == prev:
            self.warn("repeated_frames", "frame stamp %d repeated; no audio for it", stamp)
            return None
        self._prev_stamp = stamp
        if prev is None:
            return FIRST_CHUNK_NS
        if stamp < prev:
            self.warn("stamp_backwards", "frame stamps went back %.0f ms (source restarted?)",
                      (prev - stamp) / 1e6)
            return FIRST_CHUNK_NS
        if stamp - prev > MAX_CHUNK_NS:
            self.count("capped_gaps", 1)
            return MAX_CHUNK_NS
        return stamp - prev

    def _on_frame(self, image: Image) -> None:
        span = self._chunk_ns(image.stamp_ns)
        if span is None:
            return
        p = self.params
        n, self._carry = divmod(span * p.sample_rate + self._carry, _NS)
        if n == 0:
            return
        hz = p.base_hz + p.span_hz * float(image.pixels.mean()) / 255.0
        step = 2.0 * math.pi * hz / p.sample_rate
        wave = p.amplitude * np.sin(self._phase + step * np.arange(n))
        self._phase = (self._phase + step * n) % (2.0 * math.pi)
        chunk = AudioChunk(samples=to_int16(wave.reshape(-1, 1)), sample_rate=p.sample_rate, channels=1,
                           format="S16LE", stamp_ns=image.stamp_ns, mono_ns=image.mono_ns,
                           frame_id=image.frame_id)
        self._audio.publish(chunk)
