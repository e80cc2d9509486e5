"""The independent judges, by name (`voxsight eval --judges ...`). See base.py for what a judge is."""

from __future__ import annotations

from collections.abc import Callable

from engines.eval.judges import asr, quality, signal, speaker, sync
from engines.eval.judges.base import Judge, Metric, RefClip, Scores, fit

JUDGES: dict[str, Callable[[], Judge]] = {
    "whisper": asr.Whisper,
    "sphinx": asr.SphinxGrid,
    "stoi": signal.Stoi,
    "dnsmos": quality.Dnsmos,
    "vad": quality.VadAgreement,
    "sync": sync.AvSync,
    "f0": signal.Pitch,
    "speaker": speaker.SpeakerId,
    "energy": signal.EnergyMae,
}

__all__ = ["JUDGES", "Judge", "Metric", "RefClip", "Scores", "fit", "make_judges"]


def make_judges(names: list[str] | tuple[str, ...] = tuple(JUDGES)) -> list[Judge]:
    """Judges by name, in JUDGES order (ValueError for an unknown name)."""
    unknown = sorted(set(names) - set(JUDGES))
    if unknown:
        raise ValueError(f"unknown judge(s) {', '.join(unknown)}; known: {', '.join(JUDGES)}")
    return [factory() for name, factory in JUDGES.items() if name in names]
