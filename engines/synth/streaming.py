"""Streaming lip-to-speech (ARCHITECTURE §6): camera frames in one at a time, speech out in hops of
`hop_frames` video frames (200 ms), on the offline Synthesizer's own steps.

Per target track (a "voice"), every hop runs one window:

    frames     each frame's front-end features are computed once (batched per window) and cached
    reader     the temporal stack over the window that holds each new output's receptive field, the GRU
               state carried from the previous window: every frame passes the GRU once, and the features
               equal the offline (whole-clip) ones
    phones     with a phone aligner and mel prior loaded (prior_mode speak or refine): the aligner's most
               likely phone at each 10-ms step of [context | hop | look-ahead], its own look-ahead cut at
               the window's end; the prior speaks them in the face's voice. A stream has no whole
               utterance to read a text from, and sphinx hears these phones far better than MelGen's
               speech from the lips (notes/history.md, session 20)
    text       the window's log-probs decoded (the params' decoder; greedy for "grid", whose grammar needs
               a whole sentence) steer ASR guidance for that window
    mel        the prior's mel over the hop and look-ahead (speak), or MelGen over [context | hop |
               look-ahead] from noise (off) or from the prior's mel at step prior_t (refine): the
               context's mel, committed by earlier windows, is held fixed (in-painting); either way the
               hop's mel is committed, the look-ahead's is made again by the next window
    waveform   the vocoder over [context tail | hop | look-ahead]; the samples that run past the hop into
               the look-ahead are crossfaded with the next window's first samples

A hop's chunk is out once the frames its look-ahead needs have arrived: the window's look-ahead plus the
front end's (`algorithmic_latency_frames` = hop + both). Hops keep one grid from the first frame pushed,
whatever the input does, so timing stays continuous: a frame without a target face (track_id -1, or a bad
frame: missing, misshapen or non-finite arrays, counted in `bad_frames`) is silence, never speech (held
back `preroll_frames` while no voice is on: a face that becomes the target right after them voices them too
when its frame brings its own arrays for them, `FrameInput.earlier`, since a tracker names a target only
once its track is confirmed, and the person may already be talking); a hop
whose mouth is still (lip opening range below `still_threshold`) is silence too and costs no mel or
vocoder work. Within a track, faceless frames hold the last seen frame's inputs, as offline Features do
for unseen frames. A new track_id ends the old voice (its pending frames are finished as at the end of a
clip) and starts a fresh one: new lip-reader state, mel context and identity. `flush` finishes every
pending frame the same way: its last chunk holds the frames left, so it may be shorter than a hop (and
is empty, only closing the utterance's text, when no frame was left: only without any look-ahead).

An utterance is a run of speech hops with no pause of `end_pause_s` in it (at most `max_utterance_s`: a
longer run is cut at a hop's end into several). The chunk where it ends (such a pause, read up to its first
hop; a track change, flush, its length) carries
`final_text` with the utterance read again whole (greedily past `final_decode_max_s`): by the text reader
when the models have one (a reader of whole clips: the offline text's; on 108 unseen GRID clips the final
transcripts' WER went from 31.2 to 10.8 %, notes/history.md, session 36), decoded by the params' decoder
with GRID sentences re-ranked by the aligner's phones of the whole utterance; `confidence` says how surely
the reader read that text (engines.text.ctc.text_confidence). While it runs, the utterance so far is read
the same way every `partial_text_s` for its partial text, except that a GRID sentence is not forced to
completion (it may not all have been said yet) and its start is kept down to a lower confidence line
(engines.synth.engine.GRID_START_LINE); 0: a chunk's `text` is the streaming reader's greedy reading, every
hop. At a pause's first hop the partial text is the final one the pause will give if it lasts (one reading
serves both). Such a reading takes tens of ms, hundreds for a long utterance; a live caller
can have the chunk first and read the text after sending its audio, or in a thread of its own
(`push(frame, texts=False)`, then `read_text(chunk)`). The sampler's noise is
seeded per window from params.seed and the window's index: the same input gives the same speech.
`warm_up()` pays the first calls' one-off costs before a live stream starts.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engines.audio.mel import HOP, MELS_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from engines.params import param
from engines.synth.engine import (
    GRAMMAR_DECODERS,
    OPENING,
    SILENCE,
    Features,
    Reading,
    Synthesizer,
    opening_range,
)
from engines.text.charset import decode
from engines.text.ctc import CtcForward, greedy_decode, text_confidence

PARTIAL_TEXT_GROWTH = 0.25  # the least share an utterance grows by before its partial text is read again
MAX_LOOKAHEAD_FRAMES = 5  # ARCHITECTURE §6: at most ~200 ms look-ahead
GRIFFIN_LIM_CONTEXT = 8  # mel frames of left context for Griffin-Lim (its phase estimate is global)


@dataclass(frozen=True)
class StreamParams:
    hop_frames: int = param(5, "video frames per speech chunk (5 = 200 ms at 25 fps)")
    context_frames: int = param(20, "frames of committed mel each window starts with, held fixed")
    lookahead_frames: int = param(3, "frames past the hop each window's mel is made from and for, remade "
                                     f"by the next window (at most {MAX_LOOKAHEAD_FRAMES}): the phone "
                                     "aligner's look-ahead (of its 6) when the prior speaks (3: 11.7 % "
                                     "sphinx-GRID, 48.3 % whisper WER on 108 test clips; 5, 80 ms later: "
                                     "11.4 / 47.4 %), else MelGen's (2: "
                                     "21.9 %; 3: 27.3 %; 1 lost 6 points against 2; NOTES.md)")
    crossfade_ms: float = param(10.0, "waveform crossfade between consecutive chunks; it runs into the "
                                      "look-ahead, so none without look-ahead")
    identity_refresh_s: float = param(5.0, "refresh the identity embedding this often (running mean of "
                                           "embeddings, renormalised)")
    preroll_frames: int = param(4, "frames without a target face held back (their silence waits as long) "
                                   "so that a face named the target right after them is voiced from its "
                                   "first frames (FrameInput.earlier): a tracker names a target only once "
                                   "its track is confirmed, and someone may already be talking")
    end_pause_s: float = param(0.8, "an utterance ends once its speech has paused this long (its text "
                                    "final): hops whose mouth is still or that see no face, the first one's "
                                    "still test spanning the hop, the one before and the look-ahead (13 "
                                    "frames, 0.52 s), each further one a hop more; 0.52 or less: at the "
                                    "first hop without speech, which cut 14 of 1,092 train GRID sentences "
                                    "in two, mostly at a still mouth around the letter (0.6: 2; 0.8: "
                                    "none, as SynthParams.pause_s offline), for a final text 400 ms later "
                                    "(notes/history.md, session 40)")
    max_utterance_s: float = param(30.0, "an utterance this long ends at the end of a hop (its final text "
                                         "out) and the next speech starts another, so a face that talks "
                                         "without pause for hours costs no more memory or compute per hop")
    final_decode_max_s: float = param(10.0, "an ended utterance up to this long is read again whole (by the "
                                            "text reader, if loaded) with the params' decoder, a longer one "
                                            "greedily (a beam over it would stall the stream: ~1 s per 500 "
                                            "frames here)")
    partial_text_s: float = param(0.4, "the utterance so far is read again as its final text is, for its "
                                       "partial texts, each time it has grown by this much or by a quarter "
                                       "of its length, whichever is longer (a chunk between two readings has "
                                       "no text); 0 = every hop's greedy reading of the streaming reader. On "
                                       "36 GRID test clips, WER of the partial text shown against the words "
                                       "said so far: 0: 48.4 %, 0.4: 29.5 %, 0.2: 29.1 % (notes/history.md, "
                                       "sessions 37 and 38)")

    def __post_init__(self) -> None:
        if self.hop_frames < 1 or self.context_frames < 0 or self.preroll_frames < 0:
            raise ValueError(f"need hop_frames >= 1, context_frames >= 0 and preroll_frames >= 0, got "
                             f"{self.hop_frames}, {self.context_frames} and {self.preroll_frames}")
        if not 0 <= self.lookahead_frames <= MAX_LOOKAHEAD_FRAMES:
            raise ValueError(f"lookahead_frames must be in 0..{MAX_LOOKAHEAD_FRAMES}, got "
                             f"{self.lookahead_frames}")
        if not (self.crossfade_ms >= 0 and self.identity_refresh_s > 0 and self.final_decode_max_s >= 0
                and self.max_utterance_s > 0 and self.partial_text_s >= 0 and self.end_pause_s >= 0):
            raise ValueError(f"need crossfade_ms, final_decode_max_s, partial_text_s, end_pause_s >= 0 and "
                             f"identity_refresh_s, max_utterance_s > 0, got {self.crossfade_ms}, "
                             f"{self.final_decode_max_s}, {self.partial_text_s}, {self.end_pause_s}, "
                             f"{self.identity_refresh_s}, {self.max_utterance_s}")

    @property
    def crossfade_samples(self) -> int:
        limit = SAMPLES_PER_FRAME * min(self.lookahead_frames, self.hop_frames)
        return min(round(self.crossfade_ms * SAMPLE_RATE / 1000), limit)


@dataclass
class FrameInput:
    stamp_ns: int  # acquisition stamp of the source camera frame
    track_id: int  # -1: no target face in this frame
    mouth_roi: np.ndarray | None  # (88, 88) uint8
    lip_geometry: np.ndarray | None  # (82,) float32
    face_crop: np.ndarray | None  # (112, 112, 3) uint8 RGB
    # The same face in the frames just before this one (oldest first), before it was the target: a new
    # voice starts with those of them the stream still holds (StreamParams.preroll_frames)
    earlier: tuple[FrameInput, ...] = ()


@dataclass
class SpeechChunk:
    wav: np.ndarray  # float32 16 kHz mono, hop_frames * 640 samples (flush's last chunk: the frames left)
    stamp_ns: int  # stamp of the first source frame this audio voices
    silent: bool  # no target / mouth still: wav is zeros
    reason: str  # "speech" | "no_face" | "mouth_still" | "utterance_end" (no frames: only closes the text)
    text: str  # lip-read text of the current utterance so far ("" between its readings: partial_text_s)
    final_text: bool  # True when the utterance ended (silence after speech / track change / flush)
    confidence: float  # how surely the reader read `text` (engines.text.ctc.text_confidence; 0 without text)
    doubt: str  # what to tell a listener when `confidence` is low for the decoder that read it (else "")
    seconds: dict[str, float]  # compute per stage since the previous chunk
    compute_s: float  # total compute since the previous chunk (RTF = compute_s / (hop_frames / 25))
    # the utterance's text (final or partial), still to be read (push or flush with texts=False):
    # StreamingSynthesizer.read_text reads it into text, confidence and doubt
    pending: Callable[[], tuple[str, float, str]] | None = field(default=None, repr=False)


@dataclass
class _Piece:
    """Committed audio of consecutive frames inside one hop."""
    start: int  # stream frame index
    wav: np.ndarray
    reasons: list[str]  # per frame
    text: str = ""
    final: bool = False
    confidence: float = 0.0
    doubt: str = ""
    reading: Callable[[], tuple[str, float, str]] | None = None  # reads `text` (final or partial)

    def ends_utterance(self, reading: Callable[[], tuple[str, float, str]]) -> None:
        """The utterance ends with this piece: its text is the final one `reading` reads, not a partial."""
        self.final, self.reading = True, reading
        self.text, self.confidence, self.doubt = "", 0.0, ""


class _Timeline:
    """Per-frame values (a tensor along `axis`, `per_frame` entries a frame) from frame `start` on; the
    oldest are dropped as the stream moves on."""

    def __init__(self, start: int, axis: int, per_frame: int = 1) -> None:
        self.start, self.axis, self.per_frame = start, axis, per_frame
        self.data: Tensor | None = None

    @property
    def end(self) -> int:
        return self.start + (0 if self.data is None else self.data.shape[self.axis] // self.per_frame)

    def append(self, values: Tensor) -> None:
        self.data = values if self.data is None else torch.cat((self.data, values), self.axis)

    def get(self, a: int, b: int) -> Tensor:
        if not self.start <= a <= b <= self.end:
            raise IndexError(f"frames {a}..{b} outside the kept {self.start}..{self.end}")
        n = self.per_frame
        return self.data.narrow(self.axis, (a - self.start) * n, (b - a) * n)

    def drop_before(self, frame: int) -> None:
        frame = min(max(frame, self.start), self.end)
        if self.data is not None and frame > self.start:
            self.data = self.get(frame, self.end).clone()
        self.start = frame


class _Voice:
    """The stream of one target track from stream frame `start` on (module docstring)."""

    def __init__(self, synth: Synthesizer, params: StreamParams, track_id: int, start: int,
                 spend: _Spending) -> None:
        self.synth, self.p, self.track_id, self.start, self.spend = synth, params, track_id, start, spend
        self.past, self.future = synth.receptive_field()
        self.aligner_past = synth.models.aligner.receptive_field()[0] if synth.prior_on else 0
        # video frames of the past the prior's mel of a new step depends on
        prior_steps = synth.models.prior.receptive_field()[0] if synth.prior_on else 0
        self.prior_past = math.ceil(prior_steps / MELS_PER_FRAME)
        vocoder = synth.models.vocoder
        self.vocoder_past = vocoder.receptive_field()[0] if vocoder is not None else GRIFFIN_LIM_CONTEXT
        self.received = self.read_upto = self.committed = start
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # inputs not yet through the front end
        # the inputs before them that the front end's normalisation still looks back over
        self.kept: deque[tuple[np.ndarray, np.ndarray]] = deque(
            maxlen=synth.models.lipreader.config.frontend.input_history)
        self.last: tuple[np.ndarray, np.ndarray] | None = None
        self.seen, self.opening = _Timeline(start, 0), _Timeline(start, 0)
        self.frames, self.cond, self.log_probs = _Timeline(start, 1), _Timeline(start, 1), _Timeline(start, 0)
        self.state: Tensor | None = None
        self.crop: np.ndarray | None = None
        self.new_crop, self.frames_since_identity = False, 0
        self.identity_sum: Tensor | None = None
        self.tail: np.ndarray | None = None  # the previous window's samples past its hop, to crossfade
        self.utterance: int | None = None  # first frame of the utterance in progress
        self.paused_at: int | None = None  # first frame of its hops without speech since the last speech
        self.pause_reading: Callable[[], tuple[str, float, str]] | None = None  # read up to paused_at
        self.forward = CtcForward()  # the partial text's confidence, carried from hop to hop of the utterance
        self.reread_every = round(params.partial_text_s * VIDEO_FPS)
        self.next_reread = 0  # the utterance's length (frames) at which its partial text is read again
        # the inputs from frame inputs_start on (the utterance's, once one runs), for the text reader
        self.reads_text = synth.models.text_reader is not None
        self.inputs: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.inputs_start = start
        self.mel = _Timeline(start, 1, MELS_PER_FRAME)  # committed mel (80, 4T), silence where silent

    # ------------------------------------------------------------ input

    def add(self, frame: FrameInput | None) -> None:
        """The next frame: a checked face of this track, or None (no face: the last seen inputs held)."""
        if frame is not None:
            self.last = (frame.mouth_roi.copy(), frame.lip_geometry.astype(np.float32))
            self.crop, self.new_crop = frame.face_crop.copy(), True
        assert self.last is not None, "a voice starts with a face"
        self.pending.append(self.last)
        if self.reads_text:
            self.inputs.append(self.last)
        self.seen.append(torch.tensor([frame is not None]))
        self.opening.append(torch.tensor([float(self.last[1][OPENING])]))
        self.frames_since_identity += 1
        self.received += 1

    # ------------------------------------------------------------ output

    def pieces(self, finish: bool) -> list[_Piece]:
        """Every hop whose look-ahead has arrived (`finish`: every frame, as at the end of a clip)."""
        p, out = self.p, []
        while self.committed < self.received:
            s = self.committed
            e = (s // p.hop_frames + 1) * p.hop_frames
            if finish:
                e = min(e, self.received)
            elif self.received < e + p.lookahead_frames + self.future:
                break
            self._read(finish)
            out.append(self._commit(s, e, min(e + p.lookahead_frames, self.read_upto)))
        if finish and self.utterance is not None:  # the voice ends: so does its utterance
            if not out:
                out.append(_Piece(self.received, np.zeros(0, np.float32), []))
            out[-1].ends_utterance(self._reading(self.received) if self.pause_reading is None
                                   else self.pause_reading)
            self.utterance = self.paused_at = self.pause_reading = None
        return out

    def _read(self, finish: bool) -> None:
        """The lip reader over every frame whose look-ahead has arrived."""
        end = self.received if finish else self.received - self.future
        if end <= self.read_upto:
            return
        if self.pending:
            inputs = [*self.kept, *self.pending]
            rois, geometry = (np.stack(a) for a in zip(*inputs, strict=True))
            self.frames.append(self.synth.frame_features(rois, geometry, context=len(self.kept)))
            self.kept.extend(self.pending)
            self.pending.clear()
        first = max(self.start, self.read_upto - self.past)
        window = self.frames.get(first, min(end + self.future, self.received))
        reading = self.synth.read(window, self.state, self.read_upto - first, end - self.read_upto)
        self.state = reading.state
        self.cond.append(reading.features)
        self.log_probs.append(reading.log_probs)
        self.read_upto = end
        self.frames.drop_before(end - self.past)

    def _commit(self, s: int, e: int, lookahead_end: int) -> _Piece:
        p = self.p
        seen = self.seen.get(s, e)
        opening = self.opening.get(max(self.start, s - p.hop_frames), lookahead_end)
        still = opening_range(opening) < self.synth.params.still_threshold
        if still or not bool(seen.any()):
            wav, mel = np.zeros((e - s) * SAMPLES_PER_FRAME, np.float32), None
            self.tail = None
        else:
            mel, wav = self._speak(s, e, lookahead_end)
            wav[np.repeat(~seen.numpy(), SAMPLES_PER_FRAME)] = 0.0  # never speech where no face was seen
        self._keep_mel(s, e, mel)
        reasons = ["no_face" if not v else "mouth_still" if still else "speech" for v in seen.tolist()]
        piece = _Piece(s, wav, reasons)
        speech = "speech" in reasons
        if speech and self.utterance is None:
            self.utterance, self.forward, self.next_reread = s, CtcForward(), self.reread_every
        if speech or self.utterance is None:
            self.paused_at = self.pause_reading = None
        elif self.paused_at is None:
            # the utterance read as if it ended here: shown at once, and its final text should the pause last
            # (the same frames: read once)
            self.paused_at, self.pause_reading = s, functools.cache(self._reading(s))
        # a pause ends an utterance, and so does its length: what is kept of it, and read again every hop,
        # must not grow without end
        paused = (self.paused_at is not None
                  and e - self.paused_at + p.hop_frames + p.lookahead_frames >= p.end_pause_s * VIDEO_FPS)
        too_long = self.utterance is not None and e - self.utterance >= p.max_utterance_s * VIDEO_FPS
        if self.utterance is not None and (paused or too_long):
            piece.ends_utterance(self._reading(e) if self.pause_reading is None else self.pause_reading)
            self.utterance = self.paused_at = self.pause_reading = None
        elif self.utterance is not None and self.reread_every:
            length = e - self.utterance
            # all it has read, the look-ahead too; at a pause's first hop, the text it will end with if the
            # pause lasts, so that it is shown while end_pause_s tells a sentence's end from a breath in it
            if self.paused_at == s or length >= self.next_reread:
                piece.reading = self.pause_reading if self.paused_at == s else \
                    self._reading(self.read_upto, ended=False)
                # a reading's cost grows with the utterance's length, so the pause after it grows too: the
                # readings of a long utterance take a bounded share of a core
                self.next_reread = length + max(self.reread_every, round(length * PARTIAL_TEXT_GROWTH))
        elif self.utterance is not None:
            log_probs = self.log_probs.get(self.utterance, self.read_upto)
            piece.text = self._greedy(log_probs)
            piece.confidence = text_confidence(log_probs, piece.text, self.forward)
            piece.doubt = self.synth.doubt(piece.confidence, "greedy")
        self.committed = e
        self.log_probs.drop_before(min(e - p.context_frames, self.utterance if self.utterance is not None
                                       else e))
        # an utterance's features stay for its final text (the aligner's phones re-rank it)
        kept_from = self.utterance if self.utterance is not None else e
        self.cond.drop_before(min(e - p.context_frames - self.aligner_past, kept_from))
        if self.reads_text:
            for _ in range(kept_from - self.inputs_start):
                self.inputs.popleft()
            self.inputs_start = kept_from
        self.seen.drop_before(e)
        self.opening.drop_before(e - p.hop_frames)
        return piece

    def _speak(self, s: int, e: int, lookahead_end: int) -> tuple[Tensor, np.ndarray]:
        """The window's mel (80, 4 (lookahead_end − first)), its past as committed, and the hop's samples,
        crossfaded."""
        p, synth, m = self.p, self.synth, MELS_PER_FRAME
        first = max(self.start, s - p.context_frames)
        identity = self._identity()
        if synth.prior_on and synth.params.prior_mode == "speak":
            # the past as it was spoken; the prior runs over only as much of it as its receptive field holds
            lo = max(first, s - self.prior_past)
            mel = synth.speak(self._phones(lo, lookahead_end), identity)[0, :, m * (s - lo):]
            if first < s:
                mel = torch.cat((self.mel.get(first, s), mel), dim=1)
        else:
            prior = synth.speak(self._phones(first, lookahead_end), identity) if synth.prior_on else None
            known = None
            if first < s:
                frames = m * (lookahead_end - first)
                mask = torch.zeros(1, 1, frames, dtype=torch.bool, device=synth.device)
                mask[..., :m * (s - first)] = True
                values = torch.full((1, synth.models.melgen.config.n_mels, frames), SILENCE,
                                    device=synth.device)
                values[..., :m * (s - first)] = self.mel.get(first, s)
                known = (mask, values)
            seed = window_seed(synth.params.seed, s // p.hop_frames)
            generator = torch.Generator(synth.device).manual_seed(seed)
            cond = synth.condition(self.cond.get(first, lookahead_end), identity)
            mel = synth.generate(cond, self._window_text(first, lookahead_end), known=known,
                                 generator=generator, start=prior)[0]
        tail = min(self.vocoder_past, m * (s - first))
        wav = synth.vocode(mel[None, :, m * (s - first) - tail:])
        body = wav[tail * HOP:tail * HOP + (e - s) * SAMPLES_PER_FRAME].copy()
        over = wav[tail * HOP + len(body):tail * HOP + len(body) + p.crossfade_samples]
        previous = self.tail if self.tail is not None else np.zeros(p.crossfade_samples, np.float32)
        n = min(len(previous), len(body))
        fade_in = raised_cosine(n)
        body[:n] = previous[:n] * (1.0 - fade_in) + body[:n] * fade_in
        self.tail = over.copy() if len(over) else None
        return mel[:, m * (s - first):m * (e - first)], body

    def _phones(self, a: int, b: int) -> np.ndarray:
        """Each step's most likely phone (4 (b − a),) over frames [a, b), read with the aligner's look-ahead
        cut at b (its convolutions see zeros past it, as at a clip's end)."""
        lo = max(self.start, a - self.aligner_past)
        return self.synth.step_phones(self.cond.get(lo, b)[0])[MELS_PER_FRAME * (a - lo):]

    def _keep_mel(self, s: int, e: int, mel: Tensor | None) -> None:
        if mel is None:
            mel = torch.full((self.synth.models.melgen.config.n_mels, MELS_PER_FRAME * (e - s)), SILENCE,
                             device=self.synth.device)
        self.mel.append(mel)
        self.mel.drop_before(e - self.p.context_frames)

    def _window_text(self, a: int, b: int) -> str:
        log_probs = self.log_probs.get(a, b)
        if self.synth.params.decode in GRAMMAR_DECODERS:  # a grammar takes whole sentences: a window has part
            return self._greedy(log_probs)
        return self.synth.decode(log_probs).text

    def _reading(self, end: int, ended: bool = True) -> Callable[[], tuple[str, float, str]]:
        """What reads the utterance's text up to frame `end`, its confidence and the doubt about it, from what
        the voice holds of it now (so it may run later, in another thread, after the voice has moved on).
        Up to final_decode_max_s it is read again whole: by the text reader on the utterance's inputs when
        one is loaded, and decoded with GRID sentences re-ranked by the aligner's phones of the utterance
        (in PyTorch, whatever the backend); longer, greedily. Not `ended` (a partial text): decoded as the
        start of an utterance (Synthesizer.decode's `whole`)."""
        end, synth = min(end, self.read_upto), self.synth
        log_probs = self.log_probs.get(self.utterance, end)
        if len(log_probs) > self.p.final_decode_max_s * VIDEO_FPS:
            def greedy() -> tuple[str, float, str]:
                text = decode(greedy_decode(log_probs))
                confidence = text_confidence(log_probs, text)
                return text, confidence, synth.doubt(confidence, "greedy")
            return greedy
        reading = Reading(log_probs, self.cond.get(self.utterance, end), self.state)
        said = None
        if self.reads_text:
            first = self.utterance - self.inputs_start
            said = list(itertools.islice(self.inputs, first, first + end - self.utterance))
        crop = self.crop

        def reread() -> tuple[str, float, str]:
            phones = synth.phone_posteriors(reading, compiled=False) if synth.reranks else None
            text_reading = reading
            if said is not None:
                rois, geometry = (np.stack(a) for a in zip(*said, strict=True))
                text_reading = synth.text_reading(Features(rois, geometry, crop), reading)
            decoded = synth.decode(text_reading.log_probs, phones, whole=ended)
            return decoded.text, decoded.confidence, synth.doubt(decoded.confidence, decoded.decoder)
        return reread

    def _greedy(self, log_probs: Tensor) -> str:
        with self.spend.timed("decode"):
            return decode(greedy_decode(log_probs))

    def _identity(self) -> Tensor:
        """The track's identity: the running mean of its face crops' embeddings, renormalised, refreshed
        every identity_refresh_s while new crops come."""
        due = self.frames_since_identity >= self.p.identity_refresh_s * VIDEO_FPS and self.new_crop
        if self.identity_sum is None or due:
            embedding = self.synth.identity(self.crop)
            self.identity_sum = embedding if self.identity_sum is None else self.identity_sum + embedding
            self.frames_since_identity, self.new_crop = 0, False
        return F.normalize(self.identity_sum, dim=1)


class _Spending:
    """Compute spent since the last chunk: the Synthesizer's stages plus the stream's own."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start

    def take(self) -> dict[str, float]:
        seconds, self.seconds = dict(self.seconds), Counter()
        return seconds


class StreamingSynthesizer:
    """Frames in (`push`), speech chunks out (module docstring). Not thread-safe: one caller at a time
    (`read_text` excepted)."""

    def __init__(self, synthesizer: Synthesizer, params: StreamParams = StreamParams()) -> None:
        self.synthesizer, self.params = synthesizer, params
        c = synthesizer.models.lipreader.config.frontend
        if not c.streams:
            raise ValueError(f"this lip reader normalises whole clips (normalise {c.normalise!r}) and cannot "
                             "stream; it can read the offline text (SynthModels.text_reader)")
        if synthesizer.prior_on and synthesizer.params.prior_speaks == "text":
            raise ValueError("a stream's prior speaks phones (prior_speaks phones or auto): the text it "
                             "would speak needs the whole utterance")
        if synthesizer.prior_on and synthesizer.models.aligner_reads != "lipreader":
            raise ValueError("this phone aligner reads the text reader's features, which need whole clips: "
                             "a stream's prior needs an aligner trained on the streaming lip reader")
        self.shapes = {"mouth_roi": (c.roi_size, c.roi_size), "lip_geometry": (c.geometry_dim,),
                       "face_crop": (synthesizer.models.identity.config.image_size,) * 2 + (3,)}
        self.bad_frame_reasons: Counter[str] = Counter()
        self.prerolled_frames = 0  # frames voiced from before their face was the target, since start
        self.reset()

    @property
    def algorithmic_latency_frames(self) -> int:
        """Frames from a hop's first frame to the last one its chunk needs: the hop and the look-ahead of
        the window and of the front end."""
        p = self.params
        return p.hop_frames + p.lookahead_frames + self.synthesizer.receptive_field()[1]

    @property
    def bad_frames(self) -> int:
        """Frames refused (missing, misshapen or non-finite arrays) and treated as no face, since start."""
        return sum(self.bad_frame_reasons.values())

    def reset(self) -> None:
        """Forget everything pending: the next frame starts a new stream (and hop grid)."""
        self._voice: _Voice | None = None
        self._held: deque[tuple[int, int]] = deque()  # (index, stamp) of the newest faceless frames, no voice
        self._received = self._emitted = 0
        self._stamps: deque[int] = deque()
        self._last_stamp = 0
        self._pieces: deque[_Piece] = deque()
        self._spend = _Spending()
        self._wall = 0.0

    def warm_up(self) -> None:
        """Stream a synthetic talking face until the windows reach their steady size, then reset: the first
        calls of each shape are slow (allocations, kernel choice), and a live stream should not pay them."""
        mouth, lips_, face = (np.zeros(shape, np.float32 if name == "lip_geometry" else np.uint8)
                              for name, shape in self.shapes.items())
        frames = self.params.context_frames + self.algorithmic_latency_frames + self.params.hop_frames
        swing = 0.05 + self.synthesizer.params.still_threshold  # a mouth that moves enough to be voiced
        for k in range(frames):
            geometry = lips_.copy()
            geometry[OPENING] = swing * (1.0 + math.sin(k))
            self.push(FrameInput(k, 0, mouth, geometry, face))
        self.flush()

    def push(self, frame: FrameInput, texts: bool = True) -> list[SpeechChunk]:
        """One camera frame; the chunks of the hops it completes (0 or more). With `texts` False, a chunk
        whose text is read again (the utterance's end, or a partial reading: tens of ms, hundreds for a long
        utterance) comes before that reading: `read_text` does it, so a live caller can send the chunk's
        audio first."""
        with self._compute():
            face = self._checked(frame)
            if face is not None and self._voice is not None and face.track_id != self._voice.track_id:
                self._pieces.extend(self._voice.pieces(finish=True))
                self._voice = None
            if face is not None and self._voice is None:
                earlier = self._preroll(face)
                self._release(len(self._held) - len(earlier))
                self._held.clear()
                self._voice = _Voice(self.synthesizer, self.params, face.track_id,
                                     self._received - len(earlier), self._spend)
                for before in earlier:
                    self._voice.add(before)
                self.prerolled_frames += len(earlier)
            self._stamps.append(int(frame.stamp_ns))
            self._last_stamp = int(frame.stamp_ns)
            if self._voice is None:
                self._held.append((self._received, int(frame.stamp_ns)))
                self._release(len(self._held) - self.params.preroll_frames)
            else:
                self._voice.add(face)
                self._pieces.extend(self._voice.pieces(finish=False))
            self._received += 1
        return self._chunks(texts=texts)

    def flush(self, texts: bool = True) -> list[SpeechChunk]:
        """End of input: the pending frames finished as at the end of a clip (the last chunk holds the
        frames left, so it may be shorter than a hop); then the stream starts afresh. `texts` as for
        `push`."""
        with self._compute():
            self._release(len(self._held))
            if self._voice is not None:
                self._pieces.extend(self._voice.pieces(finish=True))
        chunks = self._chunks(everything=True, texts=texts)
        self.reset()
        return chunks

    def read_text(self, chunk: SpeechChunk) -> None:
        """Read `chunk`'s pending text (push or flush with texts=False) into its text, confidence and doubt,
        its compute added to the chunk's; nothing when none is pending. It needs nothing more of the
        stream, so it may follow later pushes or a reset, and may run in another thread while one pushes
        (its networks run in PyTorch, whatever the backend)."""
        if chunk.pending is None:
            return
        start, self.synthesizer.seconds = time.perf_counter(), {}
        try:
            chunk.text, chunk.confidence, chunk.doubt = chunk.pending()
        finally:
            chunk.pending = None
            for stage, s in self.synthesizer.seconds.items():
                chunk.seconds[stage] = chunk.seconds.get(stage, 0.0) + s
            chunk.compute_s += time.perf_counter() - start

    # ------------------------------------------------------------ internals

    @contextmanager
    def _compute(self) -> Iterator[None]:
        start = time.perf_counter()
        self.synthesizer.seconds = {}
        try:
            yield
        finally:
            self._spend.seconds.update(self.synthesizer.seconds)
            self._wall += time.perf_counter() - start

    def _preroll(self, face: FrameInput) -> list[FrameInput]:
        """The frames `face` brings of itself (`earlier`) for the newest held frames, as many as match them
        stamp for stamp back from the newest (usable ones only, not counted: no target's frames), oldest
        first."""
        known = {}
        for before in face.earlier:
            checked = self._checked(before, count=False)
            if checked is not None and checked.track_id == face.track_id:
                known[int(checked.stamp_ns)] = checked
        run = []
        for _, stamp in reversed(self._held):
            if stamp not in known:
                break
            run.append(known[stamp])
        return run[::-1]

    def _release(self, n: int) -> None:
        """The oldest n held frames are silence after all."""
        for _ in range(max(0, n)):
            index, _ = self._held.popleft()
            self._pieces.append(_Piece(index, np.zeros(SAMPLES_PER_FRAME, np.float32), ["no_face"]))

    def _checked(self, frame: FrameInput, count: bool = True) -> FrameInput | None:
        """The frame if it shows the target face with usable arrays, else None (counted when bad, unless
        not `count`)."""
        if frame.track_id < 0:
            return None
        for name, shape in self.shapes.items():
            value = getattr(frame, name)
            geometry = name == "lip_geometry"
            if (not isinstance(value, np.ndarray) or value.shape != shape
                    or not (np.issubdtype(value.dtype, np.floating) if geometry else value.dtype == np.uint8)
                    or (geometry and not np.isfinite(value).all())):
                self.bad_frame_reasons[name] += count
                return None
        return frame

    def _chunks(self, everything: bool = False, texts: bool = True) -> list[SpeechChunk]:
        hop, chunks = self.params.hop_frames, []
        committed = self._pieces[-1].start + len(self._pieces[-1].reasons) if self._pieces else self._emitted
        while committed >= self._emitted + hop or (everything and self._pieces):
            end = min(self._emitted + hop, committed)
            parts = []
            while self._pieces and _within(self._pieces[0], end):
                parts.append(self._pieces.popleft())
            chunks.append(self._chunk(parts, end - self._emitted))
            self._emitted = end
        for chunk in chunks if texts else ():
            self.read_text(chunk)
        return chunks

    def _chunk(self, parts: list[_Piece], frames: int) -> SpeechChunk:
        reasons = [r for part in parts for r in part.reasons]
        silent = "speech" not in reasons
        finals = [part for part in parts if part.final]
        last = finals[-1] if finals else parts[-1]
        stamp = self._stamps[0] if frames else self._last_stamp  # an utterance's end alone: no frames
        for _ in range(frames):
            self._stamps.popleft()
        seconds, compute_s, self._wall = self._spend.take(), self._wall, 0.0
        wav = np.concatenate([part.wav for part in parts]) if parts else np.zeros(0, np.float32)
        reason = ("speech" if not silent else "no_face" if "no_face" in reasons else "mouth_still" if reasons
                  else "utterance_end")
        return SpeechChunk(wav, stamp, silent, reason, last.text, bool(finals), last.confidence, last.doubt,
                           seconds, compute_s, last.reading)


def _within(piece: _Piece, end: int) -> bool:
    """The piece belongs to the chunk that ends at frame `end` (an utterance's end, with no frames of its
    own, belongs to the chunk it closes)."""
    return piece.start < end or (not piece.reasons and piece.start == end)


def raised_cosine(n: int) -> np.ndarray:
    """A fade-in of n samples (its complement 1 − x fades out: the two always sum to one)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / max(n, 1))).astype(np.float32)


def window_seed(seed: int, window: int) -> int:
    """The noise seed of window `window` of a stream seeded `seed` (distinct for every pair)."""
    return int(np.random.SeedSequence([seed, window]).generate_state(1, np.uint64)[0]) >> 1


def frames_of(features: Features, track_id: int = 0, start_ns: int = 0) -> Iterator[FrameInput]:
    """A clip's per-frame features as the camera would give them: frames 40 ms apart, the unseen ones
    (features.valid False) without a face."""
    step = round(1e9 / VIDEO_FPS)
    for k in range(len(features.mouth_rois)):
        stamp = start_ns + k * step
        if features.valid is not None and not features.valid[k]:
            yield FrameInput(stamp, -1, None, None, None)
        else:
            yield FrameInput(stamp, track_id, features.mouth_rois[k],
                             np.asarray(features.lip_geometry[k], np.float32), features.face_crop)


def stream(streamer: StreamingSynthesizer, frames: Iterator[FrameInput]) -> list[SpeechChunk]:
    """Every chunk of `frames` pushed one by one, then flushed."""
    chunks = [chunk for frame in frames for chunk in streamer.push(frame)]
    return chunks + streamer.flush()

