"""Writing one corpus clip: STEM.mp4 (H.264 video + AAC audio), STEM.wav, STEM.noisy-KIND.wav, STEM.txt
and STEM.json.

The mp4 is compressed like the videos a robot's camera pipeline or a web corpus hands over: H.264
(libx264, yuv420p, `crf`, preset veryfast, one thread: the corpus runs one clip per core) at 25 fps,
AAC mono 16 kHz at 48 kbit/s. The .wav is the exact clean target (16 kHz mono int16); the noisy copies
are training inputs kept beside it.

Atomicity: every file is written under a temporary name (NAME.part) and renamed into place; the .json
is renamed last, so a clip whose .json exists is complete (`is_complete`), and a clip interrupted
half-way leaves only .part files, which the next run deletes (`remove_clip`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FPS = 25
AUDIO_BITRATE = 48000
PRESET = "veryfast"
PART = ".part"
NOISY = ".noisy-"  # STEM.noisy-KIND.wav (engines.clipsets.NOISY_MARK)


def noisy_name(stem: Path, kind: str) -> Path:
    return stem.with_name(f"{stem.name}{NOISY}{kind}.wav")


def is_complete(stem: Path) -> bool:
    """Whether the clip's .json and every file it lists exist."""
    meta = stem.with_name(stem.name + ".json")
    if not meta.is_file():
        return False
    try:
        files = json.loads(meta.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return False
    return all((stem.parent / name).is_file() for name in files)


def remove_clip(stem: Path) -> None:
    """Delete a clip's files and any temporary file it left (STEM.* and STEM.*.part)."""
    for path in stem.parent.glob(f"{stem.name}.*"):
        path.unlink(missing_ok=True)


def _commit(tmp: Path) -> Path:
    final = tmp.with_name(tmp.name[: -len(PART)])
    os.replace(tmp, final)
    return final


def _part(path: Path) -> Path:
    return path.with_name(path.name + PART)


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(audio, np.float32), -1.0, 32767 / 32768) * 32768).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """16 kHz mono int16 WAV, atomically."""
    import soundfile as sf

    tmp = _part(path)
    sf.write(str(tmp), to_int16(audio), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return _commit(tmp)


def write_mp4(path: Path, frames: np.ndarray, audio: np.ndarray, crf: float, fps: int = FPS) -> Path:
    """H.264 + AAC .mp4 of (n, H, W, 3) uint8 BGR frames and 16 kHz mono float audio, atomically.
    H and W must be even (yuv420p)."""
    import av

    n, height, width = frames.shape[:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {width}x{height}")
    tmp = _part(path)
    with av.open(str(tmp), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"crf": f"{crf:g}", "preset": PRESET, "threads": "1"}
        sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = AUDIO_BITRATE
        sound.time_base = Fraction(1, SAMPLE_RATE)
        samples = np.asarray(audio, np.float32)
        step = SAMPLE_RATE // fps
        for i in range(n):  # interleaved: each video frame with its 40 ms of sound
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="bgr24")
            frame.pts = i
            out.mux(video.encode(frame))
            block = samples[i * step:(i + 1) * step if i < n - 1 else len(samples)]
            if block.size:
                chunk = av.AudioFrame.from_ndarray(block[None, :].copy(), format="flt", layout="mono")
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, i * step
                out.mux(sound.encode(chunk))
        out.mux(video.encode())
        out.mux(sound.encode())
    return _commit(tmp)


def write_clip(stem: Path, frames: np.ndarray, audio: np.ndarray, text: str, meta: Mapping,
               crf: float, noisy: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """All the files of one clip (module docstring); `meta` goes into the .json with the list of files."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    noisy = noisy or {}
    files = [write_mp4(stem.with_name(stem.name + ".mp4"), frames, audio, crf),
             write_wav(stem.with_name(stem.name + ".wav"), audio)]
    files += [write_wav(noisy_name(stem, kind), copy) for kind, copy in noisy.items()]
    txt = _part(stem.with_name(stem.name + ".txt"))
    txt.write_text(text.strip() + "\n", encoding="utf-8")
    files.append(_commit(txt))
    record = {**meta, "files": [f.name for f in files]}
    tmp = _part(stem.with_name(stem.name + ".json"))
    tmp.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
    files.append(_commit(tmp))
    return files
