"""Lip-reading accuracy of a trained lip reader on a corpus split: CER and WER with greedy, beam and GRID-
grammar decoding, per sentence kind (GRID grammar or open vocabulary).

Run: `.venv/bin/python bench/lipreading.py CORPUS --cache FEATURES [--split test] [--lipreader NAME_OR_PATH]
[--limit N] [--lead 0,-3,10,40] [--decoders greedy,beam,grid] [--against NAME_OR_PATH]`. Features come
from the training feature cache (engines.data.loaders), so no video is tracked twice. Prints a markdown
table, and with GRID-grammar decoding a second one: the share of sentences with each GRID word wrong
(command, colour, preposition, letter, digit, adverb) per speaker, which tells a word the lips cannot
show from a speaker the reader cannot read (session 6: seen speakers 5.7 % WER, unseen 16.3 %, mostly
command words and letters).

`--lead` reads every clip again with its still lead-in changed (engines.train.augment.move_onset): N > 0
holds the first frame N frames longer, N < 0 drops the first -N frames (generated clips open with 5 still
frames). A live stream starts wherever the tracker first names the target, so a reader must not care.

`--against` reads the same GRID sentences with a second reader and prints the GRID-grammar WER difference
with a paired bootstrap interval over sentences: fine-tunes of one reader land within a point or two of
each other, so a difference needs its interval.
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
from engines.eval.stats import paired_ratio_ci
from engines.text.charset import decode, encode
from engines.text.ctc import GRID_GRAMMAR, beam_search, greedy_decode
from engines.train.augment import move_onset
from engines.train.checkpoint import load_ref
from engines.train.recipes import edit_distance


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("--cache", required=True, help="feature cache folder")
    p.add_argument("--split", default="test")
    p.add_argument("--lipreader", default="lipreader", help="shipped name or checkpoint path")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--lead", default="0", help="comma-separated changes of the still lead-in, in frames")
    p.add_argument("--decoders", default="greedy,beam,grid", help="any of greedy, beam, grid (grammar)")
    p.add_argument("--against", default="", help="a second reader to compare on GRID-grammar WER (paired)")
    args = p.parse_args()
    leads = [int(v) for v in args.lead.split(",")]
    decoders = set(args.decoders.split(","))
    if not decoders <= {"greedy", "beam", "grid"}:
        p.error(f"unknown decoders {sorted(decoders - {'greedy', 'beam', 'grid'})}")
    torch.set_num_threads(1)
    model = load_ref(args.lipreader, "lipreader").model.eval()
    other = load_ref(args.against, "lipreader").model.eval() if args.against else None
    samples = load(args.corpus, args.cache, split=args.split, limit=args.limit or None)
    items = TorchSamples(samples)
    # (lead, kind, decoder) → [char errors, chars, word errors, words]
    totals: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    # (lead, speaker) → [sentences, wrong words in each of the six GRID slots]
    slots: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0] * (1 + len(GRID_SLOTS)))
    # lead → per GRID sentence [word errors of this reader, of the other, words]
    paired: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    with torch.no_grad():
        for i, lead in tqdm([(i, lead) for i in range(len(items)) for lead in leads], unit="read",
                            desc="lip reading"):
            it = move_onset(items[i], lead, 0)
            ref = decode(encode(it["text"]))
            kind = "grid" if ref in GRID_GRAMMAR else "open"
            log_probs = model(it["video"], it["lips"][None]).log_probs[0]
            hyps = {}
            if "greedy" in decoders:
                hyps["greedy"] = decode(greedy_decode(log_probs))
            if "beam" in decoders:
                hyps["beam"] = beam_search(log_probs, args.beam)[0].text
            if kind == "grid" and "grid" in decoders:
                hyps["grid"] = beam_search(log_probs, args.beam, GRID_GRAMMAR)[0].text
                count_slots(slots[(lead, it["speaker"])], ref, hyps["grid"])
                if other is not None:
                    theirs = beam_search(other(it["video"], it["lips"][None]).log_probs[0], args.beam,
                                         GRID_GRAMMAR)[0].text
                    paired[lead].append((edit_distance(hyps["grid"].split(), ref.split()),
                                         edit_distance(theirs.split(), ref.split()), len(ref.split())))
            for name, hyp in hyps.items():
                t = totals[(lead, kind, name)]
                t[0] += edit_distance(hyp, ref)
                t[1] += len(ref)
                t[2] += edit_distance(hyp.split(), ref.split())
                t[3] += len(ref.split())
    print(f"\nlip reader {args.lipreader} on {args.corpus} split {args.split} ({len(items)} clips)\n")
    print("| lead-in change (frames) | sentences | decoding | CER | WER |\n|---|---|---|---|---|")
    for (lead, kind, name), (ce, c, we, w) in sorted(totals.items(),
                                                     key=lambda kv: (leads.index(kv[0][0]), kv[0][1:])):
        cer, wer = 100 * ce / max(1, c), 100 * we / max(1, w)
        print(f"| {lead:+d} | {kind} | {name} | {cer:.1f} % | {wer:.1f} % |")
    if slots:
        print("\nGRID-grammar decoding: sentences with each word wrong\n")
        print(f"| lead-in change | speaker | sentences | {' | '.join(GRID_SLOTS)} |\n"
              f"|{'---|' * (3 + len(GRID_SLOTS))}")
        for (lead, speaker), (n, *wrong) in sorted(slots.items(), key=lambda kv: (leads.index(kv[0][0]),
                                                                                  kv[0][1])):
            shares = " | ".join(f"{100 * w / n:.0f} %" for w in wrong)
            print(f"| {lead:+d} | {speaker} | {n} | {shares} |")
    if paired:
        print(f"\nGRID-grammar WER, {args.lipreader} − {args.against}: paired bootstrap over sentences\n")
        print("| lead-in change | sentences | WER | WER against | difference (95 % interval) |\n"
              "|---|---|---|---|---|")
        for lead in leads:
            mine, theirs, words = (np.array(v, dtype=float) for v in zip(*paired[lead], strict=True))
            d = paired_ratio_ci(mine, words, theirs, words)
            print(f"| {lead:+d} | {len(words)} | {100 * mine.sum() / words.sum():.1f} % | "
                  f"{100 * theirs.sum() / words.sum():.1f} % | {100 * d.value:+.1f} points "
                  f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] |")
    return 0


GRID_SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")


def count_slots(counts: list[int], ref: str, hyp: str) -> None:
    """Add one sentence to `counts` ([sentences, wrong per slot]): GRID sentences have one word per slot,
    and grammar decoding gives six words or none."""
    words = (hyp.split() + [""] * len(GRID_SLOTS))[:len(GRID_SLOTS)]
    counts[0] += 1
    for k, (r, h) in enumerate(zip(ref.split(), words, strict=True)):
        counts[1 + k] += r != h


if __name__ == "__main__":
    sys.exit(main())
