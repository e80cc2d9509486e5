"""The offline synthesizer (engines.synth) on tiny randomly initialised models saved as real checkpoints:
models load together and a MelGen trained on other lip-reader or identity weights is refused; synthesis
gives finite speech of the clip's length, repeatable by seed, on PyTorch and ONNX Runtime alike; ASR
guidance acts only when there is text; the GRID decoder keeps to the grammar; reading in two windows with
the carried state equals reading the whole clip; unseen frames are silent; bad inputs are refused; and
`voxsight lip2speech` and the eval system run on a real GRID clip."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from engines.backends.onnx_backend import OnnxGraph
from engines.clipsets import VIDEO_EXTS, Clip
from engines.data.loaders import decode_video
from engines.data.mux import write_mp4
from engines.eval.systems import make_system
from engines.models.aligner import PhoneAligner, PhoneAlignerConfig
from engines.models.asr import ASR, ASRConfig
from engines.models.frontend import VisualFrontendConfig
from engines.models.identity import IdentityConfig, IdentityEncoder
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.mel_prior import MelPrior, MelPriorConfig
from engines.models.melgen import MelGen, MelGenConfig
from engines.models.vocoder import Vocoder, VocoderConfig
from engines.synth.cli import main as lip2speech_main
from engines.synth.cli import parser as lip2speech_parser
from engines.synth.engine import (
    GRID_START_LINE,
    LOW_CONFIDENCE,
    OPENING,
    Features,
    Synthesizer,
    SynthParams,
    silence_unseen,
    utterance_spans,
)
from engines.synth.models import DEFAULT_ALIGNER, DEFAULT_TEXT_READER, ModelMismatch, SynthModels
from engines.text.charset import decode
from engines.text.ctc import GRID_GRAMMAR, beam_search, greedy_decode, text_confidence
from engines.text.phones import SILENCE, text_log_likelihood
from engines.train import checkpoint
from tests.engines.test_text import frames_for
from tests.helpers import REPO, SHARED, save_phone_models

# roi_pool 4 and two stages leave a 6×6 map: ONNX export needs it to be a multiple of the 3×3 pool
TINY_LIPREADER = LipReaderConfig(frontend=VisualFrontendConfig(roi_pool=4, channels=(4, 8), geometry_hidden=8,
                                                               dim=16, dilations=(1, 2)), hidden=16)
TINY_IDENTITY = IdentityConfig(channels=(4, 8, 16), embed_dim=16)
# cond_dim 48: the lip reader's "reader" features (16 visual + 16 GRU) and the 16-d identity
TINY_MELGEN = MelGenConfig(num_res_layers=2, res_channels=8, skip_channels=8, step_embed_in=16,
                           step_embed_mid=16, step_embed_out=16, cond_dim=48, cond_channels=16)
TINY_ASR = ASRConfig(channels=16, num_layers=2, step_embed_in=16, step_embed_dim=16)
TINY_VOCODER = VocoderConfig(dim=16, intermediate=32, n_blocks=2)
SAMPLES_PER_FRAME = 640  # 16 kHz at 25 fps
GRID_DEV = SHARED / "real" / "grid-dev"
GRID_VIDEOS = sorted(p for p in GRID_DEV.glob("*") if p.suffix.lower() in VIDEO_EXTS)
needs_grid = pytest.mark.skipif(not GRID_VIDEOS, reason=f"{GRID_DEV} (real GRID clips) is absent")


def save(path: Path, model: nn.Module, kind: str, data_summary: dict | None = None) -> str:
    return str(checkpoint.save(path, model, model.config, kind=kind, metrics={},
                               data_summary=data_summary or {}, command="pytest", data_seed=0, step=0))


def tiny_melgen() -> MelGen:
    melgen = MelGen(TINY_MELGEN)
    nn.init.normal_(melgen.final_conv.weight, std=0.1)  # zero-initialised, ε would be 0 and prove nothing
    return melgen


def melgen_summary(lipreader: nn.Module, identity: nn.Module, features: str = "reader") -> dict[str, str]:
    """What the melgen recipe records about the models it was trained on."""
    return {"features": features, "lipreader_digest": checkpoint.weights_digest(lipreader),
            "identity_digest": checkpoint.weights_digest(identity)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Checkpoint paths of five tiny models trained (here: initialised) to work together."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    lipreader, identity = LipReader(TINY_LIPREADER), IdentityEncoder(TINY_IDENTITY)
    summary = melgen_summary(lipreader, identity)
    return {"lipreader": save(folder / "lipreader.pt", lipreader, "lipreader"),
            "identity": save(folder / "identity.pt", identity, "identity"),
            "melgen": save(folder / "melgen.pt", tiny_melgen(), "melgen", summary),
            "asr": save(folder / "asr.pt", ASR(TINY_ASR), "asr"),
            "vocoder": save(folder / "vocoder.pt", Vocoder(TINY_VOCODER), "vocoder")}


@pytest.fixture(scope="module")
def models(tiny: dict[str, str]) -> SynthModels:
    return SynthModels.load(**tiny)


def features(frames: int, seed: int = 0, valid: np.ndarray | None = None) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.integers(0, 256, (frames, 88, 88), dtype=np.uint8),
                    rng.normal(size=(frames, 82)).astype(np.float32),
                    rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), valid)


# the eval system and command load the shipped ones by default
NO_PRIOR = {"aligner": "", "prior": "", "text_reader": ""}


def model_args(tiny: dict[str, str]) -> list[str]:
    return [arg for kind, path in {**NO_PRIOR, **tiny}.items()
            for arg in (f"--{kind.replace('_', '-')}", path)]


# ---------------------------------------------------------------- models


def test_models_load_from_checkpoint_paths_frozen_with_the_features_the_melgen_heard(
        models: SynthModels, tiny: dict[str, str]) -> None:
    assert isinstance(models.lipreader, LipReader) and isinstance(models.melgen, MelGen)
    assert isinstance(models.identity, IdentityEncoder) and isinstance(models.asr, ASR)
    assert isinstance(models.vocoder, Vocoder)
    assert models.features == "reader" and models.sources == tiny
    for model in (models.lipreader, models.melgen, models.identity, models.asr, models.vocoder):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert models.describe() == {**tiny, "features": "reader", "aligner_reads": "lipreader"}


def test_griffin_lim_and_no_asr_load_no_weights(tiny: dict[str, str]) -> None:
    models = SynthModels.load(tiny["lipreader"], tiny["melgen"], tiny["identity"], asr=None,
                              vocoder="griffin-lim")
    assert models.vocoder is None and models.asr is None
    assert models.describe()["vocoder"] == "griffin-lim" and models.describe()["asr"] == "none"
    result = Synthesizer(models, SynthParams(nfe=2)).synthesize(features(10))
    assert len(result.wav) == 10 * SAMPLES_PER_FRAME and np.isfinite(result.wav).all()


@pytest.mark.parametrize("kind", ["lipreader", "identity"])
def test_a_melgen_trained_on_other_weights_is_refused_unless_not_strict(
        kind: str, tiny: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lipreader, identity = checkpoint.load(tiny["lipreader"]).model, checkpoint.load(tiny["identity"]).model
    summary = {**melgen_summary(lipreader, identity), f"{kind}_digest": "0123456789abcdef"}
    other = save(tmp_path / "melgen.pt", tiny_melgen(), "melgen", summary)
    paths = {**tiny, "melgen": other}
    with pytest.raises(ModelMismatch, match=f"trained on {kind} weights 0123456789abcdef.*{tiny[kind]}"):
        SynthModels.load(**paths)
    with caplog.at_level(logging.WARNING, logger="engines.synth.models"):
        models = SynthModels.load(**paths, strict=False)
    assert isinstance(models.melgen, MelGen)
    assert any("0123456789abcdef" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_melgen_whose_condition_the_models_cannot_make_is_refused_even_when_not_strict(
        tiny: dict[str, str], tmp_path: Path) -> None:
    lipreader, identity = checkpoint.load(tiny["lipreader"]).model, checkpoint.load(tiny["identity"]).model
    visual = save(tmp_path / "visual.pt", tiny_melgen(), "melgen",
                  melgen_summary(lipreader, identity, "visual"))  # 16 visual + 16 identity, not 48
    with pytest.raises(ModelMismatch, match=r"48 condition values.*'visual' features.*make 32"):
        SynthModels.load(**{**tiny, "melgen": visual}, strict=False)
    unknown = save(tmp_path / "unknown.pt", tiny_melgen(), "melgen",
                   melgen_summary(lipreader, identity, "lips"))
    with pytest.raises(ModelMismatch, match="'lips'"):
        SynthModels.load(**{**tiny, "melgen": unknown}, strict=False)


def test_a_checkpoint_of_the_wrong_kind_is_refused(tiny: dict[str, str]) -> None:
    with pytest.raises(checkpoint.CheckpointError, match="not a 'melgen'"):
        SynthModels.load(**{**tiny, "melgen": tiny["vocoder"]})


# ---------------------------------------------------------------- synthesis


def test_synthesis_gives_finite_speech_of_the_clips_length_and_repeats_with_its_seed(
        models: SynthModels) -> None:
    clip = features(30)
    result = Synthesizer(models, SynthParams(seed=3)).synthesize(clip)
    assert result.wav.dtype == np.float32 and result.wav.shape == (30 * SAMPLES_PER_FRAME,)
    assert np.isfinite(result.wav).all() and np.abs(result.wav).max() > 0
    assert isinstance(result.text, str) and result.text
    assert result.mel.shape == (80, 4 * 30) and result.mel.abs().max() <= 1.0
    assert result.duration_s == pytest.approx(30 / 25)
    assert set(result.seconds) == {"frame", "reader", "decode", "identity", "mel", "vocoder"}
    again = Synthesizer(models, SynthParams(seed=3)).synthesize(clip)
    assert np.array_equal(again.wav, result.wav) and again.text == result.text
    other = Synthesizer(models, SynthParams(seed=4)).synthesize(clip)
    assert not np.array_equal(other.wav, result.wav)


def test_asr_guidance_changes_the_mel_and_does_nothing_without_text(models: SynthModels) -> None:
    clip = features(20)
    guided = Synthesizer(models, SynthParams(w2=1.5)).synthesize(clip)
    plain = Synthesizer(models, SynthParams(w2=0.0)).synthesize(clip)
    assert guided.text == plain.text and guided.text  # the mel does not change the lip-read text
    assert np.isfinite(plain.wav).all() and len(plain.wav) == len(guided.wav)
    assert not torch.equal(guided.mel, plain.mel)

    synthesizer = Synthesizer(models, SynthParams(w2=1.5))
    reading = synthesizer.read(synthesizer.frame_features(clip.mouth_rois, clip.lip_geometry))
    cond = synthesizer.condition(reading.features, synthesizer.identity(clip.face_crop))
    no_guidance = Synthesizer(models, SynthParams(w2=0.0))
    assert torch.equal(synthesizer.generate(cond, ""), no_guidance.generate(cond, ""))
    assert not torch.equal(synthesizer.generate(cond, "bin blue"), no_guidance.generate(cond, "bin blue"))


def test_guidance_can_steer_toward_a_given_text_and_the_result_keeps_the_lip_read_one(
        models: SynthModels) -> None:
    clip = features(20)
    synthesizer = Synthesizer(models, SynthParams(w2=1.5))
    own = synthesizer.synthesize(clip)
    same = synthesizer.synthesize(clip, guide_text=own.text)
    other = synthesizer.synthesize(clip, guide_text="Place green at Z nine!")
    assert torch.equal(same.mel, own.mel)
    assert not torch.equal(other.mel, own.mel)
    assert other.text == own.text  # what was read from the lips, whatever guidance was told


def test_grid_decoding_gives_a_sentence_of_the_grid_grammar(models: SynthModels) -> None:
    result = Synthesizer(models, SynthParams(decode="grid", nfe=2)).synthesize(features(75))
    assert result.text in GRID_GRAMMAR, result.text


@pytest.fixture(scope="module")
def motion_reader(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny lip reader that reads each clip's motion whole (normalise clip)."""
    torch.manual_seed(1)
    config = dataclasses.replace(TINY_LIPREADER, frontend=dataclasses.replace(TINY_LIPREADER.frontend,
                                                                              normalise="clip"))
    return save(tmp_path_factory.mktemp("motion") / "reader.pt", LipReader(config), "lipreader")


def test_a_text_reader_reads_the_offline_text_and_the_lip_reader_still_feeds_melgen(
        tiny: dict[str, str], motion_reader: str) -> None:
    clip = features(40)
    plain = Synthesizer(SynthModels.load(**tiny), SynthParams(decode="greedy", nfe=2))
    with_reader = SynthModels.load(**tiny, text_reader=motion_reader)
    both = Synthesizer(with_reader, SynthParams(decode="greedy", nfe=2))
    read = both.models.text_reader(*both._inputs(clip.mouth_rois, clip.lip_geometry)).log_probs[0]
    own, theirs = plain.synthesize(clip), both.synthesize(clip)
    assert theirs.text == decode(greedy_decode(read)) != own.text
    assert torch.equal(theirs.mel, own.mel)  # without a prior the text only names what was read
    assert "text_reader" in theirs.seconds


def test_onnxruntime_runs_every_network_and_speaks_like_pytorch(models: SynthModels, tmp_path: Path) -> None:
    clip = features(25)
    onnx = Synthesizer(models, SynthParams(backend="onnxruntime"), cache_dir=str(tmp_path), threads=1)
    graphs = ("frame", "temporal", "reader", "denoiser", "vocoder")
    assert onnx.backends == dict.fromkeys(graphs, "onnxruntime")
    sessions = [g._session for g in onnx._graph.values() if isinstance(g, OnnxGraph)]
    assert len(sessions) >= 3
    assert {s.get_session_options().intra_op_num_threads for s in sessions} == {1}
    want = Synthesizer(models, SynthParams()).synthesize(clip)
    got = onnx.synthesize(clip)
    assert got.text == want.text
    torch.testing.assert_close(got.mel, want.mel, atol=1e-4, rtol=0)
    scale = float(np.abs(want.wav).max())
    assert np.abs(got.wav - want.wav).max() <= 1e-4 * scale
    # guidance through the denoiser needs MelGen's gradient: it runs that part in PyTorch
    through = SynthParams(w2=0.1, asr_input="x0_denoiser")
    guided = Synthesizer(models, dataclasses.replace(through, backend="onnxruntime"), cache_dir=str(tmp_path))
    torch.testing.assert_close(guided.synthesize(clip).mel, Synthesizer(models, through).synthesize(clip).mel,
                               atol=1e-4, rtol=0)


def test_onnxruntime_runs_the_phone_aligner_and_mel_prior_too(
        tiny: dict[str, str], tiny_phones: dict[str, str], tmp_path: Path) -> None:
    phones, clip = SynthModels.load(**tiny, **tiny_phones), features(25)
    onnx = Synthesizer(phones, SynthParams(backend="onnxruntime"), cache_dir=str(tmp_path))
    assert onnx.backends["aligner"] == onnx.backends["prior"] == "onnxruntime"
    got, want = onnx.synthesize(clip), Synthesizer(phones, SynthParams()).synthesize(clip)
    assert got.spoken == want.spoken == "the mel prior, speaking the phones read on the lips"
    torch.testing.assert_close(got.mel, want.mel, atol=1e-4, rtol=0)


def test_reading_in_two_windows_with_the_carried_state_equals_reading_the_whole_clip(
        models: SynthModels) -> None:
    synthesizer = Synthesizer(models)
    clip = features(30)
    frames = synthesizer.frame_features(clip.mouth_rois, clip.lip_geometry)
    whole = synthesizer.read(frames)
    past, future = synthesizer.receptive_field()
    assert past > 0 and future > 0
    cut = 13
    first = synthesizer.read(frames[:, :cut + future], count=cut)  # holds the future of output cut − 1
    second = synthesizer.read(frames[:, cut - past:], first.state, start=past)  # and the past of output cut
    torch.testing.assert_close(torch.cat((first.log_probs, second.log_probs)), whole.log_probs)
    torch.testing.assert_close(torch.cat((first.features, second.features), dim=1), whole.features)
    torch.testing.assert_close(second.state, whole.state)
    # the check can fail: a second window without the past differs
    blind = synthesizer.read(frames[:, cut:], first.state)
    assert not torch.allclose(blind.log_probs, whole.log_probs[cut:], atol=1e-4)


def test_unseen_frames_are_silent(models: SynthModels) -> None:
    valid = np.ones(12, bool)
    valid[[0, 5, 6, 11]] = False
    gate = np.repeat(valid, SAMPLES_PER_FRAME)
    wav = np.ones(12 * SAMPLES_PER_FRAME, np.float32)
    silenced = silence_unseen(wav, valid)
    assert np.array_equal(silenced, gate.astype(np.float32)) and (wav == 1).all()  # the input is kept

    seen = Synthesizer(models).synthesize(features(12))
    partly = Synthesizer(models).synthesize(features(12, valid=valid))
    assert np.array_equal(partly.wav, np.where(gate, seen.wav, 0.0).astype(np.float32))


def test_a_clip_whose_mouth_never_moves_is_silence_without_text(models: SynthModels) -> None:
    """A reader of motion normalises a still face's noise into motion and reads sentences into it: offline,
    a clip whose lip opening never ranges over still_threshold is silence with a note, as a stream's hop
    is."""
    still = features(20)
    still.lip_geometry[:, OPENING] = 0.2 + 0.001 * np.sin(np.arange(20))
    result = Synthesizer(models).synthesize(still)
    assert result.text == "" and not result.wav.any() and len(result.wav) == 20 * SAMPLES_PER_FRAME
    assert result.mel.shape == (80, 80) and "the mouth never moves" in result.note and not result.seconds
    unseen = np.zeros(20, bool)  # nothing seen: nothing moved either
    assert "the mouth never moves" in Synthesizer(models).synthesize(features(20, valid=unseen)).note
    talking = features(20)  # the helper's geometry is noise of unit scale: a mouth that moves
    spoken = Synthesizer(models).synthesize(talking)
    assert spoken.note == "" and spoken.wav.any() and "mel" in spoken.seconds
    assert Synthesizer(models, SynthParams(still_threshold=10.0)).synthesize(talking).text == ""


def test_utterances_split_in_the_middle_of_each_pause_with_moving_frames_on_both_sides() -> None:
    moving = np.sin(np.arange(1.0, 11.0))
    opening = np.concatenate([np.zeros(5), moving, np.zeros(16), moving, np.zeros(6), moving, np.zeros(20)])
    # 16 still frames split (in their middle, frame 23), 6 only under a pause of 6; still ends never do
    assert utterance_spans(opening, 16, 0.01) == [(0, 23), (23, 77)]
    assert utterance_spans(opening, 6, 0.01) == [(0, 23), (23, 44), (44, 77)]
    assert utterance_spans(opening, 17, 0.01) == utterance_spans(opening, 0, 0.01) == [(0, 77)]
    assert utterance_spans(np.zeros(40), 16, 0.01) == [(0, 40)]  # a still video is one (silent) utterance
    assert utterance_spans(opening, 16, 0.0) == [(0, 77)]  # nothing is still under a line of 0


def test_a_video_is_split_at_its_pauses_and_each_utterance_read_and_spoken_on_its_own(
        models: SynthModels) -> None:
    first, pause, second = features(30, seed=1), features(20, seed=2), features(25, seed=3)
    pause.lip_geometry[:, OPENING] = 0.2  # 0.8 s of a still mouth
    video = Features(*(np.concatenate([getattr(f, k) for f in (first, pause, second)])
                       for k in ("mouth_rois", "lip_geometry")), first.face_crop)
    synth = Synthesizer(models, SynthParams(seed=3))
    result = synth.synthesize(video)
    (start, one), (middle, two) = result.parts
    assert (start, middle) == (0.0, 40 / 25)  # the pause's middle
    assert np.array_equal(result.wav, np.concatenate([one.wav, two.wav])) and len(result.wav) == 75 * 640
    assert result.mel.shape == (80, 4 * 75) and result.text == f"{one.text} {two.text}" and one.text
    assert result.confidence == min(one.confidence, two.confidence)
    assert result.seconds == pytest.approx({k: one.seconds.get(k, 0) + two.seconds.get(k, 0)
                                            for k in result.seconds})
    alone = synth.synthesize(video.part(40, 75))  # each utterance is what it would be on its own
    assert alone.text == two.text and np.array_equal(alone.wav, two.wav) and alone.parts == []
    for params in (SynthParams(seed=3, pause_s=0), SynthParams(seed=3, pause_s=1.0)):  # one utterance
        whole = Synthesizer(models, params).synthesize(video)
        assert whole.parts == [] and len(whole.wav) == len(result.wav)
    # against a reference text (an evaluation's diagnostic row) a video is one utterance
    assert synth.synthesize(video, guide_text="bin blue at f two now").parts == []


def test_the_text_comes_with_the_readers_confidence_and_a_doubt_when_it_is_low(models: SynthModels) -> None:
    clip = features(20)
    sure, doubtful = (Synthesizer(models, SynthParams(low_confidence=line)) for line in (0.0, 1.0))
    result = sure.synthesize(clip)
    assert result.text and 0.0 < result.confidence < 1.0
    assert result.confidence == doubtful.synthesize(clip).confidence
    assert sure.doubt(result.confidence) == ""
    doubt = doubtful.doubt(result.confidence)
    assert f"low confidence ({result.confidence:.2f} < low_confidence 1.00)" in doubt
    # by default each decoder has its own line: a grammar's forced sentences score lower than open text
    beam, grid = (Synthesizer(models, SynthParams(decode=d)) for d in ("beam", "grid"))
    assert beam.low_line() == beam.low_line("beam") == LOW_CONFIDENCE["beam"] == grid.low_line("beam")
    assert grid.low_line() == LOW_CONFIDENCE["grid"] < LOW_CONFIDENCE["greedy"]
    between = (LOW_CONFIDENCE["grid"] + LOW_CONFIDENCE["beam"]) / 2
    assert grid.doubt(between) == "" and "< low_confidence 0.65" in grid.doubt(between, "greedy")
    assert doubtful.low_line("grid") == 1.0  # a line set by hand holds for every decoder
    auto = Synthesizer(models)  # the default: its texts say which decoder read them; itself, grid's line
    assert auto.params.decode == "auto" and auto.low_line() == LOW_CONFIDENCE["grid"]
    assert auto.synthesize(clip).decoder in ("grid", "beam")


def test_features_refuse_bad_lip_geometry_and_lengths() -> None:
    good = features(5)
    lips = good.lip_geometry.copy()
    lips[3, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        Features(good.mouth_rois, lips, good.face_crop)
    with pytest.raises(ValueError, match="equal T"):
        Features(good.mouth_rois, good.lip_geometry[:4], good.face_crop)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        Features(good.mouth_rois[..., None], good.lip_geometry, good.face_crop)
    with pytest.raises(ValueError, match="no frames"):
        Features(good.mouth_rois[:0], good.lip_geometry[:0], good.face_crop)
    tracked = {"mouth_rois": good.mouth_rois, "lip_geometry": good.lip_geometry, "face_crop": good.face_crop,
               "valid": np.ones(5, bool)}
    assert Features.from_tracks(tracked).valid is tracked["valid"]


@pytest.mark.parametrize(("change", "message"), [
    ({"nfe": 0}, "nfe must be >= 1"),
    ({"w1": -0.5}, "guidance weights must be >= 0"),
    ({"w2": -1.0}, "guidance weights must be >= 0"),
    ({"sampler": "ddim", "nfe": 60}, "few-step sampler"),
    ({"prior_t": 400}, "prior_t must be in"),
    ({"prior_mode": "refine", "prior_t": 2, "nfe": 4}, "leave room for nfe 4"),
    ({"still_threshold": -0.1}, "still_threshold and pause_s must be >= 0"),
    ({"pause_s": -1.0}, "still_threshold and pause_s must be >= 0"),
])
def test_params_refuse_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SynthParams(**change)
    assert SynthParams(sampler="ddpm", nfe=400).nfe == 400  # the reference sampler takes any step count


# ---------------------------------------------------------------- the mel prior


@pytest.fixture(scope="module")
def tiny_phones(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny phone aligner on the tiny lip reader's "reader" features and a mel prior on it."""
    folder = tmp_path_factory.mktemp("phones")
    torch.manual_seed(1)
    return save_phone_models(folder, checkpoint.load(tiny["lipreader"]).model,
                             checkpoint.load(tiny["identity"]).model)


# the prior speaks the text in these tests (the default speaks it only when the GRID grammar read it); the
# tiny aligner is untrained: its timings need not look like speech's, so they let the prior speak whatever
# they look like (max_short_phones 1), but the one on implausible timings
ANY_TIMING = {"max_short_phones": 1.0, "prior_speaks": "text"}


def test_the_prior_speaks_the_lip_read_text_or_starts_melgen_from_it_offline(
        tiny: dict[str, str], tiny_phones: dict[str, str], models: SynthModels) -> None:
    phones = SynthModels.load(**tiny, **tiny_phones)
    clip = features(20)
    spoken = Synthesizer(phones, SynthParams(decode="greedy", **ANY_TIMING)).synthesize(clip, "bin blue")
    synth = Synthesizer(phones, SynthParams(**ANY_TIMING))
    reading = synth.read(synth.frame_features(clip.mouth_rois, clip.lip_geometry))
    identity = synth.identity(clip.face_crop)
    posteriors = synth.phone_posteriors(reading)
    viterbi = synth.timing(posteriors, "bin blue")
    paced = synth.pace(posteriors, "bin blue", viterbi)
    assert paced.shape == viterbi.shape and not np.array_equal(paced, viterbi)
    expected = synth.speak(paced, identity)  # spoken paced by the phones' typical lengths
    assert expected.shape == (1, 80, 80) and spoken.note == ""
    torch.testing.assert_close(spoken.mel, expected[0])
    unpaced = Synthesizer(phones, SynthParams(decode="greedy", duration_weight=0, **ANY_TIMING))
    torch.testing.assert_close(unpaced.synthesize(clip, "bin blue").mel, synth.speak(viterbi, identity)[0])
    assert not torch.allclose(synth.speak(synth.timing(posteriors, "set red"), identity), expected)
    assert synth.timing(posteriors, " ") is None  # nothing read: MelGen speaks from the lips
    assert len(spoken.wav) == 20 * SAMPLES_PER_FRAME and np.isfinite(spoken.wav).all()

    off = Synthesizer(phones, SynthParams(prior_mode="off", nfe=2)).synthesize(clip)
    plain = Synthesizer(models, SynthParams(nfe=2)).synthesize(clip)
    np.testing.assert_array_equal(off.wav, plain.wav)  # off: MelGen on the lips alone, as without a prior
    refined = Synthesizer(phones, SynthParams(prior_mode="refine", nfe=2, **ANY_TIMING)).synthesize(clip)
    assert np.isfinite(refined.wav).all() and not np.allclose(refined.wav, off.wav)
    assert set(refined.seconds) >= {"prior", "mel"} and "mel" not in spoken.seconds


def test_the_prior_speaks_each_steps_most_likely_phone_unless_the_grid_grammar_read_the_text_surely(
        tiny: dict[str, str], tiny_phones: dict[str, str]) -> None:
    phones = SynthModels.load(**tiny, **tiny_phones)
    clip = features(20)
    synth = Synthesizer(phones, SynthParams(max_short_phones=1.0))
    reading = synth.read(synth.frame_features(clip.mouth_rois, clip.lip_geometry))
    identity = synth.identity(clip.face_crop)
    posteriors = synth.phone_posteriors(reading)
    steps = synth.speak(posteriors.argmax(axis=-1), identity)[0]
    for params in ({"decode": "beam"}, {"decode": "greedy"}, {"decode": "grid", "prior_speaks": "phones"}):
        spoken = Synthesizer(phones, SynthParams(max_short_phones=1.0, **params)).synthesize(clip, "bin blue")
        torch.testing.assert_close(spoken.mel, steps)  # whatever the text
        assert spoken.note == "" and "mel" not in spoken.seconds and spoken.spoken.endswith("on the lips")
    grid = Synthesizer(phones, SynthParams(decode="grid", max_short_phones=1.0))
    text = grid.pace(posteriors, "bin blue", grid.timing(posteriors, "bin blue"))
    torch.testing.assert_close(grid.synthesize(clip, "bin blue").mel, grid.speak(text, identity)[0])
    # the reader's own GRID sentence, read surely or not: a doubted one is likely no GRID sentence at all
    trusted, doubted = (Synthesizer(phones, SynthParams(decode="grid", max_short_phones=1.0,
                                                        low_confidence=line)).synthesize(clip)
                        for line in (0.0, 1.0))
    assert trusted.text == doubted.text and trusted.spoken.endswith("the text")
    assert doubted.spoken.endswith("on the lips")
    torch.testing.assert_close(doubted.mel, steps)


@pytest.fixture(scope="module")
def deaf_phones(tiny: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An aligner that hears silence everywhere, and a prior on it: it crams any text's phones into single
    10-ms steps, as no speech is timed."""
    folder = tmp_path_factory.mktemp("deaf")
    aligner = PhoneAligner(PhoneAlignerConfig(feature_dim=32, hidden=8, layers=1))
    with torch.no_grad():
        aligner.out.weight.zero_()
        aligner.out.bias.zero_()
        aligner.out.bias.view(aligner.config.steps_per_frame, -1)[:, SILENCE] = 10.0
    return save_phone_models(folder, checkpoint.load(tiny["lipreader"]).model,
                             checkpoint.load(tiny["identity"]).model, aligner)


def test_melgen_speaks_from_the_lips_when_the_aligner_times_no_speech(
        tiny: dict[str, str], deaf_phones: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    models = SynthModels.load(**tiny, **deaf_phones)
    clip = features(20)
    with caplog.at_level(logging.INFO, logger="engines.synth.engine"):
        fell_back = Synthesizer(models, SynthParams(nfe=2, prior_speaks="text")).synthesize(clip, "bin blue")
    assert "100% of the text's phones at 20 ms or less" in fell_back.note
    assert fell_back.note in caplog.text
    off = Synthesizer(models, SynthParams(nfe=2, prior_mode="off")).synthesize(clip, "bin blue")
    np.testing.assert_array_equal(fell_back.wav, off.wav)
    spoken = Synthesizer(models, SynthParams(nfe=2, **ANY_TIMING)).synthesize(clip, "bin blue")
    assert spoken.note == "" and not np.allclose(spoken.wav, off.wav)
    with pytest.raises(ValueError, match="max_short_phones"):
        SynthParams(max_short_phones=1.5)


def test_grid_decoding_re_ranks_whole_sentences_by_the_aligners_phones(
        tiny: dict[str, str], tiny_phones: dict[str, str]) -> None:
    phones = SynthModels.load(**tiny, **tiny_phones)
    log_probs = torch.from_numpy(frames_for("bin blue at f two now")).float()
    features = torch.randn(1, len(log_probs), 32, generator=torch.Generator().manual_seed(0))
    whole = [h.text for h in beam_search(log_probs, 16, GRID_GRAMMAR) if h.complete]
    posteriors = phones.aligner.posteriors(features[0])
    scores = [text_log_likelihood(posteriors, text) for text in whole]
    by_phones = whole[int(np.argmax(scores))]
    assert by_phones != whole[0]  # else the test shows nothing
    # a huge weight: the aligner alone ranks the beam's whole sentences
    assert Synthesizer(phones, SynthParams(decode="grid", phone_weight=1e6)).decode(log_probs, posteriors) \
        .text == by_phones
    for params, given in ((SynthParams(decode="grid", phone_weight=0), posteriors),
                          (SynthParams(decode="grid", phone_weight=1e6), None)):  # streaming: no posteriors
        assert Synthesizer(phones, params).decode(log_probs, given).text == whole[0]
    with pytest.raises(ValueError, match="phone_weight"):
        SynthParams(phone_weight=-1)


def test_auto_decoding_reads_grid_commands_by_the_grammar_and_other_speech_openly(
        tiny: dict[str, str]) -> None:
    synth = Synthesizer(SynthModels.load(**tiny), SynthParams(decode="auto"))
    command = synth.decode(torch.from_numpy(frames_for("bin blue at f two now")).float())
    assert command.text == "bin blue at f two now" and command.decoder == "grid"
    assert command.confidence >= LOW_CONFIDENCE["grid"]
    # the grammar forces some command out of other speech, read with low confidence: the open beam reads it
    forced = Synthesizer(SynthModels.load(**tiny), SynthParams(decode="grid"))
    lips = torch.from_numpy(frames_for("where is the door")).float()
    assert forced.decode(lips).confidence < LOW_CONFIDENCE["grid"]
    speech = synth.decode(lips)
    assert (speech.text, speech.decoder) == ("where is the door", "beam")
    assert not synth.prior_speaks_text(speech) and synth.prior_speaks_text(command)


def test_auto_decoding_keeps_the_start_of_a_command_read_less_surely_than_a_whole_one(
        tiny: dict[str, str]) -> None:
    synth = Synthesizer(SynthModels.load(**tiny), SynthParams(decode="auto"))
    start = torch.from_numpy(frames_for("bin blue at", {0: {"a": 0.3, "e": 0.3}})).float()  # "b" unsure
    partial = synth.decode(start, whole=False)
    assert (partial.text, partial.decoder) == ("bin blue at", "grid")
    assert GRID_START_LINE <= partial.confidence < LOW_CONFIDENCE["grid"]
    assert synth.decode(start).decoder == "beam"  # read as a whole utterance, too unsure for a command
    other = synth.decode(torch.from_numpy(frames_for("where is")).float(), whole=False)
    assert (other.text, other.decoder) == ("where is", "beam")  # the start of no command
    # A word in progress that only one word of its slot begins so is shown whole, with the confidence in
    # what the frames said.
    lips = torch.from_numpy(frames_for("lay whi")).float()
    said = synth.decode(lips, whole=False)
    assert (said.text, said.decoder) == ("lay white", "grid")
    assert said.confidence == text_confidence(lips, "lay whi") > text_confidence(lips, "lay white")


def test_an_aligner_trained_on_the_text_reader_times_the_text_on_its_features(
        tiny: dict[str, str], motion_reader: str, tmp_path: Path) -> None:
    phones = save_phone_models(tmp_path, checkpoint.load(motion_reader).model,
                               checkpoint.load(tiny["identity"]).model)
    models = SynthModels.load(**tiny, **phones, text_reader=motion_reader)
    assert models.aligner_reads == "text_reader" and models.describe()["aligner_reads"] == "text_reader"
    synth = Synthesizer(models, SynthParams(**ANY_TIMING))
    clip = features(40)
    reading = synth.read(synth.frame_features(clip.mouth_rois, clip.lip_geometry))
    theirs = synth.text_reading(clip, reading)
    assert theirs.features.shape == reading.features.shape
    assert not torch.allclose(theirs.features, reading.features)
    posteriors = synth.phone_posteriors(theirs)
    result = synth.synthesize(clip, "bin blue")
    assert result.text == synth.decode(theirs.log_probs, posteriors).text  # re-ranked on its reader's phones
    timed = synth.pace(posteriors, "bin blue", synth.timing(posteriors, "bin blue"))
    torch.testing.assert_close(result.mel, synth.speak(timed, synth.identity(clip.face_crop))[0])
    with pytest.raises(ModelMismatch, match=r"trained on lipreader weights .*\(as the text reader"):
        SynthModels.load(**tiny, **phones)  # its reader is not loaded: the message says how to pair them


def test_an_aligner_or_prior_trained_on_other_weights_is_refused(
        tiny: dict[str, str], tiny_phones: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ModelMismatch, match="give both or neither"):
        SynthModels.load(**tiny, aligner=tiny_phones["aligner"])
    other = save(tmp_path / "prior.pt", MelPrior(MelPriorConfig(identity_dim=16, channels=8, dilations=(1,))),
                 "prior", {"aligner_digest": "0123456789abcdef"})
    with pytest.raises(ModelMismatch, match="trained on aligner weights 0123456789abcdef"):
        SynthModels.load(**tiny, aligner=tiny_phones["aligner"], prior=other)
    wide = save(tmp_path / "wide.pt", MelPrior(MelPriorConfig(identity_dim=128, channels=8, dilations=(1,))),
                "prior")
    with pytest.raises(ModelMismatch, match="128 identity values"):
        SynthModels.load(**tiny, aligner=tiny_phones["aligner"], prior=wide, strict=False)


# ---------------------------------------------------------------- voxsight lip2speech


@needs_grid
def test_lip2speech_speaks_the_lip_read_text_with_an_aligner_and_prior(
        tiny: dict[str, str], tiny_phones: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.wav"
    phones = ["--aligner", tiny_phones["aligner"], "--prior", tiny_phones["prior"], "--max-short-phones", "1"]
    assert lip2speech_main([str(GRID_VIDEOS[0]), "-o", str(out), *model_args(tiny), *phones]) == 0
    printed = capsys.readouterr().out
    assert "prior" in printed  # its compute time is reported
    assert "spoken by: the mel prior, speaking the phones read on the lips" in printed
    wav, _ = soundfile.read(out, dtype="float32")
    assert len(wav) == sum(1 for _ in decode_video(GRID_VIDEOS[0])) * SAMPLES_PER_FRAME
    assert lip2speech_main([str(GRID_VIDEOS[0]), "-o", str(out), *model_args(tiny), *phones[:2]]) == 1
    assert "both or neither" in capsys.readouterr().err


@needs_grid
def test_lip2speech_and_the_eval_system_say_when_melgen_speaks_instead_of_the_prior(
        tiny: dict[str, str], deaf_phones: dict[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    # the text spoken, read surely or not (auto would speak the tiny reader's unsure text's phones)
    phones = ["--aligner", deaf_phones["aligner"], "--prior", deaf_phones["prior"], "--nfe", "2",
              "--decode", "grid", "--prior-speaks", "text"]
    assert lip2speech_main([str(GRID_VIDEOS[0]), "-o", str(tmp_path / "out.wav"), *model_args(tiny),
                            *phones]) == 0
    printed = capsys.readouterr().out
    assert "note: the aligner times 100% of the text's phones at 20 ms or less" in printed
    assert "mel " in printed and "spoken by: MelGen, from the lips" in printed  # MelGen spoke
    video = GRID_VIDEOS[0]
    options = ",".join(f"{kind}={path}" for kind, path in {**tiny, **NO_PRIOR, **deaf_phones}.items())
    for low, notes in ((0.0, 1), (1.0, 2)):  # no confidence is low, or every one is
        system = make_system(f"engines.synth.systems:lip2speech,{options},nfe=2,decode=grid,"
                             f"prior_speaks=text,low_confidence={low}")
        system.generate(Clip(video.stem, audio=video, video=video))
        # for the eval report
        assert len(system.notes) == notes and "cannot follow these lips" in system.notes[0]
    assert "the lips were read with low confidence" in system.notes[1]


@needs_grid
def test_lip2speech_writes_speech_of_the_videos_length_and_prints_the_text(
        tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = GRID_VIDEOS[0]
    out = tmp_path / "speech" / "out.wav"
    assert lip2speech_main([str(video), "-o", str(out), *model_args(tiny), "--nfe", "2"]) == 0
    printed = capsys.readouterr().out
    assert "lip-read: " in printed and "face seen in" in printed
    wav, rate = soundfile.read(out, dtype="float32")
    frames = sum(1 for _ in decode_video(video))
    assert rate == 16000 and wav.ndim == 1 and len(wav) == frames * SAMPLES_PER_FRAME
    assert np.isfinite(wav).all()


def test_lip2speech_reads_a_video_of_two_sentences_one_utterance_at_a_time(
        tiny: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = list(decode_video(REPO / "launch" / "media" / "lip2speech_sample.mp4"))
    video = tmp_path / "twice.mp4"  # the clip, its last frame held 1 s, the clip again
    write_mp4(video, np.stack([*frames, *[frames[-1]] * 25, *frames]), np.zeros(0, np.float32), crf=18)
    wav_path = tmp_path / "out.wav"
    assert lip2speech_main([str(video), "-o", str(wav_path), *model_args(tiny), "--nfe", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    parts = [line for line in printed if line.startswith("  ") and " s: " in line]
    assert len(parts) == 2 and parts[0].split()[0].startswith("0.00–")
    wav, _ = soundfile.read(wav_path, dtype="float32")
    assert len(wav) == (2 * len(frames) + 25) * SAMPLES_PER_FRAME
    assert lip2speech_main([str(video), "-o", str(wav_path), *model_args(tiny), "--nfe", "2",
                            "--pause-s", "0"]) == 0
    assert " s: " not in capsys.readouterr().out  # one utterance: no parts listed


def test_lip2speech_help_lists_every_setting(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        lip2speech_main(["--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "--prior-mode" in printed and "--aligner" in printed and "--text-reader" in printed
    assert "15.7 % against 19.0 %" in " ".join(printed.split())  # help that quotes figures renders
    # the offline defaults are a pair: the aligner was trained on the text reader
    defaults = lip2speech_parser().parse_args(["clip.mp4", "-o", "out.wav"])
    assert (defaults.text_reader, defaults.aligner) == (DEFAULT_TEXT_READER, DEFAULT_ALIGNER)


def test_lip2speech_speaks_in_the_voice_of_another_face_when_asked(tiny: dict[str, str], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    media = REPO / "launch" / "media"
    out = tmp_path / "out.wav"
    args = [str(media / "lip2speech_sample.mp4"), "-o", str(out), *model_args(tiny), "--nfe", "2"]
    assert lip2speech_main([*args, "--voice", str(media / "lip2speech_sample.mp4")]) == 0
    assert f"in the voice of {media / 'lip2speech_sample.mp4'}" in capsys.readouterr().out
    assert lip2speech_main([*args, "--voice", str(media / "pattern.mp4")]) == 1
    assert f"voice {media / 'pattern.mp4'}: no face to take a voice from" in capsys.readouterr().err


def test_lip2speech_says_clearly_what_is_wrong(tiny: dict[str, str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out.wav"
    missing = tmp_path / "nothing.mp4"
    assert lip2speech_main([str(missing), "-o", str(out), *model_args(tiny)]) == 1
    assert f"{missing}: no such file" in capsys.readouterr().err

    not_video = tmp_path / "text.mp4"
    not_video.write_text("not a video")
    assert lip2speech_main([str(not_video), "-o", str(out), *model_args(tiny)]) == 1
    assert "voxsight lip2speech:" in capsys.readouterr().err

    pattern = REPO / "launch" / "media" / "pattern.mp4"
    assert lip2speech_main([str(pattern), "-o", str(out), *model_args(tiny), "--nfe", "2"]) == 1
    assert "no face" in capsys.readouterr().err
    assert not out.exists()


def test_lip2speech_refuses_a_file_without_video(tiny: dict[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    audio = tmp_path / "speech.wav"
    soundfile.write(audio, np.zeros(1600, np.float32), 16000)
    assert lip2speech_main([str(audio), "-o", str(tmp_path / "out.wav"), *model_args(tiny)]) == 1
    assert "video" in capsys.readouterr().err


# ---------------------------------------------------------------- eval systems


@needs_grid
def test_the_lip2speech_system_speaks_each_clip_and_records_its_text(tiny: dict[str, str],
                                                                     tmp_path: Path) -> None:
    video = GRID_VIDEOS[0]
    clip = Clip(video.stem, audio=video, video=video)
    options = ",".join(f"{kind}={path}" for kind, path in {**tiny, **NO_PRIOR}.items())
    system = make_system(f"engines.synth.systems:lip2speech,{options},nfe=2,decode=grid")
    wav = system.generate(clip)
    frames = sum(1 for _ in decode_video(video))
    assert wav.dtype == np.float32 and wav.shape == (frames * SAMPLES_PER_FRAME,) and np.isfinite(wav).all()
    assert system.texts[clip.id] in GRID_GRAMMAR
    assert system.speech_s == pytest.approx(frames / 25) and system.seconds["mel"] > 0

    cache = tmp_path / "features"
    cached = make_system(f"engines.synth.systems:lip2speech,{options},nfe=2,decode=grid,cache={cache}")
    assert np.array_equal(cached.generate(clip), wav)  # the features the cache made are the tracker's
    assert len(list(cache.rglob("*.npz"))) == 1
    assert np.array_equal(cached.generate(clip), wav)  # and read back from it


def test_the_lip2speech_system_can_speak_every_clip_in_one_faces_voice(tiny: dict[str, str],
                                                                       tmp_path: Path) -> None:
    from engines.data.mux import write_mp4
    from engines.synth.systems import lip2speech

    sample = REPO / "launch" / "media" / "lip2speech_sample.mp4"
    frames = np.stack(list(decode_video(sample)))
    mirrored = write_mp4(tmp_path / "mirrored.mp4", np.ascontiguousarray(frames[:, :, ::-1]),
                         np.zeros(len(frames) * SAMPLES_PER_FRAME, np.float32), crf=18)
    clip = Clip("sample", audio=sample, video=sample)
    options = {**tiny, **NO_PRIOR, "nfe": 2}
    own = lip2speech(**options).generate(clip)

    in_its_own = lip2speech(**options, voice=str(sample))
    assert f"voice='{sample}'" in in_its_own.about
    assert np.array_equal(in_its_own.generate(clip), own)  # the clip's own face: its own voice
    in_another = lip2speech(**options, voice=str(mirrored))
    assert not np.array_equal(in_another.generate(clip), own)  # the same lips in another face's voice
    assert in_another.texts[clip.id] == in_its_own.texts[clip.id]

    faceless = REPO / "launch" / "media" / "pattern.mp4"
    with pytest.raises(ValueError, match=f"voice {faceless}: no face to take a voice from"):
        lip2speech(**options, voice=str(faceless))
    with pytest.raises(ValueError, match=f"voice {tmp_path / 'nobody.jpg'}: no such file"):
        lip2speech(**options, voice=str(tmp_path / "nobody.jpg"))
    (tmp_path / "text.jpg").write_text("not a photo")
    with pytest.raises(ValueError, match=f"voice {tmp_path / 'text.jpg'}: "):
        lip2speech(**options, voice=str(tmp_path / "text.jpg"))


def test_the_lip2speech_system_refuses_unknown_options_and_loads_no_asr_without_guidance(
        tiny: dict[str, str]) -> None:
    from engines.synth.systems import lip2speech

    with pytest.raises(ValueError, match=r"unknown lip2speech options \['steps'\]"):
        lip2speech(**tiny, **NO_PRIOR, steps=4)
    system = lip2speech(**{**tiny, "asr": "no-such-asr"}, **NO_PRIOR, w2=0)
    assert system.synthesizer.models.asr is None
    with pytest.raises(ValueError, match="guide must be"):
        lip2speech(**tiny, **NO_PRIOR, guide="oracle")
    toward_reference = lip2speech(**tiny, **NO_PRIOR, w2=0.1, guide="reference")
    assert toward_reference.guide_reference and "reference text" in toward_reference.about
    with pytest.raises(ValueError, match="no reference text"):
        toward_reference.generate(Clip("silent", audio=Path("x.wav"), video=Path("x.mp4")))
