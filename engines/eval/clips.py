"""Clip sets to evaluate. The layouts (our corpus, GRID, LRS3, list files) and the reference-audio reader
live in engines/clipsets.py, shared with the training loaders (engines/data) so both read a folder the
same way; this module adds where a system's generated WAVs are found.
"""

from __future__ import annotations

from pathlib import Path

from engines.clipsets import (
    AUDIO_EXTS,
    LAYOUTS,
    LRS3_SPLITS,
    SAMPLE_RATE,
    VIDEO_EXTS,
    Clip,
    detect_layout,
    load_clips,
    read_align,
    read_audio,
    read_transcript,
    resample,
    to_mono,
)

__all__ = ["AUDIO_EXTS", "LAYOUTS", "LRS3_SPLITS", "SAMPLE_RATE", "VIDEO_EXTS", "Clip", "detect_layout",
           "load_clips", "read_align", "read_audio", "read_transcript", "resample", "to_mono", "wav_for"]


def wav_for(folder: Path, clip: Clip) -> Path | None:
    """A generated WAV for `clip` in `folder`: FOLDER/ID.wav, else FOLDER/BASENAME.wav."""
    for candidate in (folder / f"{clip.id}.wav", folder / f"{Path(clip.id).name}.wav"):
        if candidate.exists():
            return candidate
    return None
