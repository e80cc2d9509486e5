"""The lip2speech node as a real process on a real bus, with tiny random-weight checkpoints found through
$VOXSIGHT_WEIGHTS and fed real FaceTracks; its input plumbing (gap filling, the bounded queue) on its
own; and the launch files that use it."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq

from engines.models.asr import ASR, ASRConfig
from engines.models.frontend import VisualFrontendConfig
from engines.models.identity import IdentityConfig, IdentityEncoder
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.melgen import MelGen, MelGenConfig
from engines.models.vocoder import Vocoder, VocoderConfig
from engines.synth.models import DEFAULT_TEXT_READER
from engines.synth.streaming import OPENING, FrameInput, SpeechChunk
from engines.train import checkpoint
from node.launch_file import load as load_launch
from node.lip2speech import (
    END,
    FLUSH,
    FRAME_NS,
    FrameGrid,
    FrameQueue,
    RecentFaces,
    TextQueue,
    seen_faces,
    stale,
    target_frame,
)
from streams.codec import encode
from streams.endpoints import bus_endpoints
from streams.messages import (
    AudioChunk,
    AudioInfo,
    Diagnostic,
    FaceTrack,
    FaceTracks,
    Image,
    Message,
    Transcript,
)
from streams.pubsub import ORDERED, Publisher, Subscriber
from tests.helpers import REPO, next_message, save_phone_models, stop, voxsight, wait_for, wait_heartbeat

HOP = 5
CHUNK = HOP * 640
TRACK = 3


# ---------------------------------------------------------------- tiny weights and the node


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight models small enough to run many windows a second, saved as shipped checkpoints."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    frontend = VisualFrontendConfig(channels=(4, 8), roi_pool=4, geometry_hidden=8, dim=16, dilations=(1, 2))
    identity = IdentityConfig(channels=(4, 8), embed_dim=8)
    models = {
        "lipreader": LipReader(LipReaderConfig(frontend=frontend, hidden=16, dropout=0.0)),
        "identity": IdentityEncoder(identity),
        "melgen": MelGen(MelGenConfig(num_res_layers=2, res_channels=8, skip_channels=8, step_embed_mid=16,
                                      step_embed_out=16, cond_dim=16 + 8, cond_channels=8)),
        "asr": ASR(ASRConfig(channels=8, num_layers=1, step_embed_dim=16, dropout=0.0)),
        "vocoder": Vocoder(VocoderConfig(dim=8, intermediate=16, n_blocks=1)),
    }
    for kind, model in models.items():
        checkpoint.save(folder / f"{kind}.pt", model, model.config, kind=kind, metrics={},
                        data_summary={"features": "visual"} if kind == "melgen" else {}, command="test",
                        data_seed=0, step=0)
    save_phone_models(folder, models["lipreader"], models["identity"], features="visual")
    # the text reader, which reads each ended utterance again (a whole-clip reader, as the shipped one)
    whole_clips = dataclasses.replace(frontend, normalise="clip")
    text_reader = LipReader(LipReaderConfig(frontend=whole_clips, hidden=16, dropout=0.0))
    checkpoint.save(folder / f"{DEFAULT_TEXT_READER}.pt", text_reader, text_reader.config, kind="lipreader",
                    metrics={}, data_summary={}, command="test", data_seed=0, step=0)
    return folder


def _start(bus: str, weights: Path, *params: str):
    """The node; unless told otherwise, its queue holds every frame: the tests send faster than 25 fps."""
    proc = voxsight("run", "lip2speech", "--bus", bus, "nfe:=2", "decode:=greedy", "threads:=1",
                    "max_queue_frames:=1000", *params,
                    env={"VOXSIGHT_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1"})
    wait_heartbeat(bus, "lip2speech", timeout_s=60, predicate=lambda d: d.state == "active")
    return proc


@pytest.fixture
def listen(bus: str) -> Iterator[Callable[[str, type[Message]], Subscriber]]:
    ctx = zmq.Context.instance()
    subs: list[Subscriber] = []

    def open_(topic: str, msg_type: type[Message]) -> Subscriber:
        subs.append(Subscriber(ctx, bus_endpoints(bus)[1], [topic], qos=ORDERED, msg_type=msg_type))
        return subs[-1]

    yield open_
    for sub in subs:
        sub.close()


def _track(k: int, geometry: np.ndarray | None = None, roi_side: int = 88) -> FaceTrack:
    rng = np.random.default_rng(k)
    if geometry is None:
        geometry = rng.normal(0.0, 0.05, 82).astype(np.float32)
        geometry[OPENING] = 0.1 + 0.1 * np.sin(0.8 * k)  # a talking mouth
    return FaceTrack(id=TRACK, bbox=[100.0, 80.0, 120.0, 140.0], score=0.9,
                     landmarks=np.zeros((478, 3), np.float32),
                     mouth_roi=rng.integers(0, 256, (roi_side, roi_side), np.uint8),
                     face_crop=rng.integers(0, 256, (112, 112, 3), np.uint8), lip_geometry=geometry,
                     selected=True)


class Tracker:
    """The test's tracker: FaceTracks on a 25 fps stamp grid."""

    def __init__(self, bus: str) -> None:
        self.pub = Publisher(zmq.Context.instance(), bus_endpoints(bus)[0], "faces/tracks", qos=ORDERED,
                             source="tracker")
        self.stamp = time.time_ns()
        self.sent: dict[int, str] = {}  # stamp → what the frame showed

    def send(self, what: str = "face", track: FaceTrack | None = None, skip: int = 0) -> int:
        self.stamp += (1 + skip) * FRAME_NS
        msg = FaceTracks(stamp_ns=self.stamp, image_width=360, image_height=288, frame_id="camera")
        if what in ("face", "bad"):
            msg.tracks, msg.target_id = [track or _track(len(self.sent))], TRACK
        elif what == "tentative":  # seen, not yet confirmed: no target
            msg.tracks = [track or _track(len(self.sent))]
            msg.tracks[0].state = "tentative"
        else:
            msg.status = "no_face"
        self.pub.publish(msg)
        self.sent[self.stamp] = what
        return self.stamp

    def until_answered(self, audio: Subscriber) -> AudioChunk:
        """Faceless frames until the node's first chunk: the bus has our subscriptions both ways."""
        got: list[AudioChunk] = []

        def step() -> bool:
            self.send("none")
            item = audio.recv(0.05)
            return bool(item) and not got.append(item[1])

        wait_for(step, timeout_s=30, what="lip2speech to answer", poll_s=0)
        return got[0]

    def close(self) -> None:
        self.pub.close()


def _chunks_until(audio: Subscriber, end_ns: int, timeout_s: float = 60) -> list[AudioChunk]:
    """Chunks until one reaches the frame stamped `end_ns`."""
    chunks: list[AudioChunk] = []
    while not chunks or chunks[-1].stamp_ns + (len(chunks[-1].samples) // 640 - 1) * FRAME_NS < end_ns:
        chunks.append(next_message(audio, timeout_s=timeout_s, what=f"audio up to {end_ns}"))
    return chunks


def _frames_of(chunk: AudioChunk) -> list[int]:
    return [chunk.stamp_ns + k * FRAME_NS for k in range(len(chunk.samples) // 640)]


# ---------------------------------------------------------------- the node


@pytest.mark.timeout(240)
def test_speech_and_text_for_the_target_face_in_hops_stamped_with_their_frames(bus, listen, weights) -> None:
    audio, texts = listen("audio/speech", AudioChunk), listen("text/lipread", Transcript)
    node = _start(bus, weights, "partial_text_s:=0.4")  # partial texts read again as the final one is
    tracker = Tracker(bus)
    try:
        first = tracker.until_answered(audio)
        tracker.send("tentative")
        tracker.send("tentative", skip=1)  # the tracker skipped a frame: filled with the one before
        for k in range(30):
            tracker.send("face", skip=1 if k == 12 else 0)  # the tracker skipped one frame: filled
        for _ in range(12):
            tracker.send("none")
        last = tracker.stamp
        tracker.pub.publish(FaceTracks(image_width=0, image_height=0, status="no_input"))  # flush
        chunks = [first, *_chunks_until(audio, last)]
        finals = [next_message(texts, lambda t: t.final, what="the utterance's final text")]
        info = next_message(listen("audio/info", AudioInfo))  # late: the format is latched
        diag = wait_heartbeat(bus, "lip2speech", predicate=lambda d: d.values["flushes"] >= 1
                              and d.values["windows"] >= len(chunks))
    finally:
        tracker.close()
        code = stop(node)
    assert code == 0, node.stdout.read()
    assert (info.sample_rate, info.channels, info.format, info.chunk_samples, info.topic) == (
        16000, 1, "S16LE", CHUNK, "audio/speech")
    assert all((c.sample_rate, c.channels, c.format, c.frame_id) == (16000, 1, "S16LE", "camera")
               for c in chunks)
    assert all(len(c.samples) == CHUNK for c in chunks[:-1]) and 0 < len(chunks[-1].samples) <= CHUNK
    # Every chunk starts where the one before ended: the skipped frame was voiced too, timing continuous.
    assert all(b.stamp_ns == a.stamp_ns + HOP * FRAME_NS for a, b in itertools.pairwise(chunks))
    assert all(c.stamp_ns in tracker.sent or tracker.sent.get(c.stamp_ns - FRAME_NS) in ("face", "tentative")
               for c in chunks)
    showed = {c.stamp_ns: {tracker.sent.get(s, "filled") for s in _frames_of(c)} for c in chunks}
    faceless = [c for c in chunks if showed[c.stamp_ns] == {"none"}]
    talking = [c for c in chunks if showed[c.stamp_ns] <= {"face", "filled"}]
    assert faceless and all(not c.samples.any() for c in faceless)  # never speech without a face
    assert talking and any(c.samples.any() for c in talking)
    voiced = {stamp for c in chunks for k, stamp in enumerate(_frames_of(c))
              if c.samples[k * 640:(k + 1) * 640].any()}
    tentative = {s for s, w in tracker.sent.items() if w == "tentative"}
    tentative.add(max(tentative) - FRAME_NS)
    assert tentative <= voiced  # the face is voiced from before the tracker named it the target
    final = finals[0]
    first_face = min(tentative)
    assert final.text and first_face - HOP * FRAME_NS < final.stamp_ns
    assert final.stamp_ns <= final.end_stamp_ns <= last
    assert 0.0 < final.confidence < 1.0  # the reader's confidence in the text
    v = diag.values
    assert v["filled_frames"] == 2 and v["bad_frames"] == 0 and v["dropped_frames"] == 0
    assert v["prerolled_frames"] == 3
    assert v["speech_windows"] >= 1 and v["final_transcripts"] >= 1
    assert v["text_readings"] >= 2 and v["text_compute_s_total"] > 0  # partial (every 1 s) and final
    # the made-up lips are no speech: read with low confidence, which the node counts and warns about
    assert final.confidence < 0.5 and 1 <= v["low_confidence_transcripts"] <= v["final_transcripts"]
    assert v["backend.denoiser.torch"] == 1 and v["hop_frames"] == HOP
    assert v["algorithmic_latency_ms"] >= HOP * 40
    for key in ("speech.rtf.p95", "latency_first_ms.p50", "latency_last_ms.p95", "first_audio_ms.p50",
                "window.compute_ms"):
        assert np.isfinite(v[key])


@pytest.mark.timeout(240)
def test_a_tracker_gone_silent_mid_utterance_is_voiced_to_its_last_frame(bus, listen, weights) -> None:
    audio, texts = listen("audio/speech", AudioChunk), listen("text/lipread", Transcript)
    node = _start(bus, weights, "input_timeout_s:=0.5")
    tracker = Tracker(bus)
    try:
        tracker.until_answered(audio)
        for _ in range(12):
            tracker.send("face")
        last = tracker.stamp  # then nothing: the tracker died, and no no_input says so
        held = _chunks_until(audio, last)
        final = next_message(texts, lambda t: t.final, what="the utterance's final text")
        diag = wait_heartbeat(bus, "lip2speech", predicate=lambda d: d.values["input_timeouts"] >= 1)
        tracker.stamp += 100 * FRAME_NS  # a tracker back (respawned): a new stream on its frames
        for _ in range(12):
            tracker.send("face")
        again = _chunks_until(audio, tracker.stamp - 8 * FRAME_NS)  # its look-ahead's frames wait
    finally:
        tracker.close()
        code = stop(node)
    assert code == 0, node.stdout.read()
    assert held[-1].stamp_ns <= last < held[-1].stamp_ns + len(held[-1].samples) // 640 * FRAME_NS
    assert any(c.samples.any() for c in held) and final.end_stamp_ns <= last + FRAME_NS  # its end
    assert diag.values["flushes"] >= 1 and "tracker gone?" in node.stdout.read()
    assert again and any(c.samples.any() for c in again)


@pytest.mark.timeout(240)
def test_a_camera_faster_than_25_fps_is_spoken_for_as_long_as_its_video(bus, listen, weights) -> None:
    audio = listen("audio/speech", AudioChunk)
    node = _start(bus, weights)
    tracker = Tracker(bus)
    try:
        tracker.until_answered(audio)
        begin = tracker.stamp
        for k in range(1, 91):  # 3 s at 30 fps
            tracker.stamp = begin + round(k * 1e9 / 30) - FRAME_NS  # (send adds a 25 fps frame)
            tracker.send("face")
        last = tracker.stamp
        tracker.pub.publish(FaceTracks(image_width=0, image_height=0, status="no_input"))
        chunks = _chunks_until(audio, last - FRAME_NS // 2)  # a chunk's frames lie on the grid ± half a frame
        diag = wait_heartbeat(bus, "lip2speech", predicate=lambda d: d.values["flushes"] >= 1)
    finally:
        tracker.close()
        code = stop(node)
    assert code == 0, node.stdout.read()
    voiced_ns = sum(len(c.samples) for c in chunks if c.stamp_ns > begin) // 640 * FRAME_NS
    assert abs(voiced_ns - (last - begin)) <= HOP * FRAME_NS  # not 3.6 s for 3 s of video
    assert diag.values["early_frames"] == 15 and diag.values["filled_frames"] == 0
    assert "faster than 25 fps" in node.stdout.read()


def _hostile_frames() -> list[list[bytes]]:
    """What a broken publisher might send on faces/tracks: a FaceTracks whose lip geometry is NaN (our
    codec refuses to encode that, so the bytes are patched), and an Image."""
    track = _track(0)
    frames = [bytes(f) for f in encode("faces/tracks", FaceTracks(
        stamp_ns=1, image_width=360, image_height=288, tracks=[track], target_id=TRACK))]
    geometry = track.lip_geometry.tobytes()
    frames = [np.full(82, np.nan, np.float32).tobytes() if f == geometry else f for f in frames]
    return [frames, [bytes(f) for f in encode("faces/tracks", Image(pixels=np.zeros((8, 8, 3), np.uint8)))]]


@pytest.mark.timeout(240)
def test_malformed_and_unusable_input_is_counted_and_voiced_as_silence(bus, listen, weights) -> None:
    audio, diags = listen("audio/speech", AudioChunk), listen("diagnostics", Diagnostic)
    node = _start(bus, weights)
    tracker = Tracker(bus)
    hostile = zmq.Context.instance().socket(zmq.PUB)
    hostile.connect(bus_endpoints(bus)[0])
    try:
        tracker.until_answered(audio)
        short = np.full(40, 0.2, np.float32)
        bad = [tracker.send("bad", _track(0, roi_side=64)), tracker.send("bad", _track(1, geometry=short))]

        def refused() -> bool:  # sent until the node has them: this socket joins the bus late
            for frames in _hostile_frames():
                hostile.send_multipart(frames)
            got = diags.recv(0.5)
            return bool(got) and got[1].node == "lip2speech" and got[1].values[
                "sub.faces/tracks.malformed"] >= 2

        wait_for(refused, timeout_s=30, what="the malformed messages to be counted", poll_s=0)
        for _ in range(3 * HOP):
            tracker.send("none")
        chunks = _chunks_until(audio, bad[-1])
        diag = wait_heartbeat(bus, "lip2speech", predicate=lambda d: d.values["windows"] >= len(chunks))
        assert node.poll() is None
    finally:
        hostile.close(linger=0)
        tracker.close()
        code = stop(node)
    assert code == 0, node.stdout.read()
    assert any(set(_frames_of(c)) & set(bad) for c in chunks) and all(not c.samples.any() for c in chunks)
    assert diag.values["bad_frames"] == 2 and diag.values["synth_errors"] == 0


@pytest.mark.timeout(240)
def test_a_synthesizer_falling_behind_drops_whole_hops_and_restarts(bus, listen, weights) -> None:
    audio = listen("audio/speech", AudioChunk)
    # MelGen, 50 network evaluations a window: far slower than the burst below arrives
    node = _start(bus, weights, "max_queue_frames:=5", "prior_mode:=off", "nfe:=50", "sampler:=ddim")
    tracker = Tracker(bus)
    try:
        tracker.until_answered(audio)
        for _ in range(200):
            tracker.send("face")
        burst_end = tracker.stamp
        diag = wait_heartbeat(bus, "lip2speech", timeout_s=60, predicate=lambda d: d.level == "WARN"
                              and d.values["dropped_frames"] > 0)

        def answers_after_the_burst() -> bool:  # a frame at a time, so the synthesizer can keep up
            tracker.send("none")
            while (item := audio.recv(0.2)) is not None:
                if item[1].stamp_ns > burst_end - 2 * HOP * FRAME_NS:
                    return True
            return False

        wait_for(answers_after_the_burst, timeout_s=120, what="audio after the burst", poll_s=0)
        # the worker counts the restart when it next takes a frame, which may be after the beat that
        # first reported the drops
        restarted = wait_heartbeat(bus, "lip2speech", predicate=lambda d: d.values["restarts"] >= 1)
    finally:
        tracker.close()
        code = stop(node)
    assert code == 0, node.stdout.read()
    assert diag.values["dropped_frames"] % HOP == 0 and restarted.values["restarts"] >= 1
    assert diag.values["queue_peak"] <= 5


def test_missing_weights_stop_the_node_with_a_clear_message(bus, tmp_path) -> None:
    node = voxsight("run", "lip2speech", "--bus", bus, env={"VOXSIGHT_WEIGHTS": str(tmp_path)})
    out, _ = node.communicate(timeout=60)
    assert node.returncode == 1
    assert "cannot load the synthesizer" in out and "no shipped weights named 'lipreader'" in out
    assert "Traceback" not in out


def test_a_voice_without_a_face_stops_the_node_with_a_clear_message(bus, weights) -> None:
    faceless = REPO / "launch" / "media" / "pattern.mp4"
    node = voxsight("run", "lip2speech", "--bus", bus, f"voice:={faceless}",
                    env={"VOXSIGHT_WEIGHTS": str(weights)})
    out, _ = node.communicate(timeout=60)
    assert node.returncode == 1
    assert f"voice {faceless}: no face to take a voice from" in out and "Traceback" not in out


def test_bad_parameters_stop_the_node_with_a_clear_message(bus, weights) -> None:
    node = voxsight("run", "lip2speech", "--bus", bus, "nfe:=0", "max_queue_frames:=0",
                    env={"VOXSIGHT_WEIGHTS": str(weights)})
    out, _ = node.communicate(timeout=60)
    assert node.returncode == 1
    assert "max_queue_frames must be >= 1" in out and "nfe must be >= 1" in out and "Traceback" not in out
    text = voxsight("run", "lip2speech", "--bus", bus, "prior_speaks:=text", "warmup:=false",
                    env={"VOXSIGHT_WEIGHTS": str(weights)})
    out, _ = text.communicate(timeout=60)
    assert text.returncode == 1
    assert "a stream's prior speaks phones" in out and "Traceback" not in out


# ---------------------------------------------------------------- input plumbing


def _frame(stamp: int) -> FrameInput:
    return FrameInput(stamp_ns=stamp, track_id=1, mouth_roi=None, lip_geometry=None, face_crop=None)


def test_only_a_target_seen_in_the_frame_is_a_face() -> None:
    seen, coasting = _track(0), _track(1)
    coasting.state = "coasting"
    msg = FaceTracks(stamp_ns=7, image_width=360, image_height=288, tracks=[seen], target_id=TRACK)
    frame = target_frame(msg)
    assert (frame.stamp_ns, frame.track_id) == (7, TRACK) and frame.mouth_roi is seen.mouth_roi
    for status, tracks, target in (("ok", [coasting], TRACK), ("no_face", [seen], TRACK), ("ok", [seen], -1)):
        msg = FaceTracks(stamp_ns=8, image_width=360, image_height=288, tracks=tracks, target_id=target,
                         status=status)
        assert target_frame(msg) == FrameInput(8, -1, None, None, None)


def test_a_new_target_brings_its_frames_from_before_it_was_named() -> None:
    def faces(k: int, *ids: int) -> dict[int, FrameInput]:
        tracks = [dataclasses.replace(_track(k), id=i, state="tentative") for i in ids]
        return seen_faces(FaceTracks(stamp_ns=k * FRAME_NS, image_width=360, image_height=288, tracks=tracks))

    recent = RecentFaces(4)
    for k, ids in ((1, (5,)), (2, (5, 6)), (3, (5, 6)), (4, (6,))):
        recent.add(faces(k, *ids))
    assert [f.stamp_ns // FRAME_NS for f in recent.earlier(6)] == [2, 3, 4]  # back to the newest without it
    assert all(f.track_id == 6 and f.mouth_roi is not None for f in recent.earlier(6))
    assert recent.earlier(5) == () and recent.earlier(7) == ()  # not in the newest frame: nothing to bring
    recent.repeat(5 * FRAME_NS)  # a filled frame repeats the faces before it
    assert [f.stamp_ns // FRAME_NS for f in recent.earlier(6)] == [2, 3, 4, 5]
    recent.add(faces(6, 6))
    assert [f.stamp_ns // FRAME_NS for f in recent.earlier(6)] == [3, 4, 5, 6]  # the last n frames only
    assert faces(7, 6)[6].earlier == () and seen_faces(FaceTracks(
        stamp_ns=1, image_width=360, image_height=288, tracks=[_track(0)], status="no_face")) == {}

    frame = dataclasses.replace(faces(7, 6)[6], earlier=recent.earlier(6))
    grid = FrameGrid(3)
    grid.place(frame)
    filled = grid.place(_frame(10 * FRAME_NS))
    assert [f.stamp_ns // FRAME_NS for f in filled] == [8, 9, 10]
    assert filled[0].earlier == () and filled[1].earlier == ()  # a repeated frame brings none


def test_frames_go_on_the_25_fps_grid_by_their_stamps() -> None:
    grid = FrameGrid(3)
    first = _frame(1_000 * FRAME_NS)
    assert grid.place(first) == [first]
    jittered = _frame(first.stamp_ns + FRAME_NS + 3_000_000)
    assert grid.place(jittered) == [jittered]  # jitter is not a gap
    assert grid.place(_frame(jittered.stamp_ns)) == []  # a repeated stamp
    assert grid.place(_frame(first.stamp_ns + FRAME_NS + FRAME_NS // 3)) == []  # early: in the same slot
    filled = grid.place(_frame(first.stamp_ns + 4 * FRAME_NS))
    assert [f.stamp_ns - first.stamp_ns for f in filled] == [2 * FRAME_NS, 3 * FRAME_NS, 4 * FRAME_NS]
    assert filled[0].mouth_roi is jittered.mouth_roi and filled[0].earlier == ()  # copies of the frame before
    assert grid.place(_frame(first.stamp_ns + 9 * FRAME_NS)) is None  # too long a gap: a new stream
    assert grid.place(_frame(first.stamp_ns + 10 * FRAME_NS))[0].stamp_ns == first.stamp_ns + 10 * FRAME_NS
    assert grid.place(_frame(first.stamp_ns)) is None  # back in time: a new stream


@pytest.mark.parametrize("fps", [30.0, 50.0, 60.0, 15.0, 24.9, 25.1])
def test_any_camera_rate_is_spoken_for_as_long_as_its_video(fps: float) -> None:
    grid = FrameGrid(12)
    stamps = [round(k * 1e9 / fps) for k in range(int(10 * fps) + 1)]  # 10 s of video
    pushed = [f for t in stamps for f in grid.place(_frame(10**12 + t))]
    assert len(pushed) == 251  # 10 s at 25 fps, both ends included
    assert all(abs(f.stamp_ns - 10**12 - k * FRAME_NS) <= FRAME_NS // 2 for k, f in enumerate(pushed))


def _chunk(final: bool = False, pending: bool = True) -> SpeechChunk:
    return SpeechChunk(np.zeros(CHUNK, np.float32), 0, False, "speech", "", final, 0.0, "", {}, 0.0,
                       (lambda: ("bin", 0.9, "")) if pending else None)


def test_the_text_queue_hands_out_everything_put_even_after_closing() -> None:
    queue = TextQueue()
    items = [_chunk(), END, _chunk(final=True)]
    for item in items:
        queue.put(item)
    assert queue.take_all() == items and queue.depth() == (0, 3)
    queue.put(END)
    queue.close()
    assert queue.take_all() == [END] and queue.take_all() == []  # closed and empty: the worker ends


def test_a_partial_reading_with_a_newer_one_behind_it_is_stale() -> None:
    partial, final, plain = _chunk(), _chunk(final=True), _chunk(pending=False)
    assert [stale([partial, END, plain, _chunk()], k) for k in range(4)] == [True, False, False, False]
    assert stale([partial, final], 0) and not stale([final, _chunk()], 0)  # a final is always read
    assert not stale([partial, plain, END], 0)  # nothing newer to read: this one is the newest


def test_frame_queue_drops_the_oldest_whole_hops_and_says_so_once() -> None:
    queue = FrameQueue(limit=6, hop=5)
    assert [queue.put(k) for k in range(6)] == [0] * 6
    assert queue.put(6) == 5 and queue.depth() == (2, 6)
    assert queue.take() == (5, True) and queue.take() == (6, False)
    queue.put(FLUSH)
    queue.close()
    assert queue.take() == (None, False)  # closed: nothing more is handed out


# ---------------------------------------------------------------- launch files and media


@pytest.mark.parametrize("name", ["lip2speech.yaml", "lip2speech_file.yaml"])
def test_launch_files_declare_the_graph_with_the_synthesizer_parameters(name: str) -> None:
    spec = load_launch(REPO / "launch" / name)
    assert [n.kind for n in spec.nodes] == ["bus", "audio_out", "lip2speech", "tracker", "camera"]
    synth = spec.node("lip2speech")
    exposed = {"device", "backend", "nfe", "w1", "w2", "hop_frames", "lookahead_frames"}
    assert exposed <= set(synth.params)
    assert synth.required
    camera = spec.node("camera")
    assert camera.params["fps"] == 25.0
    if name == "lip2speech_file.yaml":
        media = REPO / camera.params["source"]
        assert media.is_file() and media.stat().st_size <= 2_000_000
        # a file is voiced whole: the tracker queues its frames; a live camera's stay latest-only
        assert spec.node("tracker").qos == {"camera/image": {"latest": False, "depth": 100}}
    else:
        assert spec.node("tracker").qos == {}
