"""Training samples from any corpus: our synthetic corpus, GRID, LRS3 (or a list file), through one
feature extraction and a feature cache.

Clip listing is engines.clipsets' (the judges read folders the same way): `list_clips(source)`.

Features of a clip of n video frames (25 fps), made once and cached (engines.data.cache):
    mouth_rois    (n, 88, 88) uint8    the target face's aligned mouth ROI (engines.face.align, from the
                                       tracker's smoothed landmarks, as the live tracker node makes it)
    lip_geometry  (n, 82) float32      engines.face.lips features of that frame's own landmarks
    valid         (n,) bool            the target face was detected in that frame; other frames hold the
                                       nearest valid frame's ROI and geometry (zeros if none is valid)
    face_crop     (112, 112, 3) uint8  RGB ArcFace-aligned crop from the middle valid frame
    mel           (80, 4 n) float32    engines.audio.mel log-mel of the peak-normalised reference audio,
                                       4 mel frames per video frame (not yet mapped to [-1, 1])
Text, speaker, identity and split come from the listing, never from the cache: they are cheap, and a
corrected transcript must not need a re-extraction.

Video: decoded with PyAV and resampled to 25 fps by timestamp (frame k is the decoded frame nearest to
k / 25 s after the first frame). Target face: engines.face's FaceMesh → FaceTracker → TargetSelector
(policy "largest") per frame; in the frames before the selector has a confirmed track (a new track is
tentative for its first frame) the largest live track is taken. Audio: the clip's reference audio
(its .wav when there is one, else the video's own track aligned to its first frame), 16 kHz mono.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engines.audio import mel
from engines.clipsets import Clip, detect_layout, load_clips, read_audio
from engines.data.cache import FeatureCache
from engines.face import align, lips

log = logging.getLogger(__name__)

FPS = 25.0
FACE_SIZE = 112
FEATURES_VERSION = (f"voxsight-features-1/fps{FPS:g}/roi{align.CROP_SIZE}/face{FACE_SIZE}"
                    f"/lips{lips.FEATURE_LENGTH}/mel{mel.N_FFT}-{mel.HOP}-{mel.N_MELS}-{mel.FMIN:g}-{mel.FMAX:g}-peak{mel.PEAK:.4f}")
SPLITS = ("train", "val", "test")
FEATURES = ("mouth_rois", "lip_geometry", "valid", "face_crop", "mel")
# A stream may end this many frame periods short of its declared duration and still be whole (rounding, a
# last frame shown for less than a period).
DECLARED_SLACK_FRAMES = 1.5


@dataclass(frozen=True)
class ClipRef:
    """One clip to make a sample of: where its media are and what is known about it."""

    id: str
    layout: str  # corpus | grid | lrs3 | list
    video: Path
    audio: Path  # a .wav, or the video itself (its audio track)
    text: str | None = None
    speaker: str | None = None
    identity: str | None = None  # the face; for real corpora the speaker
    split: str | None = None
    noisy: dict[str, Path] = field(default_factory=dict, compare=False)  # kind → noisy copy (our corpus)

    @property
    def files(self) -> list[Path]:
        """The files whose content the features depend on (the cache key)."""
        return [self.video] if self.audio == self.video else [self.video, self.audio]


def _corpus_ref(clip: Clip) -> ClipRef:
    assert clip.video is not None
    stem = clip.video.with_suffix("")
    meta_path = stem.with_name(stem.name + ".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    first = clip.id.split("/", 1)[0]
    noisy = {n["kind"]: stem.parent / n["file"] for n in meta.get("noisy", [])}
    return ClipRef(clip.id, "corpus", clip.video, clip.audio, clip.text, clip.speaker,
                   meta.get("identity"), meta.get("split", first if first in SPLITS else None), noisy)


def joined_name(folder: Path | str, name: str) -> str:
    """A clip id or speaker as it reads when `folder` is one of several joined sources."""
    return f"{Path(folder).name}/{name}"


def list_clips(source: Path | str | Sequence[Path | str], layout: str = "auto", split: str | None = None,
               limit: int | None = None) -> list[ClipRef]:
    """The clips of a corpus folder (our corpus, GRID, LRS3) or list file that have a video (clips without
    one are skipped and counted in the log); `split` and `limit` as engines.clipsets.load_clips.

    `source` may also be several folders, joined: each clip's id and speaker then take its folder's name
    as a prefix (`joined_name`: two corpora both have a train/spk000), and a folder without clips in
    `split` is skipped (an error only if all are)."""
    if not isinstance(source, str | Path):
        return _joined(source, layout, split, limit)
    source = Path(source)
    layout = detect_layout(source) if layout == "auto" else layout
    clips = load_clips(source, layout=layout, split=split)
    videos = [c for c in clips if c.video is not None]
    if len(videos) < len(clips):
        log.warning("%s: %d of %d clips have no video and are skipped", source, len(clips) - len(videos),
                    len(clips))
    if not videos:
        raise ValueError(f"{source}: no clip with a video")
    refs = []
    for clip in videos[:limit] if limit else videos:
        if layout == "corpus":
            refs.append(_corpus_ref(clip))
            continue
        lrs3_split = clip.id.split("/", 1)[0] if layout == "lrs3" else None
        refs.append(ClipRef(clip.id, layout, clip.video, clip.audio, clip.text, clip.speaker, clip.speaker,
                            lrs3_split))
    return refs


def _joined(sources: Sequence[Path | str], layout: str, split: str | None,
            limit: int | None) -> list[ClipRef]:
    refs: list[ClipRef] = []
    for folder in sources:
        try:
            found = list_clips(folder, layout, split)
        except ValueError:
            log.info("%s: no clip in split %s, skipped", folder, split)
            continue
        refs += [replace(ref, id=joined_name(folder, ref.id),
                         speaker=None if ref.speaker is None else joined_name(folder, ref.speaker))
                 for ref in found]
    if not refs:
        raise ValueError(f"{', '.join(map(str, sources))}: no clip with a video in split {split}")
    return refs[:limit] if limit else refs


# ---------------------------------------------------------------- extraction


def _declared_seconds(stream: Any) -> float | None:
    """Where the stream says it ends, in seconds, when that is written in the file rather than estimated:
    Matroska and WebM give no frame count but write each stream's end time as its DURATION tag
    ("HH:MM:SS.fffffffff") when they close. MPEG-PS and -TS durations are estimated from the bytes there
    are, so a cut file declares itself shorter and cannot be told from a short one."""
    tag = stream.metadata.get("DURATION")
    try:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (AttributeError, ValueError):
        return None


def _decoded(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    """The stream's frames; a decoding error ends them with a clear one, never half a clip in silence (a
    clip cut short would no longer match its audio and text)."""
    import av

    count, last = 0, None
    try:
        for frame in container.decode(stream):
            count += 1
            last = frame.time
            yield frame
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: the video breaks off after {count} frames ({exc.strerror})") from exc
    # A truncated file whose index or header survived decodes to its end without an error.
    if count < stream.frames:
        raise ValueError(f"{path}: the video breaks off after {count} of the {stream.frames} frames it "
                         "declares")
    declared = _declared_seconds(stream) if not stream.frames else None
    rate = stream.average_rate or stream.guessed_rate
    if declared is not None and last is not None and rate:
        period = 1.0 / float(rate)
        end = last + period
        if end < declared - DECLARED_SLACK_FRAMES * period:
            raise ValueError(f"{path}: the video breaks off at {end:.2f} s of the {declared:.2f} s it "
                             "declares")


def decode_video(path: Path, fps: float = FPS) -> Iterator[np.ndarray]:
    """BGR uint8 frames of a video, resampled to `fps` by timestamp (module docstring)."""
    import av

    period = 1.0 / fps
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:  # FFmpeg's own words, without its errno
        raise ValueError(f"{path}: not a video that can be decoded ({exc.strerror})") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start, previous, slot = None, None, 0
        for frame in _decoded(container, stream, path):
            t = float(frame.time) if frame.time is not None else (slot * period if start is None else 0.0)
            start = t if start is None else start
            t -= start
            image = frame.to_ndarray(format="bgr24")
            if previous is not None:
                while slot * period < (previous[0] + t) / 2:  # slots nearer the previous frame
                    yield previous[1]
                    slot += 1
            previous = (t, image)
        if previous is not None:
            while slot * period <= previous[0] + period / 2 - 1e-9:
                yield previous[1]
                slot += 1


def _chosen(tracks: list, target: int) -> object | None:
    if not tracks:
        return None
    for t in tracks:
        if t.id == target:
            return t
    return max(tracks, key=lambda t: t.bbox[2] * t.bbox[3])


def track_video(path: Path, max_faces: int = 1, max_frames: int | None = None) -> dict[str, np.ndarray]:
    """mouth_rois, lip_geometry, valid, face_crop of a video (module docstring), or of its first
    `max_frames`."""
    from engines.face.pipeline import FacePipeline
    from engines.face.selection import SelectionParams

    rois, geometry, valid, crops = [], [], [], []
    with FacePipeline(selection=SelectionParams(policy="largest"), max_faces=max_faces,
                      crop_size=FACE_SIZE) as pipeline:
        for k, bgr in enumerate(itertools.islice(decode_video(path), max_frames)):
            _, tracks, target = pipeline.process(bgr, k / FPS)
            state = _chosen(tracks, target)
            seen = state is not None and state.state != "coasting"
            valid.append(seen)
            rois.append(state.mouth_roi if seen else None)
            geometry.append(state.lip_geometry if seen else None)
            crops.append(state.face_crop if seen else None)
    n = len(valid)
    if n == 0:
        raise ValueError(f"{path}: no video frames")
    good = np.flatnonzero(valid)
    out_roi = np.zeros((n, align.CROP_SIZE, align.CROP_SIZE), np.uint8)
    out_geo = np.zeros((n, lips.FEATURE_LENGTH), np.float32)
    face = np.zeros((FACE_SIZE, FACE_SIZE, 3), np.uint8)
    if good.size:
        nearest = good[np.abs(np.arange(n)[:, None] - good[None, :]).argmin(axis=1)]
        out_roi[:] = np.stack([rois[j] for j in nearest])
        out_geo[:] = np.stack([geometry[j] for j in nearest])
        face = crops[good[len(good) // 2]]
    return {"mouth_rois": out_roi, "lip_geometry": out_geo, "valid": np.asarray(valid, bool),
            "face_crop": face}


def audio_features(audio_path: Path, n_frames: int) -> np.ndarray:
    """(80, 4 n_frames) log-mel of the clip's reference audio (module docstring)."""
    return mel.mel_for_frames(mel.peak_normalise(read_audio(audio_path)), n_frames)


def extract(ref: ClipRef) -> dict[str, np.ndarray]:
    """All cached features of one clip (module docstring)."""
    video = track_video(ref.video)
    return {**video, "mel": audio_features(ref.audio, len(video["valid"]))}


# ---------------------------------------------------------------- samples


@dataclass
class Sample:
    ref: ClipRef
    mouth_rois: np.ndarray
    lip_geometry: np.ndarray
    valid: np.ndarray
    face_crop: np.ndarray
    mel: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.valid)


class SampleSet(Sequence[Sample]):
    """Samples of a list of clips; features come from the cache, or are extracted once and stored."""

    def __init__(self, clips: Sequence[ClipRef], cache: FeatureCache | Path | str) -> None:
        self.clips = list(clips)
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache, FEATURES_VERSION)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        ref = self.clips[index]
        arrays = self.cache.get(ref.files, lambda: extract(ref))
        return Sample(ref, **{k: arrays[k] for k in FEATURES})

    def prepare(self, jobs: int = 1, progress: bool = True) -> int:
        """Fill the cache for every clip (`jobs` processes); returns how many were extracted."""
        from tqdm import tqdm

        todo = [ref for ref in self.clips if self.cache.load(self.cache.key(ref.files)) is None]
        with tqdm(total=len(todo), unit="clip", desc="features", disable=not progress) as bar:
            if jobs <= 1:
                for ref in todo:
                    self.cache.get(ref.files, lambda ref=ref: extract(ref))
                    bar.update()
            else:
                import multiprocessing

                with multiprocessing.get_context("spawn").Pool(jobs) as pool:
                    args = [(ref, str(self.cache.root), self.cache.version) for ref in todo]
                    for _ in pool.imap_unordered(_prepare_one, args):
                        bar.update()
        return len(todo)


def _prepare_one(args: tuple[ClipRef, str, str]) -> None:
    ref, root, version = args
    FeatureCache(root, version).get(ref.files, lambda: extract(ref))


def load(source: Path | str | Sequence[Path | str], cache_dir: Path | str, layout: str = "auto",
         split: str | None = None, limit: int | None = None) -> SampleSet:
    """The samples of a corpus folder or of several joined (see `list_clips`), cached under `cache_dir`."""
    return SampleSet(list_clips(source, layout, split, limit), cache_dir)


class TorchSamples:
    """A map-style dataset for torch.utils.data.DataLoader: each item a dict of tensors in model ranges:
    video (1, T, 88, 88) normalised ROIs (engines.face.align.normalise_roi), mel (80, 4T) in [-1, 1]
    (engines.audio.mel.normalise), lips (T, 82), face (3, 112, 112) in [0, 1], valid (T,), and the
    strings text, speaker, id. `window` > 0 cuts a random window of that many frames (shorter clips
    whole; `start` is its first frame); `seed` makes the windows repeatable."""

    def __init__(self, samples: SampleSet, window: int = 0, seed: int = 0) -> None:
        self.samples = samples
        self.window = window
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        import torch

        s = self.samples[index]
        lo, hi = 0, s.n_frames
        if 0 < self.window < s.n_frames:
            lo = int(self.rng.integers(0, s.n_frames - self.window + 1))
            hi = lo + self.window
        m = mel.MELS_PER_FRAME
        return {
            "video": torch.from_numpy(align.normalise_roi(s.mouth_rois[lo:hi]))[None],
            "mel": torch.from_numpy(mel.normalise(s.mel[:, lo * m:hi * m])),
            "lips": torch.from_numpy(s.lip_geometry[lo:hi]),
            "face": torch.from_numpy(s.face_crop.astype(np.float32) / 255.0).permute(2, 0, 1),
            "valid": torch.from_numpy(s.valid[lo:hi]),
            "text": s.ref.text or "", "speaker": s.ref.speaker or "", "id": s.ref.id, "start": lo,
        }
