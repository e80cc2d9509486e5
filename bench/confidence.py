"""How well the reading confidence (engines.text.ctc.text_confidence, published with every transcript) tells
lips a reader reads from lips it cannot: per clip, the text decoded as the node decodes it and its
confidence, for the clips as recorded and played backwards (lips that move like speech and say nothing the
reader knows).

Run: `.venv/bin/python bench/confidence.py CORPUS --cache FEATURES [--split test] [--lipreader NAME_OR_PATH]
[--decode beam] [--limit N] [--low LINE]`. Features come from the training feature cache
(engines.data.loaders), as in bench/lipreading.py; `--split ''` reads a folder without splits
(../shared/real/grid-dev). Prints one table: confidence percentiles, the share below `--low` (the decoder's
line in engines.synth.engine.LOW_CONFIDENCE), word error rate, the rank correlation of confidence with each
clip's word errors, per sentence kind (GRID grammar or open vocabulary: `--decode grid` cannot spell the
latter, and says so with a confidence near 0); then per kind the AUROC of telling the recorded clips read
with at most one word wrong from the reversed ones, and the line midway between the recorded GRID sentences'
5th percentile and the backwards ones' 95th (how LOW_CONFIDENCE was set, with `--split val`).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.data.loaders import TorchSamples, load
from engines.synth.engine import LOW_CONFIDENCE, SynthParams, decode_text
from engines.text.charset import decode, encode
from engines.text.ctc import GRID_GRAMMAR, text_confidence
from engines.train.checkpoint import load_ref
from engines.train.recipes.common import edit_distance


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1]) if len(x) > 2 and rx.std() and ry.std() else float("nan")


def auroc(high: np.ndarray, low: np.ndarray) -> float:
    """P(a clip of `high` scores above one of `low`), ties half."""
    if not len(high) or not len(low):
        return float("nan")
    return float(((high[:, None] > low[None]) + 0.5 * (high[:, None] == low[None])).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("--cache", required=True, help="feature cache folder")
    p.add_argument("--split", default="test", help="'' for every clip (a folder without splits: grid-dev)")
    p.add_argument("--lipreader", default="lipreader", help="shipped name or checkpoint path")
    p.add_argument("--decode", default="beam", choices=("greedy", "beam", "grid"))
    p.add_argument("--beam", type=int, default=SynthParams.beam_width)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--low", type=float, help="the low-confidence line (default: the decoder's own)")
    args = p.parse_args()
    args.low = LOW_CONFIDENCE[args.decode] if args.low is None else args.low
    torch.set_num_threads(1)
    model = load_ref(args.lipreader, "lipreader").model.eval()
    items = TorchSamples(load(args.corpus, args.cache, split=args.split or None, limit=args.limit or None))
    # (how the clip was played, its sentence kind) → per clip (confidence, word errors, words)
    rows: dict[tuple[str, str], list[tuple[float, int, int]]] = defaultdict(list)
    with torch.no_grad():
        for i in tqdm(range(len(items)), unit="clip", desc="confidence"):
            it = items[i]
            ref = decode(encode(it["text"]))
            kind = "GRID" if ref in GRID_GRAMMAR else "open"
            for played, video, lips in (("as recorded", it["video"], it["lips"]),
                                        ("played backwards", it["video"].flip(1), it["lips"].flip(0))):
                log_probs = model(video, lips[None]).log_probs[0]
                text = decode_text(log_probs, args.decode, args.beam)
                rows[(played, kind)].append((text_confidence(log_probs, text),
                                             edit_distance(text.split(), ref.split()), len(ref.split())))
    print(f"\nreading confidence of {args.lipreader} ({args.decode} decoding) on {args.corpus} split "
          f"{args.split} ({len(items)} clips)\n")
    print(f"| clips | sentences | n | confidence p5 / p50 / p95 | below {args.low} | WER | rank correlation "
          "with word errors |\n|---|---|---|---|---|---|---|")
    for (played, kind), values in sorted(rows.items()):
        conf, wrong, words = (np.array(v, dtype=float) for v in zip(*values, strict=True))
        p5, p50, p95 = np.percentile(conf, [5, 50, 95])
        below = 100 * np.mean(conf < args.low)
        print(f"| {played} | {kind} | {len(conf)} | {p5:.2f} / {p50:.2f} / {p95:.2f} | {below:.0f} % "
              f"| {100 * wrong.sum() / words.sum():.1f} % | {spearman(conf, wrong / words):+.2f} |")
    for kind in sorted({kind for _, kind in rows}):
        conf, wrong, _ = (np.array(v, dtype=float) for v in zip(*rows[("as recorded", kind)], strict=True))
        backwards = np.array([c for c, _, _ in rows[("played backwards", kind)]])
        good = conf[wrong <= 1]
        print(f"\n{kind} sentences: AUROC of the recorded clips read with at most one word wrong "
              f"({len(good)}) against the backwards ones: {auroc(good, backwards):.2f}")
    if ("played backwards", "GRID") in rows:  # how LOW_CONFIDENCE's lines were set, on val clips
        recorded, backwards = ([c for c, _, _ in rows[(played, "GRID")]] for played in ("as recorded",
                                                                                        "played backwards"))
        line = (np.percentile(recorded, 5) + np.percentile(backwards, 95)) / 2
        print(f"\nmidway between the recorded GRID sentences' 5th percentile and the backwards ones' 95th: "
              f"{line:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
