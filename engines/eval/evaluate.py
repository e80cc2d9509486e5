"""Run every system on every clip and score the outputs with every judge.

A system that has nothing for a clip (MissingOutput, an unreadable WAV) leaves that clip out of its row
(the row's n says so, and the report lists the clips); a judge that fails on one output leaves that
output's values empty and the failure is listed; neither stops the run. What a system notes it did
otherwise for a clip (its `notes`) is listed too. Generated audio is made
mono float32 first (channels averaged, integer PCM scaled to ±1): NaN/inf become 0 and samples beyond ±1
are clipped (both counted).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from engines.eval import mel
from engines.eval.clips import Clip
from engines.eval.judges import Judge, Metric, RefClip, Scores
from engines.eval.stats import Summary, mean_ci, paired_mean_ci, paired_ratio_ci, ratio_ci
from engines.eval.systems import MissingOutput, System

log = logging.getLogger(__name__)
MIN_SAMPLES = mel.N_FFT  # shorter output is padded with silence: every judge needs a frame or more


@dataclass
class Results:
    clips: list[Clip]
    systems: list[str]
    metrics: list[Metric]
    rows: dict[str, dict[str, Scores]]  # system → clip id → values (clips with no output are absent)
    about: dict[str, str] = field(default_factory=dict)  # system → what the row is
    mels: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (system, clip id) → log-mel
    mouth: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # clip id → times, opening
    problems: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def missing(self, system: str) -> list[str]:
        return [c.id for c in self.clips if c.id not in self.rows[system]]

    def summary(self) -> dict[str, dict[str, Summary]]:
        """system → metric key → aggregate with its 95 % CI (stats.py)."""
        out: dict[str, dict[str, Summary]] = {}
        for system, row in self.rows.items():
            values = list(row.values())
            out[system] = {}
            for m in self.metrics:
                if m.ratio:
                    out[system][m.key] = ratio_ci(*_columns(values, m.ratio))
                else:
                    out[system][m.key] = mean_ci(*_columns(values, (m.key,)))
        return out

    def shared(self, a: str, b: str) -> list[str]:
        """The clips both systems have an output for, in clip order."""
        return [c.id for c in self.clips if c.id in self.rows[a] and c.id in self.rows[b]]

    def paired(self, a: str, b: str) -> dict[str, Summary]:
        """metric key → A − B over the clips both systems have, with its paired 95 % CI (stats.py)."""
        ids = self.shared(a, b)
        values_a = [self.rows[a][i] for i in ids]
        values_b = [self.rows[b][i] for i in ids]
        out: dict[str, Summary] = {}
        for m in self.metrics:
            if m.ratio:
                out[m.key] = paired_ratio_ci(*_columns(values_a, m.ratio), *_columns(values_b, m.ratio))
            else:
                out[m.key] = paired_mean_ci(*_columns(values_a, (m.key,)), *_columns(values_b, (m.key,)))
        return out


def _columns(values: list[Scores], keys: tuple[str, ...]) -> list[list[float]]:
    """Per-clip numbers under each key (NaN where a clip has none)."""
    return [[_number(v.get(key)) for v in values] for key in keys]


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float | np.floating | np.integer) else float("nan")


def conform(audio: np.ndarray, problems: list[str], what: str) -> np.ndarray:
    """Mono float32 in [-1, 1], at least MIN_SAMPLES long; what had to be fixed is appended to `problems`."""
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):  # PCM samples: full scale is the type's range
        audio = audio / np.iinfo(audio.dtype).max
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise ValueError(f"expected (samples,) or (samples, channels) audio, got shape {audio.shape}")
    if len(audio) < MIN_SAMPLES:
        audio = np.concatenate([audio, np.zeros(MIN_SAMPLES - len(audio), np.float32)])
    bad = ~np.isfinite(audio)
    if bad.any():
        problems.append(f"{what}: {int(bad.sum())} NaN/inf samples set to 0")
        audio = np.where(bad, 0.0, audio).astype(np.float32)
    over = np.abs(audio) > 1.0
    if over.mean() > 0.001:  # a resampler's overshoot on a full-scale recording is not worth a line
        problems.append(f"{what}: {over.mean():.1%} of samples beyond ±1, clipped")
    return np.clip(audio, -1.0, 1.0)


def evaluate(clips: list[Clip], systems: list[System], judges: list[Judge], progress: bool = True,
             plotted_clips: int = 12) -> Results:
    """Score every system's output for every clip (module docstring); the log-mels of the first
    `plotted_clips` clips are kept for the report's plots."""
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ValueError(f"two systems share a name: {names}")
    results = Results(clips=list(clips), systems=names, metrics=[m for j in judges for m in j.metrics],
                      rows={n: {} for n in names}, about={s.name: getattr(s, "about", "") for s in systems})
    refs: dict[str, RefClip] = {}
    timing = results.timing
    for index, clip in enumerate(tqdm(clips, desc="eval", unit="clip", disable=not progress)):
        started = time.perf_counter()
        try:
            reference = conform(clip.reference(), results.problems, f"{clip.id} reference")
        except ValueError as e:
            results.problems.append(f"{clip.id}: no reference audio ({e}); clip skipped")
            continue
        refs[clip.id] = ref = RefClip(clip, reference)
        timing["read references"] += time.perf_counter() - started
        for system in systems:
            started = time.perf_counter()
            try:
                audio = conform(system.generate(clip), results.problems, f"{clip.id} {system.name}")
            except (MissingOutput, ValueError) as e:
                results.problems.append(f"{clip.id} {system.name}: no output ({e})")
                continue
            finally:
                timing[f"generate: {system.name}"] += time.perf_counter() - started
                notes = getattr(system, "notes", None)
                if notes:
                    results.problems.extend(f"{clip.id} {system.name}: {note}" for note in notes)
                    notes.clear()
            scores: Scores = {"seconds": len(audio) / mel.SAMPLE_RATE}
            for judge in judges:
                started = time.perf_counter()
                try:
                    scores.update(judge.score(audio, ref))
                except Exception as e:  # one judge failing on one output must not lose the run
                    log.warning("%s judge failed on %s / %s: %s", judge.name, clip.id, system.name, e)
                    results.problems.append(f"{clip.id} {system.name}: {judge.name} failed ({e!r})")
                timing[f"judge: {judge.name}"] += time.perf_counter() - started
            results.rows[system.name][clip.id] = scores
            if index < plotted_clips:
                results.mels[(system.name, clip.id)] = mel.log_mel(audio)
        if "mouth" in ref.cache:
            results.mouth[clip.id] = ref.cache["mouth"]
    for judge in judges:
        started = time.perf_counter()
        judge.finish(results.rows, refs)
        timing[f"judge: {judge.name}"] += time.perf_counter() - started
    return results
