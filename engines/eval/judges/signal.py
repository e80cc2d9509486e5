"""Judges that compare signals directly: STOI/ESTOI, pitch (F0), energy curve.

The generated audio is cut or zero-padded to the reference's length first (base.fit).
- STOI and ESTOI: pystoi against the reference (it drops the reference's silent frames itself).
- F0: librosa's pYIN over 65–400 Hz (64 ms frames, 10 ms hop); estimates in the lowest semitone of the
  range are dropped (pYIN parks unvoiced-ish creak there). Median in Hz, range = 10th–90th percentile
  in semitones; the errors are |Δ median| and |Δ range| in semitones against the reference. Fewer than
  10 voiced frames: no F0 (NaN).
- Energy MAE (ReWaS): mean |E_gen − E_ref| over frames, E = per-frame mean of the natural-log mel.
"""

from __future__ import annotations

import warnings

import numpy as np

from engines.eval import mel
from engines.eval.judges.base import Judge, Metric, RefClip, Scores, fit

NAN = float("nan")
F0_MIN, F0_MAX = 65.0, 400.0
MIN_VOICED = 10


class Stoi(Judge):
    name = "stoi"
    metrics = (Metric("stoi", "STOI", "higher"), Metric("estoi", "ESTOI", "higher"))

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        from pystoi import stoi

        generated = fit(audio, len(ref.audio))
        with warnings.catch_warnings():  # pystoi warns (and returns 1e-5) when too little is left to score
            warnings.simplefilter("ignore")
            return {"stoi": float(stoi(ref.audio, generated, mel.SAMPLE_RATE, extended=False)),
                    "estoi": float(stoi(ref.audio, generated, mel.SAMPLE_RATE, extended=True))}


def f0_stats(audio: np.ndarray) -> tuple[float, float]:
    """(median F0 in Hz, 10–90 % range in semitones) of the voiced frames; NaNs when too few."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio, fmin=F0_MIN, fmax=F0_MAX, sr=mel.SAMPLE_RATE, frame_length=1024,
                                 hop_length=mel.HOP)
    values = f0[voiced & np.isfinite(f0) & (f0 > F0_MIN * 2 ** (1 / 12))]
    if len(values) < MIN_VOICED:
        return NAN, NAN
    low, high = np.percentile(values, [10, 90])
    return float(np.median(values)), float(12 * np.log2(high / low))


class Pitch(Judge):
    name = "f0"
    metrics = (
        Metric("f0_median_hz", "F0 median Hz", "", 0, table=False, group="match"),
        Metric("f0_range_st", "F0 range st", "", 1, table=False, group="match"),
        Metric("f0_err_st", "F0 Δmedian st", "lower", 1, group="match"),
        Metric("f0_range_err_st", "F0 Δrange st", "lower", 1, group="match"),
    )

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        ref_median, ref_range = ref.memo("f0", lambda: f0_stats(ref.audio))
        median, spread = f0_stats(audio)
        error = abs(12 * np.log2(median / ref_median))
        return {"f0_median_hz": median, "f0_range_st": spread, "f0_err_st": error,
                "f0_range_err_st": abs(spread - ref_range)}


class EnergyMae(Judge):
    name = "energy"
    metrics = (Metric("energy_mae", "energy MAE", "lower", group="match"),)

    def score(self, audio: np.ndarray, ref: RefClip) -> Scores:
        reference = ref.memo("energy", lambda: mel.energy(ref.audio))
        return {"energy_mae": float(np.mean(np.abs(mel.energy(fit(audio, len(ref.audio))) - reference)))}
