"""Does ASR guidance make speech that only the guidance ASR hears? GRID-grammar WER of the same generated
speech as heard by the guidance ASR (its own mel of the wav, t = 0, GRID-grammar beam) and by sphinx-GRID (the
judge), unguided and guided toward the reference text and toward the lip-read text.

Run: `.venv/bin/python bench/guidance_asr.py CLIPS --cache FEATURES [--asr NAME_OR_PATH] [--w2 0.1]
[--every 1] [--threads 1]`; CLIPS is a list file or corpus folder (engines/clipsets.py), e.g. an eval
table's clips.txt. The guidance ASR is never a judge (it steers our guidance); its column says only how
far guidance got toward its own target. Session 12, 108 test clips: guided toward the reference text, the
shipped ASR hears 12.7 % and sphinx 15.7 %; an ASR fine-tuned on MelGen's own speech hears its guided
speech at 5.1 % while sphinx hears 17.4 %.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.audio.mel import log_mel, normalise
from engines.clipsets import load_clips
from engines.eval.judges.asr import SphinxGrid, errors
from engines.eval.stats import ratio_ci
from engines.eval.systems import make_system
from engines.eval.text import is_grid_sentence
from engines.text.ctc import GRID_GRAMMAR, beam_search
from engines.train.checkpoint import load_ref


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", help="a corpus folder, GRID folder or list file (engines/clipsets.py)")
    p.add_argument("--cache", default="", help="feature cache folder")
    p.add_argument("--asr", default="asr", help="the guidance ASR: shipped name or checkpoint path")
    p.add_argument("--w2", type=float, default=0.1, help="ASR guidance weight of the guided rows")
    p.add_argument("--every", type=int, default=1, help="use every Nth GRID clip")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clips = [c for c in load_clips(args.clips) if c.text and is_grid_sentence(c.text)][::args.every]
    # guidance steers MelGen: its speech from the lips alone, without the mel prior
    base = "engines.synth.systems:lip2speech,prior_mode=off" + (f",cache={args.cache}" if args.cache else "")
    guided = f"{base},asr={args.asr},w2={args.w2}"
    rows = {"unguided": make_system(base),
            "guided toward the reference text": make_system(f"{guided},guide=reference"),
            "guided toward the GRID-grammar lip-read text": make_system(f"{guided},decode=grid")}
    asr, sphinx = load_ref(args.asr, "asr").model.eval(), SphinxGrid()
    # row → per clip [guidance-ASR word errors, sphinx word errors, reference words]
    counts: dict[str, list[tuple[int, int, int]]] = {name: [] for name in rows}
    for clip in tqdm(clips, unit="clip", desc="guidance"):
        for name, system in rows.items():
            wav = system.generate(clip)
            with torch.no_grad():
                mel = torch.from_numpy(normalise(log_mel(wav)))[None]
                heard = beam_search(asr(mel, 0)[0], 16, GRID_GRAMMAR)[0].text
            ours, words = errors(clip.text, heard)[:2]
            counts[name].append((ours, errors(clip.text, sphinx.transcribe(wav))[0], words))
    print(f"\n{len(clips)} GRID clips of {args.clips}; guidance ASR {args.asr}, w2 {args.w2}\n")
    print("| speech | WER, the guidance ASR | WER sphinx-GRID (judge) |\n|---|---|---|")
    for name, per_clip in counts.items():
        ours, judged, words = (np.array(v, dtype=float) for v in zip(*per_clip, strict=True))
        cells = [ratio_ci(x, words) for x in (ours, judged)]
        print(f"| {name} | " + " | ".join(f"{100 * c.value:.1f} % ± {100 * c.half_width:.1f}" for c in cells)
              + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
