"""The report: report.md (summary tables, paired differences of the rows asked for, per-clip transcripts,
problems, timing, the command line), report.json (everything, per clip), wer.png (per-clip WER) and
mel/CLIP.png (each row's log-mel under the reference's, with the mouth opening against the reference's
energy curve).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from engines.eval import mel
from engines.eval.evaluate import Results
from engines.eval.judges import Metric
from engines.eval.stats import Summary

GROUPS = (("quality", "Intelligibility and quality"), ("match", "Timing and voice"))
ARROWS = {"lower": " ↓", "higher": " ↑", "": ""}
MAX_PLOTTED_CLIPS = 40  # bars per chart, so it stays readable
PER_CLIP = ("stoi", "estoi", "dnsmos_ovrl", "av_offset_ms", "f0_err_st", "spk_id")  # beside the transcripts


def _fmt(m: Metric, s: Summary, row_n: int, delta: bool = False) -> str:
    """value ± half the CI; a difference (`delta`) is signed, and in percentage points for a percentage."""
    if math.isnan(s.value):
        return "–"
    scale, unit = (100.0, " pts" if delta else " %") if m.percent else (1.0, "")
    text = f"{s.value * scale:{'+' if delta else ''}.{m.digits}f}{unit}"
    if not math.isnan(s.half_width):
        text += f" ± {s.half_width * scale:.{m.digits}f}"
    return text + (f" (n={s.n})" if s.n != row_n else "")


def summary_tables(results: Results) -> str:
    """The summary tables in markdown: one numbered row per system (the numbers `--compare` takes), each
    cell the value ± half its 95 % CI."""
    summary = results.summary()
    parts = []
    for group, title in GROUPS:
        metrics = [m for m in results.metrics if m.table and m.group == group]
        if not metrics:
            continue
        header = " | ".join(m.label + ARROWS[m.better] for m in metrics)
        lines = [f"**{title}**", "", f"| # | system | n | {header} |", "|---" * (3 + len(metrics)) + "|"]
        for number, system in enumerate(results.systems, 1):
            n = len(results.rows[system])
            cells = [_fmt(m, summary[system][m.key], n) for m in metrics]
            lines.append(_row(number, system, n, *cells))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


PAIRED_NOTE = ("A − B over the clips both have; ↓ lower is better, ↑ higher, so negative Δ WER = A better. "
               "± half the 95 % interval: a paired bootstrap over clips (ratios: WER/CER, in percentage "
               "points, pts) or Student t of the per-clip differences (means); an interval that excludes 0 "
               "is a difference at the 95 % level.")


def paired_table(results: Results, pairs: Sequence[tuple[str, str]]) -> str:
    """The paired differences in markdown: one row per (A, B) pair of systems, a column per table metric."""
    metrics = [m for m in results.metrics if m.table]
    header = " | ".join(f"Δ {m.label}{ARROWS[m.better]}" for m in metrics)
    lines = [f"| A | B | n | {header} |", "|---" * (3 + len(metrics)) + "|"]
    for a, b in pairs:
        n = len(results.shared(a, b))
        paired = results.paired(a, b)
        lines.append(_row(a, b, n, *[_fmt(m, paired[m.key], n, delta=True) for m in metrics]))
    return "\n".join([*lines, "", PAIRED_NOTE])


def _clip_table(results: Results) -> str:
    shown = [m for m in results.metrics if m.key in PER_CLIP]
    lines = ["| clip | system | whisper heard | WER w | sphinx heard | WER s | " +
             " | ".join(m.label for m in shown) + " |", "|---" * (6 + len(shown)) + "|"]
    for clip in results.clips:
        for system in results.systems:
            v = results.rows[system].get(clip.id)
            if v is None:
                continue
            cells = [v.get("whisper_text", ""), _pct(v.get("wer_whisper")), v.get("sphinx_text", ""),
                     _pct(v.get("wer_sphinx"))]
            cells += [_pct(v.get(m.key)) if m.percent else _num(v.get(m.key), m.digits) for m in shown]
            lines.append(_row(clip.id, system, *cells))
    return "\n".join(lines)


def _row(*cells: object) -> str:
    """A markdown table row; a | inside a cell (a transcript, a row name) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _pct(x: Any) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.0f} %"


def _num(x: Any, digits: int) -> str:
    return "–" if x is None or not isinstance(x, int | float) or not np.isfinite(x) else f"{x:.{digits}f}"


def markdown(results: Results, command: str, source: str, plots: list[Path], out: Path,
             pairs: Sequence[tuple[str, str]] = ()) -> str:
    text_of = {c.id: c.text or "(none: whisper's transcript of the reference)" for c in results.clips}
    lines = [
        "# voxsight eval", "",
        f"Command: `{command}`", "",
        f"Clips: {len(results.clips)} from `{source}`; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        "Cells: mean ± half the 95 % confidence interval (Student t over clips); WER/CER: corpus-level "
        "(all errors / all reference words) ± half its bootstrap interval. ↓ lower is better, ↑ higher. "
        "AV offset: ms the audio's loudness lags the mouth opening (read against the reference row). "
        "(n=k): only k clips had a value (pocketsphinx scores GRID-grammar clips only).", "",
        summary_tables(results), "",
        "Rows:", "",
        *[f"{i}. **{s}**: {results.about.get(s) or '–'}" for i, s in enumerate(results.systems, 1)], "",
        *(["## Paired differences", "", paired_table(results, pairs), ""] if pairs else []),
        "## Per clip", "",
        "| clip | speaker | transcript |", "|---|---|---|",
        *[_row(c.id, c.speaker or "–", text_of[c.id]) for c in results.clips], "",
        _clip_table(results), "",
    ]
    missing = {s: results.missing(s) for s in results.systems}
    if any(missing.values()) or results.problems:
        lines += ["## Problems", ""]
        lines += [f"- {s}: no output for {len(ids)} clip(s): {', '.join(ids[:10])}"
                  for s, ids in missing.items() if ids]
        lines += [f"- {p}" for p in results.problems]
        lines.append("")
    lines += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [_row(stage, f"{seconds:.2f}") for stage, seconds in results.timing.items()]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(results: Results, command: str, source: str,
            pairs: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    summary = results.summary()
    return _jsonable({
        "command": command,
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "systems": results.systems,
        "metrics": [{"key": m.key, "label": m.label, "better": m.better,
                     "aggregate": "ratio" if m.ratio else "mean"} for m in results.metrics],
        "clips": [{"id": c.id, "text": c.text, "speaker": c.speaker, "audio": str(c.audio),
                   "video": str(c.video) if c.video else None} for c in results.clips],
        "summary": {s: {k: v.as_dict() for k, v in row.items()} for s, row in summary.items()},
        "paired": [{"a": a, "b": b, "n": len(results.shared(a, b)),
                    **{k: v.as_dict() for k, v in results.paired(a, b).items()}} for a, b in pairs],
        "per_clip": {s: {cid: {k: v for k, v in scores.items() if not isinstance(v, np.ndarray | type(None))}
                         for cid, scores in row.items()} for s, row in results.rows.items()},
        "missing": {s: results.missing(s) for s in results.systems},
        "problems": results.problems,
        "timing_s": dict(results.timing),
    })


def _safe(clip_id: str) -> str:
    return clip_id.replace("/", "__")


def plot_wer(results: Results, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("wer_whisper", "wer_sphinx")
            if any(np.isfinite(v.get(k, np.nan)) for row in results.rows.values() for v in row.values())]
    if not keys:
        return None
    clips = [c.id for c in results.clips[:MAX_PLOTTED_CLIPS]]
    n_systems = len(results.systems)
    fig, axes = plt.subplots(len(keys), 1, figsize=(max(6.0, 0.5 * len(clips) * n_systems), 3.2 * len(keys)),
                             squeeze=False)
    width = 0.8 / n_systems
    for ax, key in zip(axes[:, 0], keys, strict=True):
        for i, system in enumerate(results.systems):
            values = [100 * results.rows[system].get(c, {}).get(key, np.nan) for c in clips]
            ax.bar(np.arange(len(clips)) + (i - (n_systems - 1) / 2) * width, np.nan_to_num(values), width,
                   label=system)
        ax.set_xticks(np.arange(len(clips)), clips, rotation=30 if len(clips) > 6 else 0, ha="right")
        ax.set_ylabel(f"{'whisper' if key == 'wer_whisper' else 'sphinx-GRID'} WER %")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncols=min(4, n_systems))
    more = len(results.clips) > MAX_PLOTTED_CLIPS
    axes[0, 0].set_title("WER per clip" + (f" (first {MAX_PLOTTED_CLIPS} clips)" if more else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_mels(results: Results, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for clip in results.clips:
        systems = [s for s in results.systems if (s, clip.id) in results.mels]
        if not systems:
            continue
        mouth = results.mouth.get(clip.id)
        fig, axes = plt.subplots(len(systems) + 1, 1, figsize=(8, 1.9 * (len(systems) + 1)), squeeze=False)
        reference = results.mels[(systems[0], clip.id)]
        low, high = float(np.log(mel.LOG_FLOOR)), float(reference.max())
        for ax, system in zip(axes[:-1, 0], systems, strict=True):
            m = results.mels[(system, clip.id)]
            ax.imshow(m, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                      extent=(0, m.shape[1] / mel.FRAME_RATE, 0, m.shape[0]))
            heard = results.rows[system][clip.id].get("whisper_text")
            ax.set_title(f"{system}" + (f" — whisper: “{heard}”" if heard is not None else ""), fontsize=9)
            ax.set_ylabel("mel bin")
        ax = axes[-1, 0]
        energy = reference.mean(axis=0)
        t = np.arange(len(energy)) / mel.FRAME_RATE
        ax.plot(t, (energy - energy.mean()) / (energy.std() + 1e-9), lw=1, label=f"{systems[0]} energy (z)")
        if mouth is not None and np.isfinite(mouth[1]).any():
            times, opening = mouth
            ax.plot(times, (opening - np.nanmean(opening)) / (np.nanstd(opening) + 1e-9), lw=1.5,
                    label="mouth opening (z)")
        offsets = [f"{s} {results.rows[s][clip.id]['av_offset_ms']:.0f}" for s in systems
                   if np.isfinite(results.rows[s][clip.id].get("av_offset_ms", np.nan))]
        if offsets:
            ax.set_title("AV offset ms: " + ", ".join(offsets), fontsize=9)
        ax.set_xlim(0, reference.shape[1] / mel.FRAME_RATE)
        ax.set_xlabel("s")
        ax.legend(fontsize=8, loc="upper right")
        fig.suptitle(f"{clip.id}: {clip.text or ''}", fontsize=10)
        fig.tight_layout()
        path = folder / f"{_safe(clip.id)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(results: Results, out: Path, command: str, source: str,
                 pairs: Sequence[tuple[str, str]] = ()) -> Path:
    """Write report.md, report.json and the PNGs (for the clips whose log-mels the results kept) under
    `out`, with the paired differences A − B of the `pairs` of system names; returns the markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plots = [p for p in [plot_wer(results, out / "wer.png")] if p]
    plots += plot_mels(results, out / "mel")
    results.timing["plots"] = time.perf_counter() - started
    report = to_json(results, command, source, pairs)
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    path = out / "report.md"
    path.write_text(markdown(results, command, source, plots, out, pairs))
    return path
