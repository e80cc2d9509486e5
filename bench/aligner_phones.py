"""How well a phone aligner reads each 10-ms step's phone on a corpus split, over whole clips and as the
live node reads them: hop by hop, each hop's phones read with the reader's features cut at the end of its
look-ahead (engines.train.recipes.StreamedPhones.committed). The live node's prior speaks those phones, so
their accuracy bounds what its speech can say; the gap between the two columns is what streaming costs.

Run: `.venv/bin/python bench/aligner_phones.py CORPUS [CORPUS ...] --cache FEATURES [--split test]
[--lipreader NAME_OR_PATH] [--aligner NAME_OR_PATH] [--hop 5] [--lookahead 3] [--limit N] [--confusions N]`
(from the repository root). Features come
from the training feature cache and the reader's features from the condition cache beside it
(engines.train.recipes.ConditionCache), so a second run is quick. Labels are each clip's true phone
timeline (our synthetic corpora record it), so real clips cannot be scored. Prints a markdown table:
step accuracy over all steps and over speech steps (true phone not silence), whole clips and streamed,
per corpus and sentence kind (GRID grammar, the eval table's, or open vocabulary), and the share of the
streamed speech steps read wrong that lie within 20 ms of a true phone boundary (timing rather than
identity: a phone heard a step early or late) beside the share of all speech steps that do.

`--confusions N` adds, per corpus, the N most frequent wrong phones in mid-phone (streamed GRID speech steps
read wrong and not near a boundary) and how many of those steps read a phone the renderer gives the same
mouth as the true one (engines.data.visemes.targets at closure 0): those the lips cannot tell apart in our
synthetic corpora, whatever the aligner learns.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.data.loaders import load
from engines.data.visemes import targets
from engines.text.ctc import GRID_GRAMMAR
from engines.text.phones import PHONES, SILENCE
from engines.train.recipes import ConditionCache, StreamedPhones, load_frozen, true_labels


def near_boundary(labels: torch.Tensor, steps: int) -> torch.Tensor:
    """Steps whose centre lies within `steps` steps of a change of label: where a timing error, not a wrong
    phone, can land."""
    near = torch.zeros(len(labels), dtype=torch.bool)
    for i in (torch.nonzero(labels[1:] != labels[:-1])[:, 0] + 1).tolist():  # a boundary before step i
        near[max(0, i - steps):i + steps] = True
    return near


def mouth(label: int) -> tuple[float, ...]:
    """What the renderer's lips do for a phone class: its viseme targets, dominances and reach."""
    if label == SILENCE:
        return ()
    return tuple(round(float(x), 4) for seg in targets(PHONES[label - 1])
                 for x in (*seg.target, *seg.alpha, seg.tau_scale))


def symbol(label: int) -> str:
    return PHONES[label - 1] if label != SILENCE else "(silence)"


def confusion_table(corpus: str, pairs: Counter[tuple[int, int]], top: int) -> str:
    total = sum(pairs.values())
    same = sum(n for (t, r), n in pairs.items() if mouth(t) == mouth(r))
    rows = [f"{corpus}: {total} streamed GRID speech steps read wrong in mid-phone; "
            f"{same / max(total, 1):.1%} of them read a phone with the true phone's mouth\n",
            "| true | read | steps | share | same mouth |\n|---|---|---|---|---|"]
    for (t, r), n in pairs.most_common(top):
        rows.append(f"| {symbol(t)} | {symbol(r)} | {n} | {n / total:.1%} | "
                    f"{'yes' if mouth(t) == mouth(r) else 'no'} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpora", nargs="+")
    p.add_argument("--cache", required=True, help="feature cache folder")
    p.add_argument("--split", default="test")
    p.add_argument("--lipreader", default="lipreader", help="shipped name or checkpoint path")
    p.add_argument("--aligner", default="aligner", help="shipped name or checkpoint path")
    p.add_argument("--hop", type=int, default=5, help="frames a window commits (the node's hop_frames)")
    p.add_argument("--lookahead", type=int, default=3, help="frames read past the hop (lookahead_frames)")
    p.add_argument("--features", default="reader", choices=("visual", "reader"),
                   help="the reader's features the aligner was trained on (its recipe's `features`)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--confusions", type=int, default=0, metavar="N",
                   help="also list the N most frequent mid-phone confusions per corpus")
    args = p.parse_args()

    reader, aligner = load_frozen(args.lipreader, "lipreader"), load_frozen(args.aligner, "aligner")
    rows = ["| corpus | sentences | clips | steps | whole clips | streamed | speech steps: whole | streamed "
            "| streamed errors near a boundary | speech steps near one |\n" + "|---" * 10 + "|"]
    tables = []
    for corpus in args.corpora:
        samples = load(corpus, args.cache, split=args.split or None, limit=args.limit or None)
        conds = ConditionCache(samples, reader, None, args.features)
        counts: dict[str, Counter[str]] = defaultdict(Counter)  # per sentence kind, each a count of steps
        pairs: Counter[tuple[int, int]] = Counter()  # (true, read) of GRID mid-phone errors
        for clip in samples.clips:
            phones = StreamedPhones(aligner, conds.conds[clip.id][0].float())
            truth = true_labels(clip, len(phones.whole), phones.steps)
            speech, near = truth != SILENCE, near_boundary(truth, 2)
            whole = phones.whole.long() == truth
            read = phones.committed(args.hop, args.lookahead)
            live = read == truth
            grid = (clip.text or "") in GRID_GRAMMAR
            row = counts["GRID" if grid else "open"]
            if grid:
                mid = speech & ~live & ~near
                pairs.update(zip(truth[mid].tolist(), read[mid].tolist(), strict=True))
            row["clips"] += 1
            # wrong: streamed speech steps read wrong; speech near: where errors would lie by chance
            masks = {"steps": torch.ones_like(speech), "speech": speech, "whole": whole, "live": live,
                     "whole speech": whole & speech, "live speech": live & speech, "wrong": speech & ~live,
                     "wrong near": speech & ~live & near, "speech near": speech & near}
            for name, mask in masks.items():
                row[name] += int(mask.sum())
        for kind, c in sorted(counts.items()):
            shares = (c["whole"] / c["steps"], c["live"] / c["steps"], c["whole speech"] / c["speech"],
                      c["live speech"] / c["speech"], c["wrong near"] / max(c["wrong"], 1),
                      c["speech near"] / c["speech"])
            rows.append(f"| {corpus} | {kind} | {c['clips']} | {c['steps']} | "
                        + " | ".join(f"{x:.1%}" for x in shares) + " |")
        if args.confusions:
            tables.append(confusion_table(corpus, pairs, args.confusions))
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}`\n")
    print("\n\n".join(["\n".join(rows), *tables]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
