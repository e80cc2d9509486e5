"""The #6 eval table in one command: a fixed list of GRID-grammar clips of a corpus split, then `voxsight
eval` over it with the reference, vocoder and generated rows, and paired differences.

Run: `.venv/bin/python bench/eval_table.py CORPUS --cache FEATURES [--split test] [--per-speaker 12]
[--rows quick|full] [--models lipreader=PATH,melgen=PATH] [--guidance w2=0.1] [--out out/eval-table]`.

The list (OUT/clips.txt) is the first `--per-speaker` GRID clips of each speaker of the split in clip-id
order, so the same corpus always gives the same list (36 clips for the 3 test speakers of the default
corpus). CORPUS may also be a folder of real clips (../shared/real/grid-dev): every clip is then used.
Rows `quick`: reference, vocoders, generated at the defaults (the shipped mel prior speaks the phones the
aligner reads on the lips), MelGen on the lips alone (prior_mode off), that with ASR guidance toward
GRID-grammar text, with guidance toward the reference text (a diagnostic: how far guidance gets with every
word right), and the prior speaking GRID-grammar text (decode grid: what a command-vocabulary robot would
run);
`full` adds, for MelGen on the lips alone, the NFE sweep (1, 2, 8), the 400-step DDPM reference sampler and
the streamed engine (its prior speaking the aligner's phones, and MelGen on the lips alone), and MelGen
refining the prior's mel (prior_mode refine).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.clipsets import CORPUS_MANIFEST, Clip, load_clips
from engines.eval.cli import main as eval_main
from engines.text.charset import decode, encode
from engines.text.ctc import GRID_GRAMMAR

LIPS = "prior_mode=off"  # MelGen on the lips alone: the rows that measure the sampler and guidance
FULL = (f"{LIPS},nfe=1", f"{LIPS},nfe=2", f"{LIPS},nfe=8", f"{LIPS},sampler=ddpm,nfe=400")


def table_clips(corpus: Path, split: str, per_speaker: int, kind: str = "grid") -> list[Clip]:
    """The first `per_speaker` GRID clips (`kind` "open": open-vocabulary ones) with video of each speaker of
    `split` (module docstring); every clip with video of a folder of real clips."""
    if not (corpus / CORPUS_MANIFEST).is_file():
        return [c for c in load_clips(corpus) if c.video is not None]
    chosen: dict[str, list[Clip]] = defaultdict(list)
    for clip in sorted(load_clips(corpus, split=split), key=lambda c: c.id):
        grid = clip.text is not None and decode(encode(clip.text)) in GRID_GRAMMAR
        wanted = grid if kind == "grid" else clip.text is not None and not grid
        if clip.video is not None and wanted and len(chosen[clip.speaker_key]) < per_speaker:
            chosen[clip.speaker_key].append(clip)
    return [clip for speaker in sorted(chosen) for clip in chosen[speaker]]


def clip_arguments(description: str | None, per_speaker: int) -> argparse.ArgumentParser:
    """A parser with the arguments that choose `table_clips` (corpus, --split, --per-speaker) and the
    feature cache they are read from (--cache)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", type=Path)
    p.add_argument("--cache", default="", help="feature cache folder (no video is tracked twice)")
    p.add_argument("--split", default="test")
    p.add_argument("--per-speaker", type=int, default=per_speaker)
    return p


def main() -> int:
    p = clip_arguments(__doc__, per_speaker=12)
    p.add_argument("--rows", choices=("quick", "full"), default="quick")
    p.add_argument("--models", default="", help="model overrides, e.g. lipreader=runs/x/latest.pt,melgen=...")
    p.add_argument("--guidance", default="w2=0.1", help="the guided rows' settings, e.g. "
                   "w2=0.1,asr_input=x0_denoiser (toward GRID-grammar text, and toward the reference text)")
    p.add_argument("--out", type=Path, default=Path("out/eval-table"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    listing = args.out / "clips.txt"
    paths = [str(c.video.resolve()) for c in table_clips(args.corpus, args.split, args.per_speaker)]
    if not paths:
        print(f"{args.corpus}: no GRID clip in split {args.split}", file=sys.stderr)
        return 2
    listing.write_text("".join(f"{path}\n" for path in paths))
    base = "engines.synth.systems:lip2speech"
    cache = [f"cache={args.cache}"] if args.cache else []
    common = [x for x in (args.models, *cache) if x]
    guided = [f"{LIPS},{args.guidance},decode=grid", f"{LIPS},{args.guidance},guide=reference"]
    rows = ["", LIPS, *guided, "decode=grid"] + (list(FULL) if args.rows == "full" else [])
    systems = [",".join([base, *common, row] if row else [base, *common]) for row in rows]
    if args.rows == "full":
        # a stream's prior speaks phones its own aligner reads on the streaming reader: no text reader
        offline_only = {"aligner", "prior", "text_reader"}
        stream_models = [x for x in args.models.split(",") if x and x.split("=")[0] not in offline_only]
        stream = ",".join([f"{base}_stream", *stream_models, *cache])
        systems += [stream, ",".join([base, *common, "prior_mode=refine,nfe=2"]), f"{stream},{LIPS}"]
    argv = [str(listing), "--judges", "whisper,sphinx,stoi", "--out", str(args.out / "report"),
            "--system", "engines.synth.systems:vocoder"]
    for spec in systems:
        argv += ["--system", spec]
    # Rows: 1 reference, 2 Griffin-Lim, 3 our vocoder, 4 generated, 5 MelGen on the lips alone, 6 that guided,
    # 7 guided toward the reference text, 8 generated from GRID-grammar text, then the full rows (9-11 NFE 1,
    # 2, 8; 12 DDPM; 13 streamed; 14 MelGen refining the prior's mel; 15 streamed by MelGen on the lips).
    argv += ["--compare", "4:5", "--compare", "8:5", "--compare", "6:5", "--compare", "7:5"]
    if args.rows == "full":
        argv += ["--compare", "5:12", "--compare", "13:15", "--compare", "15:5", "--compare", "14:4"]
    print(f"{len(paths)} clips → {listing}")
    return eval_main(argv)


if __name__ == "__main__":
    sys.exit(main())
