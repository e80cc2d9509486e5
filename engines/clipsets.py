"""Clip sets: each clip has a reference audio, usually a video, and a transcript. Shared by the judges
(engines/eval) and the training loaders (engines/data), so both read a folder the same way.

Layouts (`load_clips(source, layout="auto")`):
- corpus: our synthetic corpus (optionally split into train/val/test folders; `voxsight data synth`
  writes a manifest.jsonl at its root, which marks the folder as a corpus even though its
  test/SPEAKER/CLIP.mp4 look like LRS3's): per clip NAME.mp4 (video with its audio track) and/or
  NAME.wav, NAME.txt (the sentence), NAME.json (its "speaker"); noisy copies NAME.noisy-KIND.wav beside
  a clip are inputs for training, not clips of their own, and are left out;
- grid: GRID videos (*.mpg or *.mp4, anywhere below the folder); the transcript from NAME.align when
  one is found below the folder (sil/sp dropped), else decoded from the file name; the speaker from
  the nearest folder called sN (s1 … s34);
- lrs3: ROOT/{pretrain,trainval,test}/SPEAKER/ID.mp4 with ID.txt ("Text:  WORDS" first line);
- list: a text file, one clip per line: `PATH` or `PATH<TAB>TRANSCRIPT` (PATH a video or an audio file,
  relative to the list file; # starts a comment); without a transcript, PATH's .txt sibling or a GRID
  file name gives it.

The reference audio is NAME.wav beside the video when there is one, else the video's own audio track,
aligned so that sample 0 is the first video frame. All reference audio is 16 kHz mono float32.
A clip whose speaker is not known is its own speaker (the speaker judge then asks whether a voice is
closer to its own clip's reference than to the other clips').
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

from engines.grid import GRID_CODE, grid_sentence

SAMPLE_RATE = 16000
VIDEO_EXTS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm")
AUDIO_EXTS = (".wav", ".flac", ".ogg")
LAYOUTS = ("auto", "corpus", "grid", "lrs3", "list")
LRS3_SPLITS = ("pretrain", "trainval", "test")
CORPUS_MANIFEST = "manifest.jsonl"
NOISY_MARK = ".noisy-"  # NAME.noisy-KIND.wav: a noisy copy of clip NAME


@dataclass(frozen=True)
class Clip:
    id: str  # unique in the set; generated WAVs are looked up as ID.wav (engines.eval.clips.wav_for)
    audio: Path  # where the reference audio is read from (a WAV or the video itself)
    video: Path | None = None
    text: str | None = None
    speaker: str | None = None

    @property
    def speaker_key(self) -> str:
        return self.speaker if self.speaker is not None else f"clip:{self.id}"

    def reference(self) -> np.ndarray:
        """The reference audio, 16 kHz mono float32 (read-only, cached)."""
        return read_audio(self.audio)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of a mono signal (exact rational ratio)."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Channel mean of a (samples,) or (samples, channels) array."""
    return audio if audio.ndim == 1 else audio.mean(axis=1)


@lru_cache(maxsize=16)
def read_audio(path: Path) -> np.ndarray:
    """16 kHz mono float32 from an audio file, or from a video's audio track aligned to its first frame.

    Raises ValueError when there is no audio to read.
    """
    if path.suffix.lower() in AUDIO_EXTS:
        import soundfile as sf

        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=False)
        except sf.SoundFileError as e:
            raise ValueError(f"{path}: cannot read ({e})") from e
        audio = resample(to_mono(data), rate)
    else:
        import av

        try:
            audio = _audio_track(path)
        except av.error.FFmpegError as e:
            raise ValueError(f"{path}: cannot decode its audio ({e})") from e
    if audio.size == 0:
        raise ValueError(f"{path}: no audio samples")
    audio.setflags(write=False)
    return audio


def _audio_track(path: Path) -> np.ndarray:
    import av  # PyAV, which faster-whisper installs: OpenCV cannot read audio

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        video = container.streams.video[0] if container.streams.video else None
        starts = video is not None and video.start_time is not None
        video_start = float(video.start_time * video.time_base) if starts else 0.0
        chunks, rate, first = [], stream.rate, None
        for frame in container.decode(stream):
            samples = frame.to_ndarray()  # (channels, n) planar or (1, n*channels) packed
            if not frame.format.is_planar:
                samples = samples.reshape(-1, len(frame.layout.channels)).T
            if np.issubdtype(samples.dtype, np.integer):
                samples = samples.astype(np.float32) / np.iinfo(samples.dtype).max
            chunks.append(samples.mean(axis=0).astype(np.float32))
            if first is None and frame.time is not None:
                first = frame.time
    audio = resample(np.concatenate(chunks) if chunks else np.zeros(0, np.float32), rate)
    lead = round(((first or 0.0) - video_start) * SAMPLE_RATE)  # audio starting after the first frame
    return np.concatenate([np.zeros(lead, np.float32), audio]) if lead > 0 else audio[-lead:]


def read_transcript(path: Path) -> str:
    """A transcript file: plain text, or LRS3's "Text:  WORDS" header."""
    text = path.read_text(encoding="utf-8", errors="replace")
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first.split(":", 1)[1].strip() if first.startswith("Text:") else " ".join(text.split())


def read_align(path: Path) -> str:
    """The words of a GRID .align file (lines `start end word`; silences dropped)."""
    words = [line.split()[2] for line in path.read_text().splitlines() if len(line.split()) == 3]
    return " ".join(w for w in words if w not in ("sil", "sp"))


def _sibling(stem: Path, suffix: str) -> Path | None:
    """STEM + suffix when that file exists (stem: a path without its extension)."""
    other = stem.parent / (stem.name + suffix)
    return other if other.exists() else None


def _companion(path: Path, suffix: str) -> Path | None:
    return _sibling(path.with_suffix(""), suffix)


def _reference_audio(video: Path) -> Path:
    return _companion(video, ".wav") or video


def _corpus(root: Path) -> list[Clip]:
    clips = []
    stems = sorted({p.with_suffix("") for p in root.rglob("*")
                    if p.suffix.lower() in (*VIDEO_EXTS, ".wav") and NOISY_MARK not in p.name})
    for stem in stems:
        video = next((v for ext in VIDEO_EXTS if (v := _sibling(stem, ext))), None)
        txt, meta = _sibling(stem, ".txt"), _sibling(stem, ".json")
        speaker = None
        if meta is not None:
            info = json.loads(meta.read_text())
            speaker = info.get("speaker") if isinstance(info, dict) else None
        clips.append(Clip(id=stem.relative_to(root).as_posix(),
                          audio=_sibling(stem, ".wav") or video,
                          video=video, text=read_transcript(txt) if txt else None,
                          speaker=None if speaker is None else str(speaker)))
    return clips


def _grid_speaker(path: Path, root: Path) -> str | None:
    for parent in path.relative_to(root).parents:
        if re.fullmatch(r"s\d+", parent.name):
            return parent.name
    return None


def _grid(root: Path) -> list[Clip]:
    aligns: dict[tuple[str | None, str], Path] = {}
    for a in root.rglob("*.align"):
        aligns[(_grid_speaker(a, root), a.stem)] = a
    clips = []
    for video in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS):
        speaker = _grid_speaker(video, root)
        align = _companion(video, ".align") or aligns.get((speaker, video.stem))
        text = read_align(align) if align else grid_sentence(video.stem)
        clips.append(Clip(id=video.relative_to(root).with_suffix("").as_posix(),
                          audio=_reference_audio(video), video=video, text=text, speaker=speaker))
    return clips


def _lrs3(root: Path) -> list[Clip]:
    clips = []
    for split in LRS3_SPLITS:
        for video in sorted((root / split).glob("*/*.mp4")):
            txt = _companion(video, ".txt")
            clips.append(Clip(id=video.relative_to(root).with_suffix("").as_posix(),
                              audio=_reference_audio(video), video=video,
                              text=read_transcript(txt) if txt else None, speaker=video.parent.name))
    return clips


def _list(path: Path) -> list[Clip]:
    clips = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        name, _, text = line.partition("\t")
        media = (path.parent / name.strip()).resolve()
        if not media.exists():
            raise ValueError(f"{path}:{number}: no such file {media}")
        is_video = media.suffix.lower() in VIDEO_EXTS
        if not text.strip():
            txt = _companion(media, ".txt")
            text = read_transcript(txt) if txt else (grid_sentence(media.stem) or "")
        clips.append(Clip(id=media.stem, audio=_reference_audio(media) if is_video else media,
                          video=media if is_video else None, text=text.strip() or None))
    return clips


def detect_layout(source: Path) -> str:
    """Which layout a path holds (see the module docstring)."""
    if source.is_file():
        return "list"
    if not source.is_dir():
        raise ValueError(f"{source}: no such file or folder")
    if (source / CORPUS_MANIFEST).is_file():
        return "corpus"
    if any((source / s).is_dir() and next((source / s).glob("*/*.mp4"), None) for s in LRS3_SPLITS):
        return "lrs3"
    videos = [p for p in source.rglob("*") if p.suffix.lower() in VIDEO_EXTS]
    grid_named = bool(videos) and all(GRID_CODE.match(p.stem) for p in videos)
    if grid_named or next(source.rglob("*.mpg"), None) or next(source.rglob("*.align"), None):
        return "grid"
    return "corpus"


def load_clips(source: Path | str, layout: str = "auto", split: str | None = None,
               limit: int | None = None) -> list[Clip]:
    """The clips of a set, sorted by id (a list file: in its order); `split` picks a sub-folder
    (train/val/test, LRS3's splits); `limit` keeps the first N. ValueError when there is none."""
    source = Path(source)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(source)
    readers = {"corpus": _corpus, "grid": _grid, "lrs3": _lrs3, "list": _list}
    clips = readers[layout](source)
    if split is not None:
        clips = [c for c in clips if c.id.split("/", 1)[0] == split]
    if not clips:
        raise ValueError(f"{source}: no clips found (layout {layout}{f', split {split}' if split else ''})")
    repeated = [i for i, n in Counter(c.id for c in clips).items() if n > 1]
    if repeated:
        raise ValueError(f"{source}: clip ids are not unique (e.g. {repeated[0]!r})")
    return clips[:limit] if limit else clips

