"""Evaluation benchmark: the wall time of a full `voxsight eval` report (every judge, the reference and
vocoder rows) over the three real GRID clips, and where that time goes. Target: under 2 minutes.

Run: `.venv/bin/python bench/eval.py [--clips DIR] [--runs N]`. Each run is a fresh process, so model
loading and first-call compilation (numba in librosa, the face-mesh graph) are counted, as a user
meets them. Prints markdown tables; the per-stage figures come from the report's own timing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 120.0


def run_once(clips: Path, out: Path) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "node", "eval", str(clips), "--out", str(out), "--no-progress"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    return wall, json.loads((out / "report.json").read_text())["timing_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "real" / "grid-dev")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if not args.clips.exists():
        print(f"no clips at {args.clips}", file=sys.stderr)
        return 1
    walls, stages = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="vx-eval-bench") as tmp:
            wall, timing = run_once(args.clips, Path(tmp))
        walls.append(wall)
        stages.append(timing)
    print(f"## voxsight eval: full report over {args.clips} ({args.runs} run(s), fresh process each)\n")
    print("| stage | seconds (mean over runs) | share of the measured stages |")
    print("|---|---|---|")
    names = list(stages[0])
    means = {name: sum(t.get(name, 0.0) for t in stages) / len(stages) for name in names}
    measured = sum(means.values())
    for name in sorted(names, key=means.get, reverse=True):
        print(f"| {name} | {means[name]:.2f} | {means[name] / measured:.0%} |")
    overhead = sum(walls) / len(walls) - measured
    print(f"| process start, imports, clip listing, report files | {overhead:.2f} | – |")
    worst = max(walls)
    verdict = "under" if worst < TARGET_S else "OVER"
    print(f"\nwall time per report: {', '.join(f'{w:.1f} s' for w in walls)} "
          f"(target < {TARGET_S:.0f} s: {verdict})")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
