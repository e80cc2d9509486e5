"""The lip2speech node: speech and lip-read text for the tracker's target face, live.

Subscribes `faces/tracks` (ORDERED: every frame, in order) and hands the target's mouth ROI, lip geometry
and face crop, frame by frame, to the streaming synthesizer (engines.synth.streaming) running in a worker
thread, so the event loop (input, heartbeats, stop requests) never waits on a model. Publishes

- `audio/speech`: one AudioChunk (S16LE, 16 kHz, mono) per hop, stamped with the acquisition stamp of the
  first frame it voices; silent chunks of the same length where there is no target face or its mouth is
  still, so the audio keeps the video's timing;
- `text/lipread`: a Transcript each time the current utterance's lip-read text changes (final false: the
  utterance so far read again every `partial_text_s`; at a pause's first hop, as it will end) and one when the
  utterance ends, after a pause of `end_pause_s` (final true: read again whole), stamped with the utterance's
  first frame, with the reader's `confidence` in that text (engines.text.ctc.text_confidence); a final one
  below `low_confidence` (by default the line of the decoder that read it,
  engines.synth.engine.LOW_CONFIDENCE) is counted (`low_confidence_transcripts`) and warned about: the speech
  may not say what was said. Texts are read in a thread of their own once the chunk's audio is out: a long
  utterance's reading (hundreds of ms) never holds back the audio; when readings queue up, a partial one with
  a newer one behind it is skipped (`stale_text_readings`), a final one never;
- `audio/info`: the stream's format, latched (a subscriber that joins late gets it at once).

Input: a message with status ok and a target the tracker saw in that frame gives that face's frame;
no_face, bad_frame, no target or a coasting one (not seen in this frame) give a frame without a face
(silence). A target whose arrays the synthesizer cannot use (wrong shape or type) is a frame without a face
too, counted (`bad_frames`) and warned about; messages that are no valid FaceTracks at all (non-finite
values included: the codec refuses them) are dropped and counted by the subscription
(`sub.faces/tracks.malformed`). `no_input` (the camera is gone) ends the input: the frames still pending
are voiced (flush); so does silence on faces/tracks for `input_timeout_s` (the tracker died or stalled:
`input_timeouts`). A face the tracker saw before naming it the target (its track is confirmed only after a
few detections) is voiced from those frames too, up to `preroll_frames` of them. Frames go on the 25 fps grid
the synthesizer speaks, by their stamps (`FrameGrid`), so the speech keeps the video's duration whatever the
camera's rate: frames the tracker skipped (a gap of up to `max_fill_frames`) are filled by repeating the last
frame, frames of a faster source are dropped (`early_frames`, warned about); a longer gap, or stamps going
back, restarts the stream.

Falling behind: at most `max_queue_frames` frames wait; beyond that the oldest whole hops are dropped
(counted, warned) and the stream restarts on the newer frames, which bounds the latency.

Heartbeat: the last window's compute ms, RTF (compute / audio duration), end-to-end latency (publish time
− acquisition stamp of the window's first and of its last voiced frame) and stage times; p50/p95 of
these over the last STATS_WINDOWS windows (RTF and compute over speech windows only: silent ones skip
the models; latency over live windows only: those a flush voices waited for the input to end), and the time
to first audio (`first_audio_ms`: the first-frame latency of each utterance's first speech window); the
text readings' compute (`text.compute_ms`, `text_compute_s_total`, `text_readings`); the depths of both
queues (now and the peak since the last beat); counters of frames, windows, silence reasons, drops,
restarts, bad frames and frames voiced from before their face was the target (`prerolled_frames`); the
backend of each graph as `backend.GRAPH.NAME` = 1.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from engines.audio.mel import SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS
from engines.synth.engine import Synthesizer, SynthParams
from engines.synth.models import DEFAULT_TEXT_READER, SynthModels
from engines.synth.streaming import OPENING, FrameInput, SpeechChunk, StreamingSynthesizer, StreamParams
from node.params import merge, param, part
from node.runtime import Node
from streams.audio import to_int16
from streams.messages import AudioChunk, AudioInfo, FaceTracks, Transcript
from streams.pubsub import EVENTS, LATCHED, ORDERED

TRACKS_TOPIC = "faces/tracks"
AUDIO_TOPIC = "audio/speech"
TEXT_TOPIC = "text/lipread"
INFO_TOPIC = "audio/info"
STATS_WINDOWS = 150  # 30 s of 200 ms windows
FRAME_NS = round(1e9 / VIDEO_FPS)
_JOIN_S = 10.0  # a window in progress may take this long on a slow CPU


@dataclass
class _NodeParams:
    device: str = param("cpu", "torch device of the models: cpu, cuda or cuda:N")
    lipreader: str = param("lipreader", "lip reader weights: a shipped name or a checkpoint path")
    melgen: str = param("melgen", "MelGen weights: a shipped name or a checkpoint path")
    identity: str = param("identity", "identity encoder weights: a shipped name or a checkpoint path")
    asr: str = param("asr", "guidance ASR weights: a shipped name or a checkpoint path; '' = no ASR guidance")
    vocoder: str = param("vocoder", "vocoder weights: a shipped name or a checkpoint path; 'griffin-lim' "
                                    "for the zero-weight vocoder")
    aligner: str = param("aligner", "phone aligner weights (trained on the lip reader's features): a shipped "
                                    "name or a checkpoint path; '' (with prior '') = MelGen speaks")
    prior: str = param("prior", "mel prior weights, which speak the aligner's phones: a shipped name or a "
                                "checkpoint path; '' (with aligner '') = MelGen speaks")
    text_reader: str = param(DEFAULT_TEXT_READER, "lip reader that reads each ended utterance's text again, "
                                                  "whole (it may need whole clips): a shipped name or a "
                                                  "checkpoint path; '' = the lip reader's own reading")
    cache_dir: str = param("", "cache of compiled backend graphs (TensorRT engines); '' = the default")
    threads: int = param(1, "intra-op threads of every network (PyTorch and ONNX Runtime); 0 = each "
                            "library's default, every core. A window is many small operations and the "
                            "tracker and the camera share the cores, so more threads mostly wait on each "
                            "other (notes/history.md, session 29)")
    max_queue_frames: int = param(25, "frames allowed to wait for the synthesizer; beyond, the oldest hops "
                                      "are dropped and the stream restarts")
    max_fill_frames: int = param(12, "frames the tracker skipped that are filled by repeating the last one; "
                                     "a longer gap restarts the stream")
    input_timeout_s: float = param(2.0, "no faces/tracks message this long while frames wait to be voiced "
                                        "(the tracker died or stalled; it publishes every camera frame, and "
                                        "no_input once a second without a camera): warn, voice them and end "
                                        "the utterance, as on no_input")
    warmup: bool = param(True, "run a few windows of made-up frames before activating, so the first real "
                               "window does not pay for lazy initialisation")


Lip2SpeechParams = merge("Lip2SpeechParams", _NodeParams, SynthParams, StreamParams)


# ---------------------------------------------------------------- input: messages → frames


def seen_faces(msg: FaceTracks) -> dict[int, FrameInput]:
    """Each face the tracker saw in this frame (tentative ones too; not coasting ones), by track id, as the
    synthesizer's frames. (The synthesizer checks the arrays: a bad one is no face.)"""
    if msg.status != "ok":
        return {}
    return {t.id: FrameInput(stamp_ns=msg.stamp_ns, track_id=t.id, mouth_roi=t.mouth_roi,
                             lip_geometry=t.lip_geometry, face_crop=t.face_crop)
            for t in msg.tracks if t.state != "coasting"}


def target_frame(msg: FaceTracks, faces: dict[int, FrameInput] | None = None) -> FrameInput:
    """The synthesizer's frame for one FaceTracks message: the target's arrays when the tracker saw it in
    this frame, else a frame without a face. `faces`: the message's `seen_faces`, when already made."""
    frame = (seen_faces(msg) if faces is None else faces).get(msg.target_id)
    return frame or FrameInput(stamp_ns=msg.stamp_ns, track_id=-1, mouth_roi=None, lip_geometry=None,
                               face_crop=None)


class RecentFaces:
    """The faces seen in the last `n` frames pushed (a filled frame repeats the faces before it), so that a
    new target brings its own frames from before it was named (FrameInput.earlier; the stream voices those
    it still holds, StreamParams.preroll_frames)."""

    def __init__(self, n: int) -> None:
        self.frames: deque[dict[int, FrameInput]] = deque(maxlen=n)

    def add(self, faces: dict[int, FrameInput]) -> None:
        self.frames.append(faces)

    def repeat(self, stamp_ns: int) -> None:
        """A filled frame at `stamp_ns`: the newest faces again, restamped."""
        if self.frames:
            self.add({i: dataclasses.replace(f, stamp_ns=stamp_ns) for i, f in self.frames[-1].items()})

    def earlier(self, track_id: int) -> tuple[FrameInput, ...]:
        """The track's frames, oldest first, back to the newest frame without it."""
        run = []
        for faces in reversed(self.frames):
            if track_id not in faces:
                break
            run.append(faces[track_id])
        return tuple(reversed(run))


class FrameGrid:
    """Puts a stream's frames on the 25 fps grid the synthesizer speaks, by their stamps, so the speech keeps
    the video's timing whatever the source's rate: slot k lies k frames after the stream's first frame.

    A frame in the slot of the one before it is dropped (a source faster than 25 fps, or a repeated stamp);
    slots left empty (frames the tracker skipped, a slower source) are filled with copies of the frame
    before, up to `max_fill` in a row. A longer gap, or stamps going back, starts a new stream.
    """

    def __init__(self, max_fill: int) -> None:
        self.max_fill = max_fill
        self.last: FrameInput | None = None
        self._origin_ns = 0
        self._slot = 0

    def reset(self) -> None:
        """The next frame starts a new stream."""
        self.last = None

    def place(self, frame: FrameInput) -> list[FrameInput] | None:
        """The frames to push for `frame`: the filled slots, then `frame`; [] when it is dropped; None when it
        starts a new stream after a gap or a step back (the caller ends the old one first)."""
        last = self.last
        slot = 0 if last is None else (frame.stamp_ns - self._origin_ns + FRAME_NS // 2) // FRAME_NS
        if last is not None and slot <= self._slot and frame.stamp_ns >= last.stamp_ns:
            return []
        if last is None or frame.stamp_ns < last.stamp_ns or slot - self._slot - 1 > self.max_fill:
            self._origin_ns, self._slot, self.last = frame.stamp_ns, 0, frame
            return None if last is not None else [frame]
        filled = [dataclasses.replace(last, stamp_ns=self._origin_ns + k * FRAME_NS, earlier=())
                  for k in range(self._slot + 1, slot)]
        self._slot, self.last = slot, frame
        return [*filled, frame]


FLUSH = object()  # a queue item: the input ended, voice what is pending
END = object()  # a text queue item: the utterance read so far ends here (a restart, the input's end)


@dataclass(frozen=True)
class _Said:
    """A transcript as the synthesizer read it: its text, confidence and the doubt about it (engines)."""
    text: str
    confidence: float
    doubt: str


_NOTHING_SAID = _Said("", 0.0, "")


class WorkQueue:
    """Items waiting for a worker thread, oldest first: one thread puts, the worker takes."""

    def __init__(self) -> None:
        self.peak = 0
        self._items: deque[object] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: object) -> int:
        """Queue `item`; the number of older items dropped to make room."""
        with self._cond:
            self._items.append(item)
            dropped = self._make_room()
            self.peak = max(self.peak, len(self._items))
            self._cond.notify()
            return dropped

    def _make_room(self) -> int:
        """(With the lock held.) Items dropped so that the queue stays bounded: none here."""
        return 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self, reset_peak: bool = False) -> tuple[int, int]:
        """(items waiting, the most that waited since the last reset)."""
        with self._cond:
            depth, peak = len(self._items), self.peak
            if reset_peak:
                self.peak = depth
            return depth, peak


class FrameQueue(WorkQueue):
    """Frames waiting for the synthesizer: the event loop puts, the worker takes. Over `limit` items, the
    oldest whole hops go, and the worker's next `take` says the stream must restart."""

    def __init__(self, limit: int, hop: int) -> None:
        super().__init__()
        self.limit, self.hop = limit, hop
        self._dropped_since_take = False

    def _make_room(self) -> int:
        if len(self._items) <= self.limit:
            return 0
        over = len(self._items) - self.limit  # whole hops, but never the newest item
        dropped = min(-(-over // self.hop) * self.hop, len(self._items) - 1)
        for _ in range(dropped):
            self._items.popleft()
        self._dropped_since_take = True
        return dropped

    def take(self) -> tuple[object | None, bool]:
        """(the oldest item, waiting for one; None once closed), and whether items were dropped since the
        last take."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed)
            dropped, self._dropped_since_take = self._dropped_since_take, False
            return (None if self._closed else self._items.popleft()), dropped


class TextQueue(WorkQueue):
    """Chunks whose texts wait to be read and published, in order: the synthesizer's worker puts them once
    their audio is out, the text worker takes them. Unbounded: the worker skips stale partial readings, so it
    keeps up unless reading a final text takes longer than the utterance took to say."""

    def take_all(self) -> list[object]:
        """Every item waiting, oldest first, waiting for one; [] once closed and empty (what was put before
        the close is still taken: no final text is lost)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed)
            items = list(self._items)
            self._items.clear()
            return items


def stale(items: list[object], k: int) -> bool:
    """Whether item k's partial text waits to be read while a newer reading waits behind it (that one
    would replace it at once)."""
    item = items[k]
    if not isinstance(item, SpeechChunk) or item.pending is None or item.final_text:
        return False
    return any(isinstance(later, SpeechChunk) and later.pending is not None for later in items[k + 1:])


class Rolling:
    """p50 and p95 of the last `size` values of each named figure."""

    def __init__(self, size: int = STATS_WINDOWS) -> None:
        self.size = size
        self._values: dict[str, deque[float]] = {}

    def add(self, name: str, value: float) -> None:
        self._values.setdefault(name, deque(maxlen=self.size)).append(value)

    def summary(self) -> dict[str, float]:
        out = {}
        for name, values in self._values.items():
            p50, p95 = np.percentile(np.fromiter(values, float), [50, 95])
            out[f"{name}.p50"], out[f"{name}.p95"] = float(p50), float(p95)
        return out


# ---------------------------------------------------------------- the node


class Lip2SpeechNode(Node):
    kind = "lip2speech"
    Params = Lip2SpeechParams

    def on_configure(self) -> None:
        p = self.params
        self._threads: list[threading.Thread] = []
        problems = [msg for bad, msg in (
            (p.max_queue_frames < 1, "max_queue_frames must be >= 1"),
            (p.max_fill_frames < 0, "max_fill_frames must be >= 0"),
            (p.threads < 0, "threads must be >= 0"),
            (not p.input_timeout_s > 0, "input_timeout_s must be > 0"),
        ) if bad]
        try:
            synth_params, stream_params = part(p, SynthParams), part(p, StreamParams)
        except (ValueError, TypeError) as exc:
            problems.append(str(exc))
        if problems:
            self.fail(f"bad parameters: {'; '.join(problems)}")
            return
        if p.threads:
            torch.set_num_threads(p.threads)
        stream = self._load(synth_params, stream_params)
        if stream is None:
            return
        self._stream, synthesizer = stream, stream.synthesizer
        self._hop = stream_params.hop_frames
        self._backends = dict(synthesizer.backends)
        self.log.info("models %s; backends %s; algorithmic latency %d frames",
                      synthesizer.models.describe(), self._backends, self._stream.algorithmic_latency_frames)
        if p.voice:
            self.log.info("every face speaks in the voice of %s", p.voice)
        for key in ("frames", "bad_frames", "prerolled_frames", "filled_frames", "repeated_frames",
                    "early_frames", "stamp_jumps", "drops", "dropped_frames", "restarts", "flushes",
                    "input_timeouts", "windows", "speech_windows", "synth_errors", "compute_s_total",
                    "speech_compute_s_total", "speech_s_total", "transcripts", "final_transcripts",
                    "low_confidence_transcripts", "text_compute_s_total", "text_readings",
                    "stale_text_readings"):
            self.count(key, 0)
        self._queue = FrameQueue(p.max_queue_frames, self._hop)
        self._text_queue = TextQueue()
        self._stats_lock = threading.Lock()
        self._rolling = Rolling()
        self._window: dict[str, float] = {}
        # event loop only
        self._grid = FrameGrid(p.max_fill_frames)
        self._recent = RecentFaces(stream_params.preroll_frames)
        self._pending = 0  # frames queued since the last flush
        self._input_mono = time.monotonic()  # when the last faces/tracks message came
        self._clock_offset_ns = 0  # monotonic − wall clock, from the input's stamps
        self._frame_id = ""
        # synthesizer worker only
        self._pushed: deque[int] = deque(maxlen=8 * STATS_WINDOWS)  # stamps pushed, to find a window's end
        self._speaking = False  # an utterance's speech has been sent (so the next speech starts none)
        # text worker only
        self._said = _NOTHING_SAID  # the current utterance's last published text
        self._utterance_ns = 0
        self._utterance_end_ns = 0
        if p.warmup:
            self._warm_up()
        self._audio = self.create_publisher(AUDIO_TOPIC, ORDERED)
        self._texts = self.create_publisher(TEXT_TOPIC, EVENTS)
        self._info = self.create_publisher(INFO_TOPIC, LATCHED)
        self.create_subscription(TRACKS_TOPIC, FaceTracks, self._on_tracks, ORDERED)
        self.create_timer(min(0.25, p.input_timeout_s / 2), self._check_input)

    def _load(self, synth_params: SynthParams, stream_params: StreamParams) -> StreamingSynthesizer | None:
        """The streaming synthesizer, or None after a clear stop (missing or mismatched weights, models or
        parameters that cannot stream, bad device)."""
        p = self.params
        try:
            models = SynthModels.load(p.lipreader, p.melgen, p.identity, p.asr or None, p.vocoder, p.device,
                                      aligner=p.aligner or None, prior=p.prior or None,
                                      text_reader=p.text_reader or None)
            synthesizer = Synthesizer(models, synth_params, p.device, p.cache_dir or None, p.threads)
            return StreamingSynthesizer(synthesizer, stream_params)
        except (OSError, ValueError, RuntimeError) as exc:  # missing file, CheckpointError, ModelMismatch
            self.fail(f"cannot load the synthesizer: {exc} (weights come from engines/weights or "
                      f"$VOXSIGHT_WEIGHTS by name, or from the checkpoint paths given as parameters; a "
                      f"voice from the photo or video given as `voice`)")
            return None

    def _warm_up(self) -> None:
        """Made-up frames with a moving mouth through every stage, then forget them."""
        rng = np.random.default_rng(0)
        shapes = self._stream.shapes
        started = time.perf_counter()
        chunks: list[SpeechChunk] = []
        frames = self._stream.algorithmic_latency_frames + 2 * self._hop
        for k in range(frames):
            geometry = rng.normal(0.0, 0.05, shapes["lip_geometry"]).astype(np.float32)
            geometry[OPENING] = 0.15 + 0.15 * np.sin(k)
            chunks += self._stream.push(FrameInput(
                stamp_ns=(k + 1) * FRAME_NS, track_id=0, lip_geometry=geometry,
                mouth_roi=rng.integers(0, 256, shapes["mouth_roi"], np.uint8),
                face_crop=rng.integers(0, 256, shapes["face_crop"], np.uint8)))
        chunks += self._stream.flush()  # which also forgets them
        self.log.info("warm-up: %d frames, %d speech window(s) in %.2f s", frames,
                      sum(not c.silent for c in chunks), time.perf_counter() - started)

    def on_activate(self) -> None:
        self._info.publish(AudioInfo(sample_rate=SAMPLE_RATE, channels=1, format="S16LE",
                                     chunk_samples=self._hop * SAMPLES_PER_FRAME, topic=self._audio.topic))
        # texts are read in a thread of their own: a long utterance's reading (hundreds of ms) must not hold
        # back the audio of the windows after it
        self._threads = [threading.Thread(target=work, daemon=True, name=name)
                         for work, name in ((self._work, "synthesizer"), (self._write_texts, "texts"))]
        for thread in self._threads:
            thread.start()

    def on_deactivate(self) -> None:
        if not self._threads:
            return
        synthesizer, texts = self._threads
        self._queue.close()
        synthesizer.join(_JOIN_S)
        self._text_queue.close()  # after the synthesizer's last chunk: every text put is still read
        texts.join(_JOIN_S)
        for thread in self._threads:
            if thread.is_alive():
                self.log.warning("the %s worker is still busy after %.0f s; leaving it", thread.name, _JOIN_S)

    # ------------------------------------------------------------ event loop: input

    def _on_tracks(self, msg: FaceTracks) -> None:
        self._input_mono = time.monotonic()
        if msg.status == "no_input":  # the camera is gone: voice what is pending, start afresh later
            self._end_input()
            return
        if msg.mono_ns:
            self._clock_offset_ns = msg.mono_ns - msg.stamp_ns
        self._frame_id = msg.frame_id
        faces = seen_faces(msg)
        frame = target_frame(msg, faces)
        last = self._grid.last
        frames = self._grid.place(frame)
        if frames is None:
            self.warn("stamp_jumps", "frame stamps jumped %.0f ms: the stream restarts",
                      (frame.stamp_ns - last.stamp_ns) / 1e6)
            self._enqueue(FLUSH)
            frames = [frame]
        elif not frames:
            if frame.stamp_ns == last.stamp_ns:
                self.warn("repeated_frames", "frame stamp %d repeated: ignored", frame.stamp_ns)
            else:
                self.warn("early_frames", "a frame %.1f ms after the one before: faces/tracks come faster "
                          "than %g fps, the rate the synthesizer speaks, so such frames are dropped (set the "
                          "camera's fps to %g)", (frame.stamp_ns - last.stamp_ns) / 1e6, VIDEO_FPS, VIDEO_FPS)
            return
        for filled in frames[:-1]:
            self._recent.repeat(filled.stamp_ns)
        if frame.track_id >= 0:
            frame = frames[-1] = dataclasses.replace(frame, earlier=self._recent.earlier(frame.track_id))
        self._recent.add(faces)
        self.count("frames")
        self.count("filled_frames", len(frames) - 1)
        for f in frames:
            self._enqueue(f)

    def _end_input(self) -> None:
        """The input has ended: the frames still pending are voiced, and the next ones start afresh."""
        if self._pending:
            self._enqueue(FLUSH)
            self._pending = 0
            self._grid.reset()
            self.count("flushes")

    def _check_input(self) -> None:
        silent = time.monotonic() - self._input_mono
        if self._pending and silent > self.params.input_timeout_s:
            self.warn("input_timeouts", "no message on %s for %.1f s (tracker gone?): voicing the %d "
                      "frame(s) held", self.resolve(TRACKS_TOPIC), silent, self._pending)
            self._end_input()

    def _enqueue(self, item: object) -> None:
        dropped = self._queue.put(item)
        self._pending += item is not FLUSH
        if dropped:
            self.count("dropped_frames", dropped)
            self.warn("drops", "the synthesizer fell behind by more than %d frames: dropped the oldest %d; "
                      "the stream restarts", self.params.max_queue_frames, dropped)

    # ------------------------------------------------------------ worker: synthesis and output

    def _work(self) -> None:
        while True:
            item, dropped = self._queue.take()
            if dropped:
                self._restart()
            if item is None:
                return
            try:
                # a chunk's text is read by the text worker once its audio is out (_publish)
                if item is FLUSH:
                    chunks = self._stream.flush(texts=False)
                else:
                    assert isinstance(item, FrameInput)
                    bad, prerolled = dict(self._stream.bad_frame_reasons), self._stream.prerolled_frames
                    chunks = self._stream.push(item, texts=False)
                    self._pushed.append(item.stamp_ns)
                    self._count_bad(item, bad)
                    self.count("prerolled_frames", self._stream.prerolled_frames - prerolled)
            except Exception as exc:  # an engine bug must not take the node down: count it, start afresh
                self.warn("synth_errors", "the synthesizer failed (%s: %s): the stream restarts",
                          type(exc).__name__, exc)
                self._restart()
                continue
            for chunk in chunks:
                self._publish(chunk, live=item is not FLUSH)
            if item is FLUSH:
                self._end_utterance()

    def _count_bad(self, frame: FrameInput, before: dict[str, int]) -> None:
        """Warn when the synthesizer refused `frame`'s arrays (misshapen, wrong type, not finite)."""
        bad = [name for name, n in self._stream.bad_frame_reasons.items() if n > before.get(name, 0)]
        if bad:
            self.warn("bad_frames", "frame %d: the target's %s unusable: voiced as no face", frame.stamp_ns,
                      " and ".join(bad))

    def _restart(self) -> None:
        """Forget the stream (after a drop or a failure); the utterance read so far ends there."""
        self._stream.reset()
        self.count("restarts")
        self._end_utterance()

    def _end_utterance(self) -> None:
        self._speaking = False
        self._text_queue.put(END)

    def _publish(self, chunk: SpeechChunk, live: bool) -> None:
        """The chunk's audio now; its text (perhaps still to be read) goes to the text worker."""
        frames = len(chunk.wav) // SAMPLES_PER_FRAME
        if frames:  # (a flush may end with the utterance's text alone)
            self._audio.publish(AudioChunk(
                samples=to_int16(chunk.wav.reshape(-1, 1)), sample_rate=SAMPLE_RATE, channels=1,
                format="S16LE", stamp_ns=chunk.stamp_ns, mono_ns=chunk.stamp_ns + self._clock_offset_ns,
                frame_id=self._frame_id))
            self._record(chunk, frames, time.time_ns(), live, starts=not chunk.silent and not self._speaking)
        self._speaking = (self._speaking or not chunk.silent) and not chunk.final_text
        self._text_queue.put(chunk)

    # ------------------------------------------------------------ text worker

    def _write_texts(self) -> None:
        while items := self._text_queue.take_all():
            for k, item in enumerate(items):
                if item is END:
                    if self._said.text:
                        self._publish_text(self._said, final=True)
                    continue
                assert isinstance(item, SpeechChunk)
                if stale(items, k):
                    item.pending = None
                    self.count("stale_text_readings")
                self._read_text(item)
                self._publish_chunk_text(item)

    def _read_text(self, chunk: SpeechChunk) -> None:
        if chunk.pending is None:
            return
        compute_s = chunk.compute_s
        try:
            self._stream.read_text(chunk)
        except Exception as exc:  # nothing new read: the utterance's last text stands
            self.warn("synth_errors", "reading the utterance's text failed (%s: %s)", type(exc).__name__, exc)
            chunk.text = ""
        self.count("text_readings")
        self.count("text_compute_s_total", chunk.compute_s - compute_s)
        with self._stats_lock:
            self._rolling.add("text.compute_ms", (chunk.compute_s - compute_s) * 1e3)

    def _publish_chunk_text(self, chunk: SpeechChunk) -> None:
        if not chunk.silent:
            self._utterance_ns = self._utterance_ns or chunk.stamp_ns
            self._utterance_end_ns = chunk.stamp_ns + len(chunk.wav) // SAMPLES_PER_FRAME * FRAME_NS
        said = _Said(chunk.text, chunk.confidence, chunk.doubt)
        if chunk.final_text and chunk.text:
            self._publish_text(said, final=True)
        elif chunk.final_text and self._said.text:  # the final decoding read nothing: the last text stands
            self._publish_text(self._said, final=True)
        elif chunk.text and chunk.text != self._said.text:
            self._publish_text(said, final=False)

    def _publish_text(self, said: _Said, final: bool) -> None:
        stamp = self._utterance_ns or self._utterance_end_ns or time.time_ns()
        self._texts.publish(Transcript(text=said.text, final=final, stamp_ns=stamp, frame_id=self._frame_id,
                                       end_stamp_ns=max(self._utterance_end_ns, stamp),
                                       confidence=said.confidence))
        self.count("final_transcripts" if final else "transcripts")
        if final and said.doubt:
            self.warn("low_confidence_transcripts", "%r: %s", said.text, said.doubt)
        self._said = _NOTHING_SAID if final else said
        if final:
            self._utterance_ns = self._utterance_end_ns = 0

    def _last_frame_stamp(self, chunk: SpeechChunk, frames: int) -> int:
        """The acquisition stamp of the last frame `chunk` voices."""
        pushed = self._pushed
        for i in range(len(pushed) - 1, -1, -1):
            if pushed[i] == chunk.stamp_ns:
                return pushed[min(i + frames - 1, len(pushed) - 1)]
        return chunk.stamp_ns + (frames - 1) * FRAME_NS

    def _record(self, chunk: SpeechChunk, frames: int, now_ns: int, live: bool, starts: bool) -> None:
        """Figures of one window; the latency only of `live` ones (a flush's waited for the input's end), and
        of those that `starts` an utterance also as its time to first audio."""
        audio_s = frames / VIDEO_FPS
        window = {"compute_ms": chunk.compute_s * 1e3, "rtf": chunk.compute_s / audio_s,
                  "latency_first_ms": (now_ns - chunk.stamp_ns) / 1e6,
                  "latency_last_ms": (now_ns - self._last_frame_stamp(chunk, frames)) / 1e6,
                  "silent": float(chunk.silent),
                  **{f"stage.{k}_ms": v * 1e3 for k, v in chunk.seconds.items()}}
        with self._stats_lock:
            self._window = window
            if live:
                self._rolling.add("latency_first_ms", window["latency_first_ms"])
                self._rolling.add("latency_last_ms", window["latency_last_ms"])
                if starts:
                    self._rolling.add("first_audio_ms", window["latency_first_ms"])
            if not chunk.silent:
                self._rolling.add("speech.compute_ms", window["compute_ms"])
                self._rolling.add("speech.rtf", window["rtf"])
        self.count("windows")
        self.count("compute_s_total", chunk.compute_s)
        if chunk.silent:
            self.count(f"silent.{chunk.reason}")
        else:
            self.count("speech_windows")
            self.count("speech_compute_s_total", chunk.compute_s)
            self.count("speech_s_total", audio_s)

    def diagnostic_values(self) -> dict[str, float]:
        values = super().diagnostic_values()
        if not hasattr(self, "_queue"):
            return values
        depth, peak = self._queue.depth(reset_peak=True)
        text_depth, text_peak = self._text_queue.depth(reset_peak=True)
        values.update({"queue_depth": depth, "queue_peak": peak, "text_queue_depth": text_depth,
                       "text_queue_peak": text_peak, "hop_frames": self._hop,
                       "algorithmic_latency_ms": self._stream.algorithmic_latency_frames * FRAME_NS / 1e6})
        with self._stats_lock:
            values.update({f"window.{k}": v for k, v in self._window.items()})
            values.update(self._rolling.summary())
        values.update({f"backend.{graph}.{name}": 1.0 for graph, name in self._backends.items()})
        return values
