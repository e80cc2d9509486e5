"""The media conventions a trained model depends on (ARCHITECTURE §4), gathered in one place.

The values stay defined by the modules that implement them (the mel by engines.audio.mel, the mouth ROI
and face crop by engines.face.align, the lip features by engines.face.lips, the feature layout by
engines.data.loaders); this module only collects them, so a checkpoint can record the conventions its
weights were trained under and a loader can tell when they no longer hold.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def current() -> dict[str, Any]:
    """The conventions of this code base as plain values (imports the face modules: call it lazily)."""
    from engines.audio import mel
    from engines.data import loaders
    from engines.face import align, lips

    return {
        "sample_rate": mel.SAMPLE_RATE,
        "n_fft": mel.N_FFT,
        "win": mel.WIN,
        "hop": mel.HOP,
        "n_mels": mel.N_MELS,
        "fmin": mel.FMIN,
        "fmax": mel.FMAX,
        "log_floor": mel.LOG_FLOOR,
        "mel_norm": [mel.NORM_MIN, mel.NORM_SCALE],
        "peak": mel.PEAK,
        "fps": mel.VIDEO_FPS,
        "mels_per_frame": mel.MELS_PER_FRAME,
        "mouth_roi": align.CROP_SIZE,
        "roi_norm": [align.ROI_MEAN, align.ROI_STD],
        "lip_features": lips.FEATURE_LENGTH,
        "face_crop": loaders.FACE_SIZE,
    }


def differences(recorded: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{name: (recorded, current)} for every convention that differs from this code base's."""
    now = current()
    return {k: (recorded.get(k), now.get(k)) for k in sorted(set(now) | set(recorded))
            if recorded.get(k) != now.get(k)}
