"""`voxsight data synth | morph | features`: make the synthetic audio-visual corpus; derive training faces
from its people; fill a feature cache.

    voxsight data synth --out DIR (--hours H | --clips N) [--seed S] [--faces DIR] [--grid-fraction F]
                        [--val-fraction F] [--jobs N] [--noisy KINDS]
    voxsight data morph --corpus DIR --out DIR [--faces DIR] [--per-pair N] [--seed S]
    voxsight data features SOURCE --cache DIR [--layout L] [--split S] [--jobs N]

synth: see engines/data/corpus.py (layout, determinism, resuming). Rerunning the same command completes
an interrupted corpus; a larger --hours or --clips extends it.
morph: a folder of faces morphed from pairs of the corpus's training people, with a speakers.csv that
makes them training speakers with training voices (engines/data/morph.py); give it to synth --faces.
features: tracks and mels every clip of a corpus folder (ours, GRID, LRS3) into the cache that the
training loaders read (engines/data/loaders.py), so training never decodes a video.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engines.data.corpus import NOISE_KINDS, CorpusError, RunOptions, Settings, synth

DEFAULT_FACES = Path(__file__).resolve().parents[2].parent / "shared" / "faces"


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = sorted(set(kinds) - set(NOISE_KINDS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown noise kind(s) {unknown}; known: {', '.join(NOISE_KINDS)}")
    return kinds


def _synth(args: argparse.Namespace) -> int:
    faces = args.faces or DEFAULT_FACES
    settings = Settings(seed=args.seed, faces=str(Path(faces).resolve()), grid_fraction=args.grid_fraction,
                        noisy=args.noisy, val_fraction=args.val_fraction, closure=args.closure,
                        rest_open=args.rest_open)
    options = RunOptions(hours=args.hours, clips=args.clips, jobs=args.jobs, progress=not args.no_progress)
    summary = synth(args.out, settings, options)
    h = summary["hours"]
    print(f"{args.out}: {summary['total_clips']} clips, {summary['total_hours']:.3f} h "
          f"(train {h['train']:.3f}, val {h['val']:.3f}, test {h['test']:.3f}); "
          f"speakers train {summary['speakers']['train']}, test {summary['speakers']['test']}")
    print(f"  {summary['size_bytes'] / 1e6:.1f} MB ({summary['mb_per_hour']} MB/h); "
          f"made {summary['made_clips']} clips ({summary['made_s'] / 3600:.3f} h) "
          f"in {summary['wall_s']:.0f} s "
          f"on {summary['jobs']} process(es): {summary['x_real_time']}x real time")
    print(f"  summary: {Path(args.out) / 'summary.json'}")
    return 0


def _morph(args: argparse.Namespace) -> int:
    from engines.data.morph import make_folder

    summary = make_folder(args.corpus, args.faces or DEFAULT_FACES, args.out, per_pair=args.per_pair,
                          seed=args.seed, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


def _features(args: argparse.Namespace) -> int:
    from engines.data.loaders import load

    samples = load(args.source, args.cache, layout=args.layout, split=args.split)
    made = samples.prepare(jobs=args.jobs or os.cpu_count() or 1, progress=not args.no_progress)
    print(json.dumps({"clips": len(samples), "extracted": made, "cache": str(args.cache)}))
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="voxsight data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="make the synthetic audio-visual corpus")
    s.add_argument("--out", type=Path, required=True, help="corpus folder (created; resumed if it exists)")
    size = s.add_mutually_exclusive_group(required=True)
    size.add_argument("--hours", type=float, help="hours of speech to make")
    size.add_argument("--clips", type=int, help="number of clips to make")
    s.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    s.add_argument("--faces", type=Path, help=f"folder of face photos (default {DEFAULT_FACES})")
    s.add_argument("--grid-fraction", type=float, default=0.5, help="share of GRID-grammar sentences (0.5)")
    s.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the train speakers' clips that go to val, with held-out sentences (0.1)")
    s.add_argument("--closure", type=float, default=0.0,
                   help="how far tongue consonants close the mouth between syllables, 0-1 (default 0; "
                        "real mouths: 1, see engines.data.visemes)")
    s.add_argument("--rest-open", type=float, default=0.0,
                   help="each clip's mouth at rest is open by a random amount up to this jaw opening, 0-1 "
                        "(default 0: closed; many real speakers rest a little open, 0.1-0.3)")
    s.add_argument("--jobs", type=int, default=0, help="processes (default: every core)")
    s.add_argument("--noisy", type=_kinds, default=NOISE_KINDS,
                   help=f"noisy copies to write, comma separated, or none (default {','.join(NOISE_KINDS)})")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    m = sub.add_parser("morph", help="derive training faces from pairs of a corpus's training people")
    m.add_argument("--corpus", type=Path, required=True, help="the corpus whose training people to morph")
    m.add_argument("--out", type=Path, required=True, help="new folder for the morphs and their speakers.csv")
    m.add_argument("--faces", type=Path, help=f"the corpus's photo folder (default {DEFAULT_FACES})")
    m.add_argument("--per-pair", type=int, default=2, help="morphs per pair of people (2)")
    m.add_argument("--seed", type=int, default=0, help="which photos and blend weights (default 0)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = sub.add_parser("features", help="fill the training feature cache of a corpus folder")
    f.add_argument("source", type=Path, help="our corpus, a GRID or LRS3 folder, or a list file")
    f.add_argument("--cache", type=Path, required=True, help="feature cache folder")
    f.add_argument("--layout", default="auto", help="auto | corpus | grid | lrs3 | list")
    f.add_argument("--split", help="only this split (sub-folder)")
    f.add_argument("--jobs", type=int, default=0, help="processes (default: every core)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        return {"synth": _synth, "morph": _morph, "features": _features}[args.command](args)
    except (CorpusError, ValueError) as exc:
        print(f"voxsight data {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxsight data {args.command}: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
