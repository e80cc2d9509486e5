"""Training samples: the engines' mel, the feature cache, and the loaders for our corpus, GRID and LRS3."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.audio import mel
from engines.data import loaders
from engines.data.cache import FeatureCache
from engines.data.corpus import RunOptions, Settings, synth
from tests.helpers import REPO, SHARED

GRID_DEV = SHARED / "real" / "grid-dev"
FACES = SHARED / "faces"


# ---------------------------------------------------------------- mel


def test_mel_matches_librosa_and_has_four_frames_per_video_frame() -> None:
    import librosa

    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    basis = librosa.filters.mel(sr=16000, n_fft=640, n_mels=80, fmin=20.0, fmax=8000.0)
    assert np.allclose(mel.mel_basis(), basis, atol=1e-7)
    spec = np.abs(librosa.stft(audio, n_fft=640, hop_length=160, win_length=640, window="hann",
                               pad_mode="reflect"))
    expected = np.log(np.maximum(basis @ spec, 1e-5))
    assert mel.log_mel(audio).shape == expected.shape == (80, 101)
    assert np.allclose(mel.log_mel(audio), expected, atol=1e-3)
    assert mel.mel_for_frames(audio, 25).shape == (80, 100)
    assert mel.mel_for_frames(audio[:1000], 3).shape == (80, 12)  # short audio is padded


def test_mel_normalisation_maps_floor_and_unity_to_the_ends() -> None:
    x = np.array([np.log(1e-5), 0.0, -3.0], np.float32)
    assert np.allclose(mel.normalise(x)[:2], [-1.0, 1.0])
    assert np.allclose(mel.denormalise(mel.normalise(x)), x, atol=1e-5)
    silence = mel.log_mel(np.zeros(3200, np.float32))
    assert np.all(mel.normalise(silence) == -1.0)
    assert np.isclose(np.abs(mel.peak_normalise(np.array([0.1, -0.5], np.float32))).max(), 1 / 1.1)


# ---------------------------------------------------------------- cache


def test_cache_hits_by_content_and_rewrites_unreadable_files(tmp_path: Path) -> None:
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"video bytes")
    cache = FeatureCache(tmp_path / "cache", version="v1")
    made = []

    def make() -> dict[str, np.ndarray]:
        made.append(1)
        return {"x": np.arange(4)}

    assert np.array_equal(cache.get([clip], make)["x"], np.arange(4))
    assert np.array_equal(cache.get([clip], make)["x"], np.arange(4))
    assert (cache.hits, cache.misses, len(made)) == (1, 1, 1)
    moved = tmp_path / "elsewhere.bin"
    shutil.copy(clip, moved)
    cache.get([moved], make)  # same content, other name: a hit
    assert len(made) == 1
    assert FeatureCache(tmp_path / "cache", version="v2").key([clip]) != cache.key([clip])
    cache.path(cache.key([clip])).write_bytes(b"truncated")
    cache.get([clip], make)
    assert (cache.rewrites, len(made)) == (1, 2)
    clip.write_bytes(b"edited video")
    cache.get([clip], make)
    assert len(made) == 3


def test_a_failed_store_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = FeatureCache(tmp_path / "cache", version="v1")

    def full_disk(path: Path, **_: object) -> None:  # a full disk cannot be had here: half written, then
        Path(path).write_bytes(b"PK half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engines.data.cache.np.savez_compressed", full_disk)
    with pytest.raises(OSError, match="No space"):
        cache.store("ab" * 20, {"x": np.arange(4)})
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# ---------------------------------------------------------------- GRID


@pytest.mark.skipif(not GRID_DEV.is_dir(), reason=f"no real GRID clips at {GRID_DEV}")
def test_grid_loader_reads_the_real_clips_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    real_decode = loaders.decode_video

    def counting(path: Path, fps: float = loaders.FPS):
        decoded.append(path)
        return real_decode(path, fps)

    monkeypatch.setattr(loaders, "decode_video", counting)
    samples = loaders.load(GRID_DEV, tmp_path / "cache")
    assert [s.ref.layout for s in samples] == ["grid"] * 3
    texts = {s.ref.id: s.ref.text for s in samples}
    assert texts["bbaf2n"] == "bin blue at f two now" and texts["lbax4n"] == "lay blue at x four now"
    for s in samples:
        n = s.n_frames
        assert n == 75  # 3 s at 25 fps
        assert s.mouth_rois.shape == (n, 88, 88) and s.mouth_rois.dtype == np.uint8
        assert s.lip_geometry.shape == (n, 82) and s.valid.mean() > 0.95
        assert s.mel.shape == (80, 4 * n)
        assert s.face_crop.shape == (112, 112, 3) and s.face_crop.std() > 10
        assert s.lip_geometry[:, 80].max() > 0.05  # the mouth opens while speaking
    assert len(decoded) == 3
    again = loaders.load(GRID_DEV, tmp_path / "cache")
    first = [again[i] for i in range(len(again))]
    assert len(decoded) == 3 and again.cache.hits == 3 and again.cache.misses == 0
    assert np.array_equal(first[0].mouth_rois, samples[0].mouth_rois)


# ---------------------------------------------------------------- our corpus and LRS3


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-clip corpus of ours (one process, no noisy copies)."""
    if not FACES.is_dir():
        pytest.skip(f"no face photos at {FACES}")
    out = tmp_path_factory.mktemp("rendered") / "corpus"
    synth(out, Settings(seed=11, faces=str(FACES), noisy=("babble",)), RunOptions(clips=1, jobs=1,
                                                                                   progress=False))
    return out


def test_corpus_loader_gives_identity_split_and_noisy_copies(rendered: Path, tmp_path: Path) -> None:
    (ref,) = loaders.list_clips(rendered)
    assert ref.layout == "corpus" and ref.split in ("train", "val", "test") and ref.identity
    assert ref.audio.suffix == ".wav" and set(ref.noisy) == {"babble"} and ref.noisy["babble"].is_file()
    sample = loaders.SampleSet([ref], tmp_path / "cache")[0]
    import json

    meta = json.loads(ref.video.with_suffix(".json").read_text())
    assert sample.n_frames == meta["frames"] and sample.mel.shape == (80, 4 * meta["frames"])
    assert sample.valid.mean() > 0.9  # the tracker sees the rendered face as a face
    view = loaders.TorchSamples(loaders.SampleSet([ref], tmp_path / "cache"), window=10)
    item = view[0]
    assert tuple(item["video"].shape) == (1, 10, 88, 88) and tuple(item["mel"].shape) == (80, 40)
    assert float(item["mel"].min()) >= -1.0 and tuple(item["face"].shape) == (3, 112, 112)
    assert item["text"] == meta["text"]


def test_lrs3_loader_on_a_fixture_in_its_layout(rendered: Path, tmp_path: Path) -> None:
    (ref,) = loaders.list_clips(rendered)
    root = tmp_path / "lrs3"
    for split in ("pretrain", "trainval", "test"):
        (root / split).mkdir(parents=True)
    folder = root / "test" / "0Fi83BHQsMA"
    folder.mkdir()
    shutil.copy(ref.video, folder / "00002.mp4")
    words = ref.text.upper().rstrip(".")
    (folder / "00002.txt").write_text(f"Text:  {words}\nConf:  4\n\nWORD START END ASDSCORE\n")
    (lrs3,) = loaders.list_clips(root)
    assert (lrs3.layout, lrs3.split, lrs3.speaker, lrs3.text) == ("lrs3", "test", "0Fi83BHQsMA", words)
    assert lrs3.audio == lrs3.video  # the audio comes from the mp4's own track
    sample = loaders.load(root, tmp_path / "cache", split="test")[0]
    ours = loaders.SampleSet([ref], tmp_path / "cache")[0]
    assert sample.n_frames == ours.n_frames and sample.mel.shape == (80, 4 * sample.n_frames)
    # The AAC track and the clean .wav give nearly the same mel (compression, same timing).
    voiced = ours.mel.mean(axis=0) > -6
    assert np.abs(sample.mel[:, voiced] - ours.mel[:, voiced]).mean() < 0.5


def test_tracking_can_stop_after_the_first_frames_of_a_video() -> None:
    sample = REPO / "launch" / "media" / "lip2speech_sample.mp4"
    first = loaders.track_video(sample, max_frames=5)
    assert first["valid"].shape == (5,) and first["valid"].all() and first["mouth_rois"].shape[0] == 5


def _remuxed(src: Path, out: Path, **options: str) -> Path:
    """`src`'s video remuxed into `out`'s container (its suffix names it) with muxer `options`."""
    import av

    with av.open(str(src)) as inp, av.open(str(out), "w", options=options) as dst:
        stream = dst.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return out


def test_a_video_that_cannot_be_decoded_or_breaks_off_is_refused_clearly(tmp_path: Path) -> None:
    sample = REPO / "launch" / "media" / "lip2speech_sample.mp4"
    cut = tmp_path / "cut.mp4"  # its index at the end, so nothing of it opens
    cut.write_bytes(sample.read_bytes()[: len(sample.read_bytes()) * 7 // 10])
    for path in (cut, REPO / "README.md"):
        with pytest.raises(ValueError, match=r"not a video that can be decoded \(Invalid data"):
            loaders.track_video(path)
    # With its index first, the cut file decodes to where it was cut without an error from the decoder:
    # that must not pass for the whole clip.
    whole = _remuxed(sample, tmp_path / "fast.mp4", movflags="faststart")
    assert loaders.track_video(whole)["valid"].shape == (49,)
    fast_cut = tmp_path / "fast-cut.mp4"
    fast_cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 7 // 10])
    with pytest.raises(ValueError, match=r"breaks off after \d+ of the 49 frames it declares"):
        loaders.track_video(fast_cut)
    assert loaders.track_video(fast_cut, max_frames=5)["valid"].shape == (5,)  # its start is still there


def test_a_matroska_video_cut_short_is_refused_by_its_declared_duration(tmp_path: Path) -> None:
    # Matroska and WebM declare no frame count, only each stream's end time, which a cut file keeps.
    whole = _remuxed(REPO / "launch" / "media" / "lip2speech_sample.mp4", tmp_path / "whole.mkv")
    assert sum(1 for _ in loaders.decode_video(whole)) == 49
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) * 7 // 10])
    with pytest.raises(ValueError, match=r"breaks off at [\d.]+ s of the 1.96 s it declares"):
        loaders.track_video(cut)


def test_a_video_stored_turned_is_read_as_the_upright_one(tmp_path: Path) -> None:
    # A phone's portrait clip is stored turned, with a tag that tells players to turn it back; the decoders
    # give it as stored, and the mouth ROI's alignment undoes the roll.
    import av

    sample = REPO / "launch" / "media" / "lip2speech_sample.mp4"
    turned = tmp_path / "turned.mp4"
    with av.open(str(sample)) as inp, av.open(str(turned), "w") as out:
        source = inp.streams.video[0]
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = source.height, source.width, "yuv420p"
        stream.set_display_rotation(90)
        for k, frame in enumerate(inp.decode(source)):
            image = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), -1))
            stored = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            stored.pts = k
            out.mux(stream.encode(stored))
        out.mux(stream.encode())
    upright, read = loaders.track_video(sample), loaders.track_video(turned)
    assert read["valid"].all() and read["mouth_rois"].shape == upright["mouth_rois"].shape
    # less than the ROI changes from one frame to the next (3.2 of 255 on this clip)
    assert np.abs(read["mouth_rois"].astype(int) - upright["mouth_rois"]).mean() < 3.0
    assert np.abs(read["lip_geometry"] - upright["lip_geometry"]).mean() < 0.01
