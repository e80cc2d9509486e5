"""Corpus synthesis benchmark: how fast `voxsight data synth` makes speech + talking-face video + noisy
copies (tracking is not part of synthesis), how much disk an hour takes, and the split it makes.
Target (issue 5): >= 5x real time on 2 cores.

Run: `.venv/bin/python bench/corpus.py [--minutes M] [--jobs 2] [--seed S] [--out DIR] [--faces DIR]`.
Makes a fresh corpus (a temporary folder unless --out), in a fresh process, as a user would: process
start-up, imports and the per-photo face models are counted. Two speeds: by wall time (what the machine
gave this run, shared with whatever else ran) and by CPU time (seconds of speech per CPU second of every
process of the run, times the jobs: the speed on that many cores used by nothing else). Prints markdown
tables.
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
TARGET_X = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes of speech to make (5)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="keep the corpus here (default: a temporary folder)")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    args = parser.parse_args()
    if not args.faces.is_dir():
        print(f"no face photos at {args.faces}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vx-corpus-bench") as tmp:
        out = args.out or Path(tmp) / "corpus"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "node", "data", "synth", "--out", str(out), "--hours",
                        str(args.minutes / 60), "--seed", str(args.seed), "--jobs", str(args.jobs),
                        "--faces", str(args.faces), "--no-progress"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text())
    made_h = summary["made_s"] / 3600
    x = summary["made_s"] / wall
    print(f"## voxsight data synth: {summary['total_clips']} clips, {60 * made_h:.1f} min of speech, "
          f"--jobs {args.jobs}\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| wall time (fresh process) | {wall:.1f} s |")
    cpu_x = summary["cpu_x_real_time"]
    print(f"| speed by wall time | {x:.2f}x real time |")
    print(f"| speed by CPU time ({summary['cpu_s']:.0f} CPU s) | {cpu_x:.2f}x real time on {args.jobs} cores "
          f"(target >= {TARGET_X:g}x on 2) |")
    print(f"| size | {summary['size_bytes'] / 1e6:.1f} MB, {summary['mb_per_hour']} MB per hour of speech |")
    print(f"| predicted for 2.2 h | {2.2 * 3600 / x / 60:.0f} min at this wall speed, "
          f"{2.2 * 3600 / cpu_x / 60:.0f} min on idle cores, "
          f"{2.2 * summary['mb_per_hour'] / 1e3:.2f} GB |")
    cpu = summary["stage_cpu_s"]
    total_cpu = sum(cpu.values())
    print("\n| stage | CPU seconds (all processes) | per second of speech |")
    print("|---|---|---|")
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.1f} | {seconds / max(summary['made_s'], 1e-9) * 1000:.0f} ms |")
    print(f"| all | {total_cpu:.1f} | {total_cpu / max(summary['made_s'], 1e-9) * 1000:.0f} ms |")
    print("\n| split | clips | hours | speakers |")
    print("|---|---|---|---|")
    for split in ("train", "val", "test"):
        print(f"| {split} | {summary['clips'][split]} | {summary['hours'][split]:.3f} | "
              f"{summary['speakers'][split]} |")
    print("\n| speakers | count | photos | voice settings |")
    print("|---|---|---|---|")
    for name, row in summary["speaker_split"].items():
        print(f"| {name} | {row['speakers']} | {row['photos']} | {row['voice_settings']} |")
    return 0 if cpu_x >= TARGET_X else 1


if __name__ == "__main__":
    sys.exit(main())
