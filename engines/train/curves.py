"""Training curves: one CSV row per logged step (training losses, learning rate, validation metrics)
and a PNG with one panel per quantity.

The whole CSV is rewritten atomically on each write (a few thousand rows at most), so its columns can
grow when a new quantity appears (validation metrics arrive later than losses) and a resumed run can
drop the rows logged after the checkpoint it resumes from.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

STEP = "step"


class Curves:
    """The curves of one run, kept in memory and mirrored to `csv_path`."""

    def __init__(self, csv_path: Path | str) -> None:
        self.path = Path(csv_path)
        self.rows: dict[int, dict[str, float]] = {}
        if self.path.is_file():
            for row in read_csv(self.path):
                step = int(row.pop(STEP))
                self.rows[step] = row

    def add(self, step: int, values: dict[str, float]) -> None:
        """Merge `values` into the row of `step`."""
        self.rows.setdefault(int(step), {}).update({k: float(v) for k, v in values.items()})

    def truncate(self, step: int) -> None:
        """Forget the rows after `step` (they belong to a run that is being resumed from `step`)."""
        self.rows = {s: r for s, r in self.rows.items() if s <= step}

    @property
    def columns(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self.rows.values():
            names.update(dict.fromkeys(row))
        return [STEP, *names]

    def write(self) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        for step in sorted(self.rows):
            writer.writerow({STEP: step, **{k: f"{v:.6g}" for k, v in self.rows[step].items()}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, self.path)
        return self.path

    def plot(self, png_path: Path | str, title: str = "") -> Path:
        return plot({c: self.series(c) for c in self.columns[1:]}, png_path, title)

    def series(self, column: str) -> tuple[list[int], list[float]]:
        steps = [s for s in sorted(self.rows) if column in self.rows[s]]
        return steps, [self.rows[s][column] for s in steps]


def read_csv(path: Path | str) -> list[dict[str, float]]:
    """The rows of a curves CSV as {column: value}, empty cells left out."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot(series: dict[str, tuple[list[int], list[float]]], png_path: Path | str, title: str = "") -> Path:
    """One panel per quantity against the step; a log scale where a quantity is positive and spans more
    than a decade (losses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, (steps, _) in series.items() if steps]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = series[name]
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, lw=1.2,
                color="tab:orange" if name.startswith("val") else "tab:blue")
        finite = [v for v in values if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 10:
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(axis="y", useOffset=False)  # a constant learning rate reads as itself
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(STEP, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    if not names:
        axes[0, 0].text(0.5, 0.5, "nothing logged yet", ha="center", va="center")
    if title:
        fig.suptitle(title)
    # Fixed margins: tight_layout would render the figure twice, which dominates the cost of a plot.
    height = fig.get_figheight()
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.5 / height, top=1 - (0.6 if title else 0.35) / height,
                        wspace=0.28, hspace=0.5)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
