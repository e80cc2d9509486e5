"""`voxsight eval`: score generated speech against references with independent judges.

    voxsight eval CLIPS [--layout L] [--split S] [--limit N]
                  [--wavs DIR[=NAME]]... [--system SPEC]... [--judges a,b,...] [--compare A:B]... [--out DIR]

Rows: the reference audio, the reference through mel → vocoder (Griffin-Lim until our vocoder exists),
then each --wavs folder and each --system, in the order given (numbered from 1 in the report's tables).
--compare A:B (A, B: a row number or an exact row name, e.g. 3:4 or "generated (w2=0.1):generated (w2=0)")
adds A − B per metric over the clips both rows have, with a paired 95 % interval (engines/eval/stats.py).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from engines.eval.clips import LAYOUTS, load_clips
from engines.eval.evaluate import evaluate
from engines.eval.judges import JUDGES, make_judges
from engines.eval.report import paired_table, summary_tables, write_report
from engines.eval.systems import GriffinLimVocoder, Reference, System, WavFolder, make_system


def _wav_folder(spec: str) -> WavFolder:
    folder, _, name = spec.partition("=")
    return WavFolder(folder, name or None)


def _row_named(token: str, rows: list[str]) -> str | None:
    token = token.strip()
    if token.isdecimal():  # a number is the row's place in the report's tables, counted from 1
        return rows[int(token) - 1] if 1 <= int(token) <= len(rows) else None
    return token if token in rows else None


def compare_pairs(specs: list[str], rows: list[str]) -> list[tuple[str, str]]:
    """(A, B) row names from `--compare A:B` specs, A and B each a 1-based row number or an exact row name
    (ValueError, listing the rows, for anything else)."""
    pairs = []
    for spec in specs:
        readings = set()
        for at in (i for i, char in enumerate(spec) if char == ":"):  # a row name may hold a ':' itself
            a, b = _row_named(spec[:at], rows), _row_named(spec[at + 1:], rows)
            if a is not None and b is not None:
                readings.add((a, b))
        if len(readings) != 1:
            listed = "; ".join(f"{i} = {name!r}" for i, name in enumerate(rows, 1))
            raise ValueError(f"--compare {spec!r}: {_unreadable(spec, readings, rows)}; A and B are each a "
                             f"row number or an exact row name, rows: {listed}")
        a, b = readings.pop()
        if a == b:
            raise ValueError(f"--compare {spec!r}: compares row {a!r} with itself")
        pairs.append((a, b))
    return pairs


def _unreadable(spec: str, readings: set[tuple[str, str]], rows: list[str]) -> str:
    if ":" not in spec:
        return "expected A:B"
    if readings:
        return f"reads as {len(readings)} different pairs {sorted(readings)}"
    if spec.count(":") == 1:
        return "no row " + " or ".join(repr(t) for t in spec.split(":") if _row_named(t, rows) is None)
    return "names no two rows"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="voxsight eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", help="a corpus, GRID or LRS3 folder, or a list file (see engines/eval/clips.py)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="how CLIPS is laid out (default: guess)")
    p.add_argument("--split", help="only this sub-folder of CLIPS (e.g. test)")
    p.add_argument("--limit", type=int, help="only the first N clips (sorted by id)")
    p.add_argument("--wavs", action="append", default=[], metavar="DIR[=NAME]",
                   help="a folder of generated WAVs named after the clips (ID.wav): one row; repeatable")
    p.add_argument("--system", action="append", default=[], metavar="SPEC",
                   help="a system to run: NAME or package.module:factory, then ,key=value... ; repeatable")
    p.add_argument("--judges", default=",".join(JUDGES),
                   help=f"comma-separated subset of: {', '.join(JUDGES)} (default: all)")
    p.add_argument("--compare", action="append", default=[], metavar="A:B",
                   help="also report A − B with a paired 95 %% interval over the clips both rows have; A, B: "
                        "a row number (from 1, as in the tables) or an exact row name; repeatable")
    p.add_argument("--vocoder-iters", type=int, default=32, help="Griffin-Lim iterations of the vocoder row")
    p.add_argument("--out", type=Path, default=Path("out/eval"), help="report folder (default out/eval)")
    p.add_argument("--plots", type=int, default=12, help="mel plots for at most this many clips")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        clips = load_clips(args.clips, args.layout, args.split, args.limit)
        judges = make_judges([j.strip() for j in args.judges.split(",") if j.strip()])
        systems: list[System] = [Reference(), GriffinLimVocoder(args.vocoder_iters)]
        systems += [_wav_folder(spec) for spec in args.wavs]
        systems += [make_system(spec) for spec in args.system]
        pairs = compare_pairs(args.compare, [s.name for s in systems])  # checked before any generation
    except (ValueError, TypeError, ImportError, AttributeError) as e:
        print(f"voxsight eval: {e}", file=sys.stderr)
        return 2
    print(f"{len(clips)} clips; rows: {', '.join(f'{i} {s.name}' for i, s in enumerate(systems, 1))}; "
          f"judges: {', '.join(j.name for j in judges)}")
    try:
        results = evaluate(clips, systems, judges, progress=not args.no_progress, plotted_clips=args.plots)
    except ValueError as e:
        print(f"voxsight eval: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    command = "voxsight eval " + shlex.join(argv)
    path = write_report(results, args.out, command, str(args.clips), pairs)
    print(summary_tables(results))
    if pairs:
        print("\n**Paired differences**\n\n" + paired_table(results, pairs))
    print(f"\nreport: {path} (written in {time.perf_counter() - started:.1f} s)")
    for problem in results.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
