"""Audio-visual sync: how far the speech's loudness lags the mouth's movement.

The mouth opening per video frame comes from the tracker's own geometry (engines.face: the MediaPipe
face mesh in video mode, one face, and lips.lip_features().opening, in inter-ocular units); frames where
no face is found are interpolated (fewer than half found: no value). Frame i is at i / fps.
The audio's envelope is its energy curve (per-frame mean log-mel, 100 frames/s). The opening is
interpolated onto the envelope's frame times; both are smoothed (90 ms moving average) and
differentiated: their *velocities* are compared, since the opening itself does not follow loudness
(the lips close tighter than at rest for b, p and m), while opening and loudness rise and fall
together. The offset is the lag, within ±MAX_LAG_MS, that maximises the Pearson correlation of the two
velocities over their overlap, refined to sub-frame by a parabola through the peak.
Positive: the audio comes after the mouth. `av_corr` is that peak correlation (how much the
offset can be trusted). The reference row's offset is the baseline a generated row is read against:
`av_dev_ms` = |offset − the reference's offset| per clip (shifts either way count; a mean of signed
offsets would let them cancel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.eval import mel
from engines.eval.judges.base import Judge, Metric, RefClip, Scores

NAN = float("nan")
MAX_LAG_MS = 500.0
MIN_FACE_FRACTION = 0.5
SMOOTH_MS = 90.0


def mouth_opening(video: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frame times in s, mouth opening per frame, NaN where no face) of a video file."""
    import cv2

    from engines.face.lips import lip_features
    from engines.face.mesh import FaceMesh

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ValueError(f"{video}: cannot open the video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    opening = []
    with FaceMesh(max_faces=1) as mesh:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            faces = mesh.detect(frame)
            opening.append(lip_features(faces[0].landmarks).opening if faces else NAN)
    capture.release()
    return np.arange(len(opening)) / fps, np.asarray(opening, dtype=np.float64)


def _velocity(x: np.ndarray, frames: int) -> np.ndarray:
    padded = np.pad(x, (frames // 2, frames // 2), mode="edge")
    return np.gradient(np.convolve(padded, np.ones(frames) / frames, mode="valid"))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denominator) if denominator > 1e-12 else NAN


def av_offset(times: np.ndarray, opening: np.ndarray, envelope: np.ndarray,
              frame_rate: float = mel.FRAME_RATE, max_lag_ms: float = MAX_LAG_MS) -> tuple[float, float]:
    """(offset in ms, peak correlation) of an envelope against a mouth-opening track (module docstring)."""
    found = np.isfinite(opening)
    if found.sum() < max(2, MIN_FACE_FRACTION * len(opening)):
        return NAN, NAN
    frame_times = np.arange(len(envelope)) / frame_rate
    inside = (frame_times >= times[0]) & (frame_times <= times[-1])
    window = max(1, round(SMOOTH_MS * frame_rate / 1000) | 1)  # odd: centred
    mouth = _velocity(np.interp(frame_times, times[found], opening[found]), window)
    envelope = _velocity(np.asarray(envelope, dtype=np.float64), window)
    max_lag = round(max_lag_ms * frame_rate / 1000)
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.full(len(lags), NAN)
    for i, lag in enumerate(lags):  # envelope[t + lag] against mouth[t]
        t = np.flatnonzero(inside)
        t = t[(t + lag >= 0) & (t + lag < len(envelope))]
        if len(t) > max_lag:  # enough overlap for a correlation to mean something
            scores[i] = _pearson(mouth[t], envelope[t + lag])
    if not np.isfinite(scores).any():
        return NAN, NAN
    best = int(np.nanargmax(scores))
    shift = 0.0
    if 0 < best < len(lags) - 1 and np.isfinite(scores[best - 1 : best + 2]).all():
        left, peak, right = scores[best - 1 : best + 2]
        curvature = left - 2 * peak + right
        shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return float((lags[best] + shift) * 1000 / frame_rate), float(scores[best])


class AvSync(Judge):
    name = "sync"
    metrics = (
        Metric("av_offset_ms", "AV offset ms", "", 0, group="match"),
        Metric("av_dev_ms", "AV Δref ms", "lower", 0, group="match"),
        Metric("av_corr", "AV corr", "higher", group="match"),
    )

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        if ref.clip.video is None:
            return {"av_offset_ms": NAN, "av_dev_ms": NAN, "av_corr": NAN}
        times, opening = ref.memo("mouth", lambda: mouth_opening(ref.clip.video))
        baseline, _ = ref.memo("av_offset", lambda: av_offset(times, opening, mel.energy(ref.audio)))
        offset, corr = av_offset(times, opening, mel.energy(audio))
        return {"av_offset_ms": offset, "av_dev_ms": abs(offset - baseline), "av_corr": corr}
