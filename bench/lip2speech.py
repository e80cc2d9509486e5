"""Compute cost of offline lip-to-speech per configuration: seconds of compute per second of speech, per
stage, on this CPU (one thread by default), over the first clips of a list or corpus.

Run: `.venv/bin/python bench/lip2speech.py CLIPS [--cache FEATURES] [--limit 8] [--threads 1]
[--config nfe=4 --config nfe=1 ...]` with the shipped weights (or VOXSIGHT_WEIGHTS). Each --config is
key=value[,key=value] over SynthParams. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.clipsets import load_clips
from engines.eval.systems import make_system

DEFAULT_CONFIGS = ("nfe=1", "nfe=2", "nfe=4", "nfe=8", "nfe=4,w2=0", "sampler=ddpm,nfe=400")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", help="a corpus folder, GRID folder or list file (engines/clipsets.py)")
    p.add_argument("--cache", default="", help="feature cache folder (tracking is not part of the figures)")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", action="append", help="SynthParams overrides, key=value[,key=value]")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clips = load_clips(args.clips, limit=args.limit)
    print(f"\n{len(clips)} clips of {args.clips}, {args.threads} thread(s)\n")
    stages = ("frame", "reader", "decode", "identity", "mel", "vocoder")
    print("| config | " + " | ".join(stages) + " | total s per s of speech |")
    print("|---|" + "---|" * (len(stages) + 1))
    for config in args.config or DEFAULT_CONFIGS:
        spec = "engines.synth.systems:lip2speech" + (f",cache={args.cache}" if args.cache else "")
        system = make_system(f"{spec},{config}")
        for clip in clips:
            system.generate(clip)
        per = {k: v / system.speech_s for k, v in system.seconds.items()}
        cells = " | ".join(f"{per.get(s, 0.0):.3f}" for s in stages)
        print(f"| {config} | {cells} | **{sum(per.values()):.3f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
