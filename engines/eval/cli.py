"""`voxsight eval`: score generated speech against references with independent judges.

    voxsight eval CLIPS [--layout L] [--split S] [--limit N]
                  [--wavs DIR[=NAME]]... [--system SPEC]... [--judges a,b,...] [--out DIR]

Rows: the reference audio, the reference through mel → vocoder (Griffin-Lim until our vocoder exists),
then each --wavs folder and each --system, in the order given.
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
from engines.eval.report import summary_tables, write_report
from engines.eval.systems import GriffinLimVocoder, Reference, System, WavFolder, make_system


def _wav_folder(spec: str) -> WavFolder:
    folder, _, name = spec.partition("=")
    return WavFolder(folder, name or None)


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
    except (ValueError, TypeError, ImportError, AttributeError) as e:
        print(f"voxsight eval: {e}", file=sys.stderr)
        return 2
    print(f"{len(clips)} clips; rows: {', '.join(s.name for s in systems)}; "
          f"judges: {', '.join(j.name for j in judges)}")
    try:
        results = evaluate(clips, systems, judges, progress=not args.no_progress, plotted_clips=args.plots)
    except ValueError as e:
        print(f"voxsight eval: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    command = "voxsight eval " + shlex.join(argv)
    path = write_report(results, args.out, command, str(args.clips))
    print(summary_tables(results))
    print(f"\nreport: {path} (written in {time.perf_counter() - started:.1f} s)")
    for problem in results.problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
