"""Lip-reading accuracy of a trained lip reader on a corpus split: CER and WER with greedy, beam and GRID-
grammar decoding, per sentence kind (GRID grammar or open vocabulary).

Run: `.venv/bin/python bench/lipreading.py CORPUS --cache FEATURES [--split test] [--lipreader NAME_OR_PATH]
[--limit N] [--lead 0,-3,10,40] [--decoders greedy,beam,grid,phones] [--against NAME_OR_PATH]
[--aligner NAME_OR_PATH --phone-weight 0.25]`. Features come
from the training feature cache (engines.data.loaders), so no video is tracked twice. Prints a markdown
table, and with GRID-grammar decoding a second one: the share of sentences with each GRID word wrong
(command, colour, preposition, letter, digit, adverb) per speaker, which tells a word the lips cannot
show from a speaker the reader cannot read (session 6: seen speakers 5.7 % WER, unseen 16.3 %, mostly
command words and letters).

`--lead` reads every clip again with its still lead-in changed (engines.train.augment.move_onset): N > 0
holds the first frame N frames longer, N < 0 drops the first -N frames (generated clips open with 5 still
frames). A live stream starts wherever the tracker first names the target, so a reader must not care.

Decoder `phones` is GRID-grammar decoding whose whole sentences are re-ranked by a phone aligner on the
reader's features (`--aligner`, default the shipped one; engines.synth.engine's default offline decoding
with the prior loaded): CTC log-probability + `--phone-weight` × the aligner's log-posterior of their phones.

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
from engines.models.lipreader import condition_features
from engines.text.charset import decode, encode
from engines.text.ctc import GRID_GRAMMAR, beam_search, best_sentence, greedy_decode
from engines.text.phones import phone_rescorer
from engines.train.augment import move_onset
from engines.train.checkpoint import load_ref
from engines.train.recipes.common import edit_distance


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus")
    p.add_argument("--cache", required=True, help="feature cache folder")
    p.add_argument("--split", default="test", help="'' for every clip (a folder without splits: grid-dev)")
    p.add_argument("--lipreader", default="lipreader", help="shipped name or checkpoint path")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--lead", default="0", help="comma-separated changes of the still lead-in, in frames")
    p.add_argument("--decoders", default="greedy,beam,grid,phones",
                   help="any of greedy, beam, grid (grammar), phones (grammar, re-ranked by a phone aligner)")
    p.add_argument("--aligner", default="aligner", help="phone aligner of decoder phones (name or path)")
    p.add_argument("--phone-weight", type=float, default=0.25, help="weight of its phone log-posterior")
    p.add_argument("--against", default="", help="a second reader to compare on GRID-grammar WER (paired)")
    args = p.parse_args()
    leads = [int(v) for v in args.lead.split(",")]
    decoders = set(args.decoders.split(","))
    known = {"greedy", "beam", "grid", "phones"}
    if not decoders <= known:
        p.error(f"unknown decoders {sorted(decoders - known)}")
    torch.set_num_threads(1)
    model = load_ref(args.lipreader, "lipreader").model.eval()
    other = load_ref(args.against, "lipreader").model.eval() if args.against else None
    aligner = load_ref(args.aligner, "aligner").model.eval() if "phones" in decoders else None
    samples = load(args.corpus, args.cache, split=args.split or None, limit=args.limit or None)
    items = TorchSamples(samples)
    # (lead, kind, decoder) → [char errors, chars, word errors, words]
    totals: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    # (lead, speaker, decoder) → [sentences, wrong words in each of the six GRID slots]
    slots: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0] * (1 + len(GRID_SLOTS)))
    # (lead, "against" | "phones") → per GRID sentence (word errors of this reader's grid decoding (phones:
    # re-ranked), of the other reader's (phones: of plain grid decoding), words)
    paired: dict[tuple[int, str], list[tuple[int, int, int]]] = defaultdict(list)
    with torch.no_grad():
        for i, lead in tqdm([(i, lead) for i in range(len(items)) for lead in leads], unit="read",
                            desc="lip reading"):
            it = move_onset(items[i], lead, 0)
            ref = decode(encode(it["text"]))
            kind = "grid" if ref in GRID_GRAMMAR else "open"
            out = model(it["video"], it["lips"][None])
            log_probs = out.log_probs[0]
            hyps = {}
            if "greedy" in decoders:
                hyps["greedy"] = decode(greedy_decode(log_probs))
            if "beam" in decoders:
                hyps["beam"] = beam_search(log_probs, args.beam)[0].text
            if kind == "grid" and "grid" in decoders:
                hyps["grid"] = best_sentence(log_probs, args.beam, GRID_GRAMMAR)
                if other is not None:
                    theirs = best_sentence(other(it["video"], it["lips"][None]).log_probs[0], args.beam,
                                           GRID_GRAMMAR)
                    paired[(lead, "against")].append(pair(hyps["grid"], theirs, ref))
            if kind == "grid" and aligner is not None:
                phones = aligner.posteriors(condition_features(out, "reader")[0])
                rescore = phone_rescorer(phones, args.phone_weight)
                hyps["phones"] = best_sentence(log_probs, args.beam, GRID_GRAMMAR, rescore)
                if "grid" in hyps:
                    paired[(lead, "phones")].append(pair(hyps["phones"], hyps["grid"], ref))
            for name in ("grid", "phones"):
                if name in hyps:
                    count_slots(slots[(lead, it["speaker"], name)], ref, hyps[name])
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
        print(f"| lead-in change | speaker | decoding | sentences | {' | '.join(GRID_SLOTS)} |\n"
              f"|{'---|' * (4 + len(GRID_SLOTS))}")
        for (lead, speaker, name), (n, *wrong) in sorted(slots.items(),
                                                         key=lambda kv: (leads.index(kv[0][0]), kv[0][1:])):
            shares = " | ".join(f"{100 * w / n:.0f} %" for w in wrong)
            print(f"| {lead:+d} | {speaker} | {name} | {n} | {shares} |")
    titles = {"against": f"{args.lipreader} − {args.against} (grid decoding)",
              "phones": "re-ranked by the phone aligner (phones) − grid decoding"}
    for what, title in titles.items():
        if not any(key[1] == what for key in paired):
            continue
        print(f"\nGRID-grammar WER, {title}: paired bootstrap over sentences\n")
        print("| lead-in change | sentences | WER | WER against | difference (95 % interval) |\n"
              "|---|---|---|---|---|")
        for lead in leads:
            mine, theirs, words = (np.array(v, dtype=float) for v in zip(*paired[(lead, what)], strict=True))
            d = paired_ratio_ci(mine, words, theirs, words)
            print(f"| {lead:+d} | {len(words)} | {100 * mine.sum() / words.sum():.1f} % | "
                  f"{100 * theirs.sum() / words.sum():.1f} % | {100 * d.value:+.1f} points "
                  f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}] |")
    return 0


GRID_SLOTS = ("command", "colour", "preposition", "letter", "digit", "adverb")


def pair(mine: str, theirs: str, ref: str) -> tuple[int, int, int]:
    """(word errors of `mine`, of `theirs`, words) against `ref`."""
    words = ref.split()
    return edit_distance(mine.split(), words), edit_distance(theirs.split(), words), len(words)


def count_slots(counts: list[int], ref: str, hyp: str) -> None:
    """Add one sentence to `counts` ([sentences, wrong per slot]): GRID sentences have one word per slot,
    and grammar decoding gives six words or none."""
    words = (hyp.split() + [""] * len(GRID_SLOTS))[:len(GRID_SLOTS)]
    counts[0] += 1
    for k, (r, h) in enumerate(zip(ref.split(), words, strict=True)):
        counts[1 + k] += r != h


if __name__ == "__main__":
    sys.exit(main())
