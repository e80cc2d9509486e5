"""A jitter buffer between a bursty producer (chunks off the bus) and a real-time consumer (the sound
card's callback), as a preallocated ring of int16 frames.

Policy:
- Prebuffering: the reader plays silence until `target_ms` of audio is queued, so network jitter is
  absorbed instead of heard as gaps.
- Underrun: when the queue runs dry while playing, the rest of that read is silence, one underrun is
  counted for the episode, and the reader prebuffers to the target again before playing on.
- Overrun: a write that would queue more than `max_ms` drops the OLDEST frames (counted), so memory is
  bounded and latency cannot grow past `max_ms`.
- `drain()`: the producer has no more for now; the reader plays out what is queued even below the
  target. The next write ends the drain.

Concurrency: exactly one writer thread and one reader thread. Positions are absolute frame counts
(Python ints) and each is stored by one side only: the writer owns `_write_pos` and `_drop_pos` (the
oldest frame still valid), the reader owns `_read_pos`. Storing or loading one attribute is atomic
under the GIL, and the writer publishes `_drop_pos` before it overwrites a slot and `_write_pos` only
after the frames are in place, so the reader never sees frames that are not yet written. The one race
left is the writer overwriting (on overrun) slots the reader is copying at that moment (numpy copies
may run without the GIL); the reader detects it seqlock-style, by re-reading `_drop_pos` after the copy,
and copies again from the new oldest frame. The read path allocates nothing and takes no lock.
"""

from __future__ import annotations

import numpy as np

_READ_RETRIES = 4  # each retry needs the writer to have overrun again mid-copy: practically never


class JitterBuffer:
    def __init__(self, sample_rate: int, channels: int, target_ms: float = 100.0,
                 max_ms: float = 1000.0) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError("sample_rate and channels must be positive")
        if not 0 <= target_ms <= max_ms or max_ms <= 0:
            raise ValueError(f"need 0 <= target_ms <= max_ms and max_ms > 0, got {target_ms}, {max_ms}")
        self.sample_rate, self.channels = sample_rate, channels
        self.capacity = max(1, round(max_ms * sample_rate / 1000))
        self.target = min(self.capacity, round(target_ms * sample_rate / 1000))
        self._ring = np.zeros((self.capacity, channels), dtype=np.int16)
        # Writer-owned.
        self._write_pos = 0
        self._drop_pos = 0
        self._draining = False
        self.frames_written = 0
        self.overruns = 0
        self._discarded = 0  # frames of one oversized write that never entered the ring
        # Reader-owned.
        self._read_pos = 0
        self._playing = False
        self.frames_played = 0
        self.silence_frames = 0
        self.underruns = 0
        self._skipped = 0  # frames the writer dropped before we played them

    # ------------------------------------------------------------ writer side

    def write(self, frames: np.ndarray) -> None:
        """Queue int16 frames (n, channels); on overflow the oldest queued audio is dropped."""
        if frames.ndim != 2 or frames.shape[1] != self.channels or frames.dtype != np.int16:
            raise ValueError(f"expected int16 frames (n, {self.channels}), got {frames.dtype} {frames.shape}")
        n = frames.shape[0]
        if n == 0:
            return
        self.frames_written += n
        cap = self.capacity
        w = self._write_pos
        oldest = max(self._read_pos, self._drop_pos)
        excess = (w - oldest) + n - cap
        if excess > 0:
            self.overruns += 1
            if n > cap:  # the chunk alone overflows: its own head goes too
                frames = frames[n - cap:]
                self._discarded += n - cap
                n = cap
            self._drop_pos = w + n - cap  # published before any slot of those frames is overwritten
        start = w % cap
        first = min(n, cap - start)
        self._ring[start:start + first] = frames[:first]
        self._ring[:n - first] = frames[first:]
        self._draining = False
        self._write_pos = w + n  # published last: the frames are in place

    def drain(self) -> None:
        """Let the reader play out what is queued, even below the target (end of a stream or burst)."""
        self._draining = True

    # ------------------------------------------------------------ reader side

    def read_into(self, out: np.ndarray) -> None:
        """Fill `out` (n, channels) int16 in place: queued frames, or silence while prebuffering or dry."""
        n = out.shape[0]
        start = max(self._read_pos, self._drop_pos)
        w = self._write_pos
        if not self._playing:
            if w - start >= max(1, self.target) or (self._draining and w > start):
                self._playing = True
            else:
                out[:] = 0
                self.silence_frames += n
                return
        for _ in range(_READ_RETRIES):
            got = max(0, min(n, w - start))
            self._copy_out(out, start, got)
            moved = self._drop_pos
            if moved <= start:
                break
            # The writer overran into what we were copying: those frames are dropped; start from the oldest.
            start, w = moved, self._write_pos
        else:
            got = 0
        self._skipped += start - self._read_pos
        self._read_pos = start + got
        self.frames_played += got
        if got < n:
            out[got:] = 0
            self.silence_frames += n - got
            if not self._draining:
                self.underruns += 1
            self._playing = False

    def read(self, n: int) -> np.ndarray:
        """Convenience for tests and tools: `read_into` a new array."""
        out = np.empty((n, self.channels), dtype=np.int16)
        self.read_into(out)
        return out

    def _copy_out(self, out: np.ndarray, start: int, count: int) -> None:
        cap = self.capacity
        s = start % cap
        first = min(count, cap - s)
        out[:first] = self._ring[s:s + first]
        out[first:count] = self._ring[:count - first]

    # ------------------------------------------------------------ either side

    @property
    def dropped_frames(self) -> int:
        """Frames lost to overruns. Counted where they are known for sure (the reader skipping them,
        or a write too big to fit), so once drained, frames_played + dropped_frames == frames_written."""
        return self._skipped + self._discarded

    def depth_frames(self) -> int:
        return max(0, self._write_pos - max(self._read_pos, self._drop_pos))

    def depth_ms(self) -> float:
        return self.depth_frames() * 1000.0 / self.sample_rate

    def stats(self) -> dict[str, float]:
        return {
            "underruns": self.underruns, "overruns": self.overruns, "dropped_frames": self.dropped_frames,
            "frames_written": self.frames_written, "frames_played": self.frames_played,
            "silence_frames": self.silence_frames, "jitter_depth_ms": self.depth_ms(),
        }
