from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from engines.audio.mel import SAMPLES_PER_FRAME
from engines.clipsets import Clip
from engines.data.cache import FeatureCache
from engines.data.loaders import FEATURES_VERSION, decode_video
from engines.models.asr import ASR, ASRConfig
from engines.models.frontend import VisualFrontendConfig
from engines.models.identity import IdentityConfig, IdentityEncoder
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.melgen import MelGen, MelGenConfig
from engines.models.vocoder import Vocoder, VocoderConfig
from engines.synth.engine import Decoded, Features, Reading, Synthesizer, SynthParams
from engines.synth.models import ModelMismatch, SynthModels
from engines.synth.streaming import (
    FrameInput,
    SpeechChunk,
    StreamingSynthesizer,
    StreamParams,
    frames_of,
    raised_cosine,
    stream,
)
from engines.synth.systems import lip2speech_stream
from engines.text.ctc import text_confidence
from engines.train import checkpoint
from tests.helpers import REPO, save_phone_models

FAST = SynthParams(nfe=2, decode="greedy")
HOP = StreamParams().hop_frames


# ---------------------------------------------------------------- tiny models, saved as checkpoints


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    # a mean window shorter than the test streams, so the streamed windows must carry it as the clip does
    reader = LipReader(LipReaderConfig(VisualFrontendConfig(channels=(4, 8), geometry_hidden=8, dim=16,
                                                            mean_window=12), hidden=16))
    identity = IdentityEncoder(IdentityConfig(channels=(4, 8), embed_dim=8))
    melgen = MelGen(MelGenConfig(num_res_layers=2, res_channels=8, skip_channels=8, step_embed_in=16,
                                 step_embed_mid=16, step_embed_out=16, cond_channels=16,
                                 cond_dim=reader.condition_dim("reader") + 8))
    nn.init.normal_(melgen.final_conv.weight, std=0.3)  # else ε̂ = 0 and every mel looks alike
    asr = ASR(ASRConfig(channels=16, num_layers=2, step_embed_in=16, step_embed_dim=16))
    vocoder = Vocoder(VocoderConfig(dim=16, intermediate=32, n_blocks=2))
    summaries = {"melgen": {"features": "reader", "lipreader_digest": checkpoint.weights_digest(reader),
                            "identity_digest": checkpoint.weights_digest(identity)}}
    paths = {}
    for kind, model in {"lipreader": reader, "identity": identity, "melgen": melgen, "asr": asr,
                        "vocoder": vocoder}.items():
        paths[kind] = str(checkpoint.save(folder / f"{kind}.pt", model, model.config, kind=kind, metrics={},
                                          data_summary=summaries.get(kind, {}), command="test", data_seed=0,
                                          step=0))
    paths.update(save_phone_models(folder, reader, identity))
    return paths


@pytest.fixture(scope="module")
def models(weights: dict[str, str]) -> SynthModels:
    """MelGen speaks (no phone aligner or mel prior)."""
    return SynthModels.load(**{k: v for k, v in weights.items() if k not in ("aligner", "prior")})


@pytest.fixture(scope="module")
def phone_models(weights: dict[str, str]) -> SynthModels:
    """The mel prior speaks the aligner's phones (prior_mode speak, the default)."""
    return SynthModels.load(**weights)


class Recording(Synthesizer):
    """The real synthesizer, keeping what its reader and MelGen returned."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.readings: list[Reading] = []
        self.windows: list[tuple[tuple[Tensor, Tensor] | None, Tensor]] = []
        self.starts: list[Tensor | None] = []
        self.spoken: list[tuple[np.ndarray, Tensor]] = []
        self.embeddings: list[Tensor] = []
        self.identities: list[Tensor] = []
        self.decodes = 0
        self.wholes: list[bool] = []  # each decode's `whole`: the utterance had ended
        self.texts_read: list[Features] = []
        self.voices: list[Tensor] = []  # the identity each `spoken` window was spoken in

    def read(self, *args: object, **kwargs: object) -> Reading:
        reading = super().read(*args, **kwargs)
        self.readings.append(reading)
        return reading

    def identity(self, face_crop: np.ndarray) -> Tensor:
        self.embeddings.append(super().identity(face_crop))
        return self.embeddings[-1]

    def condition(self, features: Tensor, identity: Tensor) -> Tensor:
        self.identities.append(identity)
        return super().condition(features, identity)

    def decode(self, log_probs: Tensor, phones: np.ndarray | None = None, whole: bool = True) -> Decoded:
        self.decodes += 1
        self.wholes.append(whole)
        return super().decode(log_probs, phones, whole)

    def text_reading(self, features: Features, reading: Reading) -> Reading:
        self.texts_read.append(features)
        return super().text_reading(features, reading)

    def generate(self, cond: Tensor, text: str, **kwargs: object) -> Tensor:
        mel = super().generate(cond, text, **kwargs)
        self.windows.append((kwargs.get("known"), mel[0]))
        self.starts.append(kwargs.get("start"))
        return mel

    def speak(self, labels: np.ndarray, identity: Tensor) -> Tensor:
        mel = super().speak(labels, identity)
        self.spoken.append((labels, mel[0]))
        self.voices.append(identity)
        return mel


def committed_mel(s: StreamingSynthesizer, windows: list[tuple[object, Tensor]] | None = None,
                  past: int | None = None) -> Tensor:
    """The hop part of each recorded window (MelGen's, unless given, whose windows hold `past` frames before
    the hop, or the context) of a stream that had a face from its first frame."""
    hops = []
    for k, (_, mel) in enumerate(s.synthesizer.windows if windows is None else windows):
        context = min(k * HOP, s.params.context_frames if past is None else past)
        hops.append(mel[:, 4 * context:4 * (context + HOP)])
    return torch.cat(hops, dim=1)


# ---------------------------------------------------------------- input


def face_inputs(n: int, seed: int = 0, still: bool = False) -> Features:
    """n frames of a talking face (random ROIs, a lip opening that moves unless `still`)."""
    rng = np.random.default_rng(seed)
    geometry = rng.normal(0.0, 0.1, (n, 82)).astype(np.float32)
    geometry[:, 80] = 0.0 if still else 0.05 + 0.05 * np.sin(np.arange(n) * 0.9 + seed)
    return Features(rng.integers(0, 256, (n, 88, 88), dtype=np.uint8), geometry,
                    rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))


def no_face(n: int, start_ns: int = 0) -> list[FrameInput]:
    return [FrameInput(start_ns + k * 40_000_000, -1, None, None, None) for k in range(n)]


def wav_of(chunks: list[SpeechChunk]) -> np.ndarray:
    return np.concatenate([c.wav for c in chunks])


def streamer(models: SynthModels, params: SynthParams = FAST, synthesizer: type[Synthesizer] = Synthesizer,
             **stream_params: object) -> StreamingSynthesizer:
    # The frame arithmetic below is written for one frame of MelGen look-ahead, whatever the default; the
    # partial texts are the streaming reader's own (each hop's greedy reading), unless a test says otherwise.
    stream_params = {"lookahead_frames": 1, "partial_text_s": 0.0, **stream_params}
    return StreamingSynthesizer(synthesizer(models, params), StreamParams(**stream_params))


# ---------------------------------------------------------------- timing


def test_a_lip_reader_that_needs_whole_clips_is_refused(models: SynthModels) -> None:
    frontend = dataclasses.replace(models.lipreader.config.frontend, normalise="clip")
    whole = LipReader(dataclasses.replace(models.lipreader.config, frontend=frontend))
    with pytest.raises(ValueError, match="cannot stream"):
        streamer(dataclasses.replace(models, lipreader=whole))


def test_chunks_are_a_hop_long_stamped_with_their_first_frame_and_flush_emits_the_tail(
        models: SynthModels) -> None:
    s = streamer(models)
    assert s.algorithmic_latency_frames == 5 + 1 + 2  # hop, MelGen's look-ahead, the front end's
    frames = list(frames_of(face_inputs(23), start_ns=10**12))
    pushed = [s.push(frame) for frame in frames]
    # a hop's chunk comes with the frame that completes its look-ahead: frame 5k + 7
    assert [k for k, out in enumerate(pushed) if out] == [7, 12, 17, 22]
    chunks = [c for out in pushed for c in out]
    tail = s.flush()
    assert len(tail) == 1 and len(tail[0].wav) == 3 * SAMPLES_PER_FRAME  # frames 20, 21, 22
    assert all(len(c.wav) == HOP * SAMPLES_PER_FRAME and c.wav.dtype == np.float32 for c in chunks)
    assert [c.stamp_ns for c in chunks + tail] == [frames[k].stamp_ns for k in range(0, 23, HOP)]
    assert all(c.reason == "speech" and not c.silent and np.abs(c.wav).max() > 0 for c in chunks + tail)
    assert [c.final_text for c in chunks + tail] == [False] * 4 + [True]
    assert all(c.compute_s > 0 and c.seconds["mel"] > 0 for c in chunks)

    # after a flush the next frame starts a new stream
    again = [c for frame in frames[:8] for c in s.push(frame)]
    assert len(again) == 1 and again[0].stamp_ns == frames[0].stamp_ns


def test_the_same_input_gives_the_same_speech(models: SynthModels) -> None:
    features = face_inputs(17)
    first = stream(streamer(models), frames_of(features))
    s = streamer(models)
    s.warm_up()
    s.push(next(frames_of(face_inputs(3, seed=5))))
    s.reset()
    second = stream(s, frames_of(features))
    assert len(first) == len(second) == 4
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.wav, b.wav)
        assert (a.text, a.final_text, a.stamp_ns) == (b.text, b.final_text, b.stamp_ns)


def test_the_identity_is_computed_once_per_track_and_refreshed_with_a_running_mean(
        models: SynthModels) -> None:
    rng = np.random.default_rng(3)
    frames = [dataclasses.replace(f, face_crop=rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
              for f in frames_of(face_inputs(30))]
    once = streamer(models, synthesizer=Recording)
    stream(once, frames)
    assert len(once.synthesizer.embeddings) == 1
    refreshed = streamer(models, synthesizer=Recording, identity_refresh_s=0.4)  # every 10 frames
    stream(refreshed, frames)
    synth = refreshed.synthesizer
    assert len(synth.embeddings) == 3 and len(synth.identities) == 6
    mean = torch.nn.functional.normalize(torch.stack(synth.embeddings).sum(0), dim=1)
    torch.testing.assert_close(synth.identities[-1], mean)
    assert not torch.allclose(synth.identities[0], mean)


def test_a_voice_photo_gives_every_face_its_voice(models: SynthModels, tmp_path: Path) -> None:
    photo = tmp_path / "voice.png"
    cv2.imwrite(str(photo), next(decode_video(REPO / "launch" / "media" / "lip2speech_sample.mp4")))
    in_the_photos_voice = dataclasses.replace(FAST, voice=str(photo))
    lips = face_inputs(17)
    other_face = dataclasses.replace(lips, face_crop=np.full((112, 112, 3), 200, np.uint8))
    spoken = wav_of(stream(streamer(models, in_the_photos_voice), frames_of(lips)))
    np.testing.assert_array_equal(
        wav_of(stream(streamer(models, in_the_photos_voice), frames_of(other_face))), spoken)
    assert not np.array_equal(wav_of(stream(streamer(models), frames_of(lips))), spoken)


def test_the_crossfade_blends_only_the_first_samples_of_each_chunk(models: SynthModels) -> None:
    features = face_inputs(20)
    plain = wav_of(stream(streamer(models, crossfade_ms=0.0), frames_of(features)))
    faded = wav_of(stream(streamer(models), frames_of(features)))
    n, chunk = StreamParams().crossfade_samples, HOP * SAMPLES_PER_FRAME
    differs = np.flatnonzero(plain != faded)
    assert len(differs) and set(differs % chunk) <= set(range(n))  # chunk heads only
    ramp = raised_cosine(n)  # the first chunk fades in from silence
    assert ramp[0] < 0.01 and np.all(np.diff(ramp) > 0) and ramp[-1] > 0.99
    np.testing.assert_allclose(faded[:n], plain[:n] * ramp, rtol=1e-5, atol=1e-7)


def test_an_ended_utterance_is_read_again_by_the_decoder_unless_too_long(models: SynthModels) -> None:
    beam = dataclasses.replace(FAST, decode="beam", beam_width=4)
    counts = []
    for longest in (10.0, 0.0):
        s = streamer(models, beam, synthesizer=Recording, final_decode_max_s=longest)
        chunks = stream(s, frames_of(face_inputs(20)))
        assert chunks[-1].final_text and isinstance(chunks[-1].text, str)
        counts.append(s.synthesizer.decodes - len(s.synthesizer.windows))  # one per window for guidance
    assert counts == [1, 0]


def whole_clip_reader(models: SynthModels, tmp_path: Path) -> str:
    """A checkpoint of a tiny lip reader that normalises whole clips (so cannot stream), for the text."""
    torch.manual_seed(1)
    frontend = dataclasses.replace(models.lipreader.config.frontend, normalise="clip", mean_window=0)
    reader = LipReader(dataclasses.replace(models.lipreader.config, frontend=frontend))
    return str(checkpoint.save(tmp_path / "text_reader.pt", reader, reader.config, kind="lipreader",
                               metrics={}, data_summary={}, command="test", data_seed=0, step=0))


def test_each_ended_utterance_is_read_again_whole_by_the_text_reader(weights: dict[str, str],
                                                                      tmp_path: Path) -> None:
    models = SynthModels.load(**weights, text_reader=whole_clip_reader(SynthModels.load(**weights), tmp_path))
    assert models.aligner_reads == "lipreader"  # the aligner speaks the streaming reader's phones
    talk, rest, again = face_inputs(20), face_inputs(25, still=True), face_inputs(25, seed=1)
    clip = Features(*(np.concatenate(parts) for parts in zip(
        *((f.mouth_rois, f.lip_geometry) for f in (talk, rest, again)), strict=True)), talk.face_crop)
    s = streamer(models, dataclasses.replace(FAST, decode="beam", beam_width=4), synthesizer=Recording)
    chunks, kept = [], []
    for frame in frames_of(clip):
        chunks += s.push(frame)
        kept.append(len(s._voice.inputs))
    chunks += s.flush()

    # each utterance: from its first speech hop to the first silent hop of the pause that ended it
    spans, first, quiet, frame = [], None, None, 0
    for c in chunks:
        n = len(c.wav) // SAMPLES_PER_FRAME
        first = frame if first is None and not c.silent else first
        quiet = None if not c.silent else frame if quiet is None else quiet
        if c.final_text:
            spans.append((first, frame + n if quiet is None else quiet))
            first = None
        frame += n
    synth = s.synthesizer
    assert len(spans) == len(synth.texts_read) == 2
    assert spans[0][0] == 0 and spans[1][1] == len(clip.mouth_rois)
    finals = [c for c in chunks if c.final_text]
    for (a, b), read, final in zip(spans, synth.texts_read, finals, strict=True):
        np.testing.assert_array_equal(read.mouth_rois, clip.mouth_rois[a:b])  # the utterance's own frames
        np.testing.assert_array_equal(read.lip_geometry, clip.lip_geometry[a:b])
        expected = Synthesizer.decode(synth, Synthesizer.text_reading(synth, read, None).log_probs)
        assert (final.text, final.confidence) == (expected.text, pytest.approx(expected.confidence))
    # an utterance's inputs with the pause that ends it, not the stream's
    assert max(kept) <= 20 + 25 + s.algorithmic_latency_frames + HOP


def test_the_utterance_so_far_is_read_again_every_partial_text_s(weights: dict[str, str],
                                                                  tmp_path: Path) -> None:
    models = SynthModels.load(**weights, text_reader=whole_clip_reader(SynthModels.load(**weights), tmp_path))
    talk = face_inputs(32)
    s = streamer(models, dataclasses.replace(FAST, decode="beam", beam_width=4), synthesizer=Recording,
                 partial_text_s=0.4)  # every 10 frames: the hops that end at frames 10, 20 and 30
    chunks = stream(s, frames_of(talk))
    synth = s.synthesizer
    assert [bool(c.final_text) for c in chunks] == [False] * 6 + [True]
    assert len(synth.texts_read) == 4  # three partial readings and the final one
    # a GRID sentence still being said is not completed: only the final reading decodes a whole utterance
    assert synth.wholes == [False, False, False, True]
    for k, read in zip((1, 3, 5, 6), synth.texts_read, strict=True):
        n = len(read.mouth_rois)
        assert n >= min(5 * (k + 1), 32)  # the utterance so far: at least up to the hop's end
        np.testing.assert_array_equal(read.mouth_rois, talk.mouth_rois[:n])
        log_probs = Synthesizer.text_reading(synth, read, None).log_probs
        expected = Synthesizer.decode(synth, log_probs, whole=k == 6)
        assert (chunks[k].text, chunks[k].confidence) == (expected.text, pytest.approx(expected.confidence))
    assert all(c.text == "" and c.confidence == 0.0 for k, c in enumerate(chunks) if k in (0, 2, 4))


def test_a_pause_shows_at_once_the_text_its_utterance_ends_with_after_end_pause_s(
        weights: dict[str, str], tmp_path: Path) -> None:
    models = SynthModels.load(**weights, text_reader=whole_clip_reader(SynthModels.load(**weights), tmp_path))
    talk, still = face_inputs(15), face_inputs(25, still=True)
    clip = Features(np.concatenate([talk.mouth_rois, still.mouth_rois]),
                    np.concatenate([talk.lip_geometry, still.lip_geometry]), talk.face_crop)
    s = streamer(models, dataclasses.replace(FAST, decode="beam", beam_width=4), synthesizer=Recording,
                 partial_text_s=0.4)
    chunks = stream(s, frames_of(clip))
    assert [c.reason for c in chunks[:6]] == ["speech"] * 4 + ["mouth_still"] * 2
    # texts: the partials due at frames 10 and 20, at the pause's first hop (frames 20-25) though the next
    # was due at 30 (then at 35) the utterance read whole up to the pause, and that same reading as the final
    # text after end_pause_s (frames 30-35)
    read_at = [k for k, c in enumerate(chunks) if c.text]
    assert read_at == [1, 3, 4, 6] and [c.final_text for c in chunks[:7]] == [False] * 6 + [True]
    assert s.synthesizer.wholes == [False, False, True]  # read once for both
    assert (chunks[4].text, chunks[4].confidence) == (chunks[6].text, chunks[6].confidence)
    np.testing.assert_array_equal(s.synthesizer.texts_read[-1].mouth_rois, clip.mouth_rois[:20])

    again = face_inputs(15, seed=1)  # a breath, not an end: the talk goes on after 10 still frames
    clip = Features(*(np.concatenate(parts) for parts in zip(
        *((f.mouth_rois, f.lip_geometry) for f in (talk, face_inputs(10, still=True), again)), strict=True)),
        talk.face_crop)
    s = streamer(models, dataclasses.replace(FAST, decode="beam", beam_width=4), synthesizer=Recording,
                 partial_text_s=0.4)
    chunks = stream(s, frames_of(clip))
    assert [c.final_text for c in chunks].count(True) == 1 and chunks[-1].final_text
    np.testing.assert_array_equal(s.synthesizer.texts_read[-1].mouth_rois, clip.mouth_rois)  # all of it


def test_a_reading_that_fails_raises_once_and_is_gone(models: SynthModels) -> None:
    s = streamer(models)
    for frame in frames_of(face_inputs(12)):
        s.push(frame, texts=False)
    chunk = s.flush(texts=False)[-1]
    assert chunk.final_text and chunk.pending is not None

    def broken() -> tuple[str, float, str]:
        raise RuntimeError("reader failed")

    chunk.pending, before = broken, chunk.compute_s
    with pytest.raises(RuntimeError, match="reader failed"):
        s.read_text(chunk)
    assert chunk.pending is None and chunk.compute_s > before  # not read twice; its time still counted
    s.read_text(chunk)  # nothing left to read


def test_a_long_utterance_is_read_again_less_often(models: SynthModels) -> None:
    s = streamer(models, partial_text_s=0.4)  # 10 frames, or a quarter of the utterance once that is longer
    chunks = [c for f in frames_of(face_inputs(80)) for c in s.push(f, texts=False)] + s.flush(texts=False)
    read = [5 * (k + 1) for k, c in enumerate(chunks) if c.pending is not None]
    assert read == [10, 20, 30, 40, 50, 65, 80]  # after 50 frames, 12 more; after 65, 16 more: the end


def test_a_final_text_can_be_read_after_the_audio_and_later_pushes(weights: dict[str, str],
                                                                    tmp_path: Path) -> None:
    models = SynthModels.load(**weights, text_reader=whole_clip_reader(SynthModels.load(**weights), tmp_path))
    params = dataclasses.replace(FAST, decode="beam", beam_width=4)
    talk = [*frames_of(face_inputs(20)), *frames_of(face_inputs(25, still=True), start_ns=800_000_000),
            *frames_of(face_inputs(12, seed=1), start_ns=1_800_000_000)]
    eager = stream(streamer(models, params), iter(talk))

    s = streamer(models, params, synthesizer=Recording)
    chunks = [c for frame in talk for c in s.push(frame, texts=False)] + s.flush(texts=False)
    s.reset()  # the readings need nothing of the stream
    assert not s.synthesizer.texts_read  # no final text read yet: both wait, the first for 20 more frames
    assert [c.pending is not None for c in chunks] == [c.final_text for c in eager]
    assert all(c.text == "" for c in chunks if c.final_text)
    compute = [c.compute_s for c in chunks]
    for c in chunks:
        s.read_text(c)
        s.read_text(c)  # once only
    assert len(s.synthesizer.texts_read) == 2 == sum(c.final_text for c in chunks)
    assert [(c.text, c.final_text, c.confidence, c.doubt) for c in chunks] == \
        [(c.text, c.final_text, pytest.approx(c.confidence), c.doubt) for c in eager]
    assert all(c.compute_s > before and "text_reader" in c.seconds
               for c, before in zip(chunks, compute, strict=True) if c.final_text)


# ---------------------------------------------------------------- silence


def test_no_face_is_silence_at_once_and_a_gap_in_a_track_is_silence(models: SynthModels) -> None:
    s = streamer(models, preroll_frames=0)
    pushed = [s.push(frame) for frame in no_face(10)]
    assert [k for k, out in enumerate(pushed) if out] == [4, 9]  # nothing to wait for without a face
    for chunk in (c for out in pushed for c in out):
        assert chunk.silent and chunk.reason == "no_face" and not chunk.wav.any() and chunk.text == ""
    assert s.bad_frames == 0
    s = streamer(models, preroll_frames=2)  # silence waits while a face may yet claim it
    assert [k for k, frame in enumerate(no_face(10)) if s.push(frame)] == [6]
    assert [c.reason for c in s.flush()] == ["no_face"]

    frames = list(frames_of(face_inputs(30)))
    for k in range(10, 15):
        frames[k] = FrameInput(frames[k].stamp_ns, -1, None, None, None)
    chunks = stream(streamer(models), frames)
    assert [c.reason for c in chunks] == ["speech", "speech", "no_face", "speech", "speech", "speech"]
    assert not chunks[2].wav.any()
    assert [c.final_text for c in chunks] == [False] * 5 + [True]  # a gap shorter than end_pause_s
    at_once = stream(streamer(models, end_pause_s=0.0), frames)
    assert [c.final_text for c in at_once] == [False, False, True, False, False, True]


def test_a_face_named_the_target_late_is_voiced_from_the_frames_it_brings(models: SynthModels) -> None:
    faces = list(frames_of(face_inputs(20), track_id=3))
    whole = stream(streamer(models), faces)

    def named_at(k: int, earlier: list[FrameInput]) -> list[FrameInput]:
        """The face seen from the first frame but the target only from frame k on."""
        return [FrameInput(f.stamp_ns, -1, None, None, None) for f in faces[:k]] + [
            dataclasses.replace(faces[k], earlier=tuple(earlier)), *faces[k + 1:]]

    s = streamer(models)
    late = stream(s, named_at(3, faces[:3]))
    np.testing.assert_array_equal(wav_of(late), wav_of(whole))  # as if it had been the target all along
    assert s.prerolled_frames == 3
    assert [c.stamp_ns for c in late] == [c.stamp_ns for c in whole]

    s = streamer(models, preroll_frames=2)  # only the last two faceless frames wait for a face
    partial = wav_of(stream(s, named_at(3, faces[:3])))
    assert not partial[:SAMPLES_PER_FRAME].any() and partial[SAMPLES_PER_FRAME:3 * SAMPLES_PER_FRAME].any()
    assert len(partial) == len(wav_of(whole))

    unvoiced = wav_of(stream(streamer(models), named_at(3, [])))
    assert not unvoiced[:3 * SAMPLES_PER_FRAME].any()
    other = [dataclasses.replace(f, track_id=4) for f in faces[:3]]  # another face's frames
    assert not wav_of(stream(streamer(models), named_at(3, other)))[:3 * SAMPLES_PER_FRAME].any()
    shifted = [dataclasses.replace(f, stamp_ns=f.stamp_ns + 1) for f in faces[:3]]  # no held frame's stamps
    assert not wav_of(stream(streamer(models), named_at(3, shifted)))[:3 * SAMPLES_PER_FRAME].any()

    bad = dataclasses.replace(faces[2], mouth_roi=np.zeros((5, 5), np.uint8))
    s = streamer(models)
    chunks = stream(s, named_at(3, [*faces[:2], bad]))  # the newest is unusable: the run stops there
    assert s.bad_frames == 0  # not a target's frame: not counted
    assert not wav_of(chunks)[:3 * SAMPLES_PER_FRAME].any()


def test_a_still_mouth_is_silence_and_a_pause_of_end_pause_s_ends_the_utterance(models: SynthModels) -> None:
    chunks = stream(streamer(models), frames_of(face_inputs(20, still=True)))
    assert all(c.silent and c.reason == "mouth_still" and not c.wav.any() for c in chunks)
    assert not any(c.final_text or c.text for c in chunks)
    assert all("mel" not in c.seconds for c in chunks)  # no MelGen or vocoder work for silence

    talking, still = face_inputs(15), face_inputs(25, still=True)
    both = Features(np.concatenate([talking.mouth_rois, still.mouth_rois]),
                    np.concatenate([talking.lip_geometry, still.lip_geometry]), talking.face_crop)
    chunks = stream(streamer(models, dataclasses.replace(FAST, w2=0.0)), frames_of(both))
    # the hop after the last movement still sees it (the hop before is in the range): speech
    assert [c.reason for c in chunks] == ["speech"] * 4 + ["mouth_still"] * 4
    # still hops test 11 frames (a hop each side and one of look-ahead), each further one 5 more: the third
    # has 21 >= 20 (0.8 s)
    assert [c.final_text for c in chunks] == [False] * 6 + [True, False]
    assert all(c.text == "" for c in chunks[7:])
    at_once = stream(streamer(models, dataclasses.replace(FAST, w2=0.0), end_pause_s=0.0), frames_of(both))
    assert [c.final_text for c in at_once] == [False] * 4 + [True] + [False] * 3
    assert all(c.text == "" for c in at_once[5:])
    for a, b in zip(chunks, at_once, strict=True):  # the pause decides only where the text ends
        np.testing.assert_array_equal(a.wav, b.wav)
    assert at_once[4].text == chunks[6].text  # both read up to the pause's first hop


def test_a_new_track_starts_afresh_as_if_the_old_one_had_never_been_there(models: SynthModels) -> None:
    old, new = frames_of(face_inputs(15, seed=1), track_id=1), frames_of(face_inputs(15, seed=2), track_id=2,
                                                                          start_ns=15 * 40_000_000)
    new = list(new)
    changed = stream(streamer(models), [*old, *new])
    fresh = stream(streamer(models), [*no_face(15), *new])
    assert len(changed) == len(fresh) == 6
    assert changed[2].final_text and changed[2].reason == "speech"  # the old track's utterance ends
    for a, b in zip(changed[3:], fresh[3:], strict=True):
        np.testing.assert_array_equal(a.wav, b.wav)
        assert (a.text, a.final_text, a.stamp_ns) == (b.text, b.final_text, b.stamp_ns)


def test_an_utterance_without_pause_is_cut_so_what_is_kept_stays_bounded(models: SynthModels) -> None:
    s = streamer(models, max_utterance_s=1.0)  # 25 frames: five hops
    chunks, kept, partial = [], [], 0
    for frame in frames_of(face_inputs(60)):
        new = s.push(frame)
        chunks += new
        voice = s._voice
        kept.append(voice.log_probs.end - voice.log_probs.start)
        if len(new) == 1 and not new[0].final_text:  # carried from hop to hop: as if read afresh
            so_far = voice.log_probs.get(voice.utterance, voice.read_upto)
            assert new[0].confidence == pytest.approx(text_confidence(so_far, new[0].text), abs=1e-9)
            partial += 1
    chunks += s.flush()
    assert partial >= 6
    assert all(c.reason == "speech" for c in chunks)
    assert [k for k, c in enumerate(chunks) if c.final_text] == [4, 9, 11]
    assert all(c.text for c in chunks)
    # each text comes with the reader's confidence in it, and a doubt when that is below the line of the
    # decoder that read it (partial texts: greedy)
    assert all(0.0 < c.confidence < 1.0 for c in chunks)
    synth = s.synthesizer
    assert all(c.doubt == synth.doubt(c.confidence, "greedy") for c in chunks if not c.final_text)
    doubted = stream(streamer(models, dataclasses.replace(FAST, low_confidence=1.0), max_utterance_s=1.0),
                     frames_of(face_inputs(60)))
    assert all("low confidence" in c.doubt for c in doubted)
    assert max(kept) <= 25 + 2 * HOP + s.params.context_frames  # not the whole minute it might talk for


def test_bad_frames_are_counted_and_treated_as_no_face(models: SynthModels) -> None:
    frames = list(frames_of(face_inputs(25)))
    nan = frames[10].lip_geometry.copy()
    nan[3] = np.nan
    inf = frames[11].lip_geometry.copy()
    inf[80] = np.inf
    bad = {10: {"lip_geometry": nan}, 11: {"lip_geometry": inf},
           12: {"mouth_roi": frames[12].mouth_roi.astype(np.float32)},
           13: {"mouth_roi": frames[13].mouth_roi[:40]}, 14: {"face_crop": None}}
    for k, change in bad.items():
        frames[k] = dataclasses.replace(frames[k], **change)
    s = streamer(models)
    chunks = stream(s, frames)
    assert s.bad_frames == 5
    assert s.bad_frame_reasons == {"lip_geometry": 2, "mouth_roi": 2, "face_crop": 1}
    assert [c.reason for c in chunks] == ["speech", "speech", "no_face", "speech", "speech"]
    assert not chunks[2].wav.any() and np.isfinite(wav_of(chunks)).all()


# ---------------------------------------------------------------- against the offline synthesizer


@pytest.mark.parametrize("normalise", ["none", "trailing"])
def test_the_streamed_lip_reader_features_equal_the_offline_ones(models: SynthModels, normalise: str) -> None:
    if normalise == "trailing":
        # a window shorter than the stream and longer than a hop: the stream must keep inputs across hops
        frontend = dataclasses.replace(models.lipreader.config.frontend, normalise=normalise,
                                       normalise_window=8)
        torch.manual_seed(1)
        reader = LipReader(dataclasses.replace(models.lipreader.config, frontend=frontend)).eval()
        models = dataclasses.replace(models, lipreader=reader)
    features = face_inputs(37)
    s = streamer(models, synthesizer=Recording)
    stream(s, frames_of(features))
    synth = s.synthesizer
    assert len(synth.readings) == 7  # one per window that has new frames to read: every frame once
    streamed = torch.cat([r.features for r in synth.readings], dim=1)
    log_probs = torch.cat([r.log_probs for r in synth.readings])
    offline = synth.read(synth.frame_features(features.mouth_rois, features.lip_geometry))
    assert streamed.shape == offline.features.shape == (1, 37, 32)
    torch.testing.assert_close(streamed, offline.features, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_probs, offline.log_probs, rtol=1e-5, atol=1e-5)


def test_the_streamed_mel_keeps_its_past_fixed(models: SynthModels) -> None:
    s = streamer(models, synthesizer=Recording)
    stream(s, frames_of(face_inputs(42)))
    committed = committed_mel(s)
    assert committed.shape[1] == 4 * 42
    for k, (known, mel) in enumerate(s.synthesizer.windows):
        first = max(0, k * HOP - s.params.context_frames)
        past = committed[:, 4 * first:4 * k * HOP]
        assert (known is None) == (k == 0)
        if known is not None:
            mask, values = known
            assert int(mask.sum()) == past.shape[1] and torch.equal(values[0, :, :past.shape[1]], past)
        assert torch.equal(mel[:, :past.shape[1]], past)  # the window's output keeps it exactly


def test_streamed_and_offline_mel_are_alike(models: SynthModels) -> None:
    # A random MelGen's mel follows its noise, not its condition; this one's ε̂ ignores x_t and is large, so
    # every sample lands on the same condition-led mel: what remains between streamed and offline is what
    # streaming changes (window edges, the condition's alignment; one frame off doubles the gap)
    melgen = copy.deepcopy(models.melgen)
    nn.init.zeros_(melgen.input_conv.weight)
    nn.init.normal_(melgen.final_conv.weight, std=20.0)
    led = dataclasses.replace(models, melgen=melgen)
    params = dataclasses.replace(FAST, w2=0.0)
    features = face_inputs(50)
    s = streamer(led, params, synthesizer=Recording)
    stream(s, frames_of(features))
    streamed = committed_mel(s)
    offline = [Synthesizer(led, dataclasses.replace(params, seed=seed)).synthesize(features).mel
               for seed in (0, 1)]
    other = Synthesizer(led, params).synthesize(face_inputs(50, seed=9)).mel
    assert streamed.shape == offline[0].shape == (80, 200)
    gap = (streamed - offline[0]).abs().mean()
    assert gap < 1.5 * (offline[1] - offline[0]).abs().mean()  # as close as another offline sample
    assert gap < 0.5 * (other - offline[0]).abs().mean()  # and far closer than the mel of other lips


# ---------------------------------------------------------------- the mel prior


def test_the_prior_speaks_each_steps_most_likely_phone_with_the_past_as_it_was_spoken(
        phone_models: SynthModels) -> None:
    features, look = face_inputs(37), phone_models.aligner.receptive_field()[1]
    s = streamer(phone_models, synthesizer=Recording, lookahead_frames=look)
    chunks = stream(s, frames_of(features))
    synth = s.synthesizer
    assert not synth.windows and all("mel" not in c.seconds for c in chunks)  # no MelGen
    assert all(c.reason == "speech" and np.abs(c.wav).max() > 0 for c in chunks)
    reading = synth.read(synth.frame_features(features.mouth_rois, features.lip_geometry))
    offline = phone_models.aligner.posteriors(reading.features[0]).argmax(axis=-1)
    past = -(-phone_models.prior.receptive_field()[0] // 4)  # frames of the past the prior's new steps hear
    assert past < s.params.context_frames  # so the windows below hold less than the context
    hops, mel = [], []
    for k, (labels, window) in enumerate(synth.spoken):
        context = min(k * HOP, past)
        hops.append(labels[4 * context:4 * (context + HOP)])
        mel.append(window[:, 4 * context:4 * (context + HOP)])
        # what the prior says of the hop is what it says with the whole context before it
        before = offline[4 * max(0, k * HOP - s.params.context_frames):4 * (k * HOP - context)]
        whole = phone_models.prior(torch.from_numpy(np.concatenate((before, labels)))[None], synth.voices[k])
        hop = slice(4 * (len(before) // 4 + context), 4 * (len(before) // 4 + context + HOP))
        torch.testing.assert_close(whole[0, :, hop], window[:, 4 * context:4 * (context + HOP)])
    # the hop's look-ahead covers the aligner's: each step's phone as the whole clip's posteriors have it
    np.testing.assert_array_equal(np.concatenate(hops), offline)
    torch.testing.assert_close(torch.cat(mel, dim=1), committed_mel(s, synth.spoken, past))


def test_melgen_speaks_with_the_prior_off_and_refines_its_mel_in_refine_mode(
        phone_models: SynthModels) -> None:
    features = face_inputs(17)
    off = streamer(phone_models, dataclasses.replace(FAST, prior_mode="off"), synthesizer=Recording)
    stream(off, frames_of(features))
    assert not off.synthesizer.spoken and len(off.synthesizer.windows) == 4
    refine = streamer(phone_models, dataclasses.replace(FAST, prior_mode="refine", prior_t=50),
                      synthesizer=Recording)
    stream(refine, frames_of(features))
    synth = refine.synthesizer
    assert len(synth.spoken) == len(synth.windows) == 4
    for (_, prior), start in zip(synth.spoken, synth.starts, strict=True):
        assert torch.equal(start[0], prior)  # MelGen starts from the prior's mel of the same window


def test_an_aligner_on_a_whole_clip_reader_cannot_stream(phone_models: SynthModels) -> None:
    with pytest.raises(ValueError, match="aligner trained on the streaming lip reader"):
        streamer(dataclasses.replace(phone_models, aligner_reads="text_reader"))
    streamer(dataclasses.replace(phone_models, aligner_reads="text_reader"),
             dataclasses.replace(FAST, prior_mode="off"))  # MelGen alone needs no aligner


# ---------------------------------------------------------------- parameters and the eval system


def test_stream_params_refuse_what_cannot_work() -> None:
    for bad in ({"hop_frames": 0}, {"context_frames": -1}, {"lookahead_frames": 6},
                {"crossfade_ms": -1.0}, {"identity_refresh_s": 0.0}, {"preroll_frames": -1},
                {"max_utterance_s": 0.0}):
        with pytest.raises(ValueError):
            StreamParams(**bad)
    assert StreamParams().crossfade_samples == 160
    assert StreamParams(lookahead_frames=0).crossfade_samples == 0  # it runs into the look-ahead


def test_the_eval_system_streams_a_clips_cached_features(weights: dict[str, str], tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the features are cached")
    features = face_inputs(27)
    FeatureCache(tmp_path / "cache", FEATURES_VERSION).store(
        FeatureCache(tmp_path / "cache", FEATURES_VERSION).key([video]),
        {"mouth_rois": features.mouth_rois, "lip_geometry": features.lip_geometry,
         "face_crop": features.face_crop, "valid": np.ones(27, bool)})
    system = lip2speech_stream(**weights, cache=str(tmp_path / "cache"), nfe=2, decode="greedy", hop_frames=4)
    assert system.streamer.params.hop_frames == 4 and system.synthesizer.params.nfe == 2
    wav = system.generate(Clip("c1", video, video))
    assert wav.shape == (27 * SAMPLES_PER_FRAME,) and np.abs(wav).max() > 0
    assert isinstance(system.texts["c1"], str) and system.seconds["prior"] > 0  # the prior speaks
    with pytest.raises(ValueError, match="unknown"):
        lip2speech_stream(**weights, hop=5)


def test_a_text_reader_of_other_inputs_is_refused(weights: dict[str, str], tmp_path: Path) -> None:
    models = SynthModels.load(**weights)
    frontend = dataclasses.replace(models.lipreader.config.frontend, roi_size=64)
    reader = LipReader(dataclasses.replace(models.lipreader.config, frontend=frontend))
    path = checkpoint.save(tmp_path / "small.pt", reader, reader.config, kind="lipreader", metrics={},
                           data_summary={}, command="test", data_seed=0, step=0)
    with pytest.raises(ModelMismatch, match="64-pixel mouth ROIs"):
        SynthModels.load(**weights, text_reader=str(path))
