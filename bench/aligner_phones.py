"""How well a phone aligner reads each 10-ms step's phone on a corpus split, over whole clips and as the
live node reads them: hop by hop, each hop's phones read with the reader's features cut at the end of its
look-ahead (engines.train.recipes.prior.StreamedPhones.committed). The live node's prior speaks those
phones, so their accuracy bounds what its speech can say; the gap between the two columns is what
streaming costs.

Run: `.venv/bin/python bench/aligner_phones.py CORPUS [CORPUS ...] --cache FEATURES [--split test]
[--lipreader NAME_OR_PATH] [--aligner NAME_OR_PATH] [--hop 5] [--lookahead 3] [--limit N] [--confusions N]`
(from the repository root). Features come
from the training feature cache and the reader's features from the condition cache beside it
(engines.train.recipes.conditions.ConditionCache), so a second run is quick. Labels are each clip's true phone
timeline (our synthetic corpora record it), so real clips cannot be scored. Prints a markdown table:
step accuracy over all steps and over speech steps (true phone not silence), whole clips and streamed,
per corpus and sentence kind (GRID grammar, the eval table's, or open vocabulary), and the share of the
streamed speech steps read wrong that lie within 20 ms of a true phone boundary (timing rather than
identity: a phone heard a step early or late) beside the share of all speech steps that do.

`--confusions N` adds, per corpus, the N most frequent wrong phones in mid-phone (streamed GRID speech steps
read wrong and not near a boundary) and how much the rendered mouth would change had the phone read been
said in the true one's place (`Mouths`), beside the same for a random other phone: how far the errors are
phones the lips barely show apart in our synthetic corpora, whatever the aligner learns.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.audio.mel import VIDEO_FPS
from engines.data.loaders import load
from engines.data.phonemes import Phone
from engines.data.render import SWINGS
from engines.data.visemes import track
from engines.text.ctc import GRID_GRAMMAR
from engines.text.phones import PHONES, SILENCE
from engines.train.recipes.aligner import clip_meta, true_labels
from engines.train.recipes.common import load_frozen
from engines.train.recipes.conditions import ConditionCache
from engines.train.recipes.prior import StreamedPhones

# IOD: 0.4 and 1.7 pixels of the mouth ROI (engines.face.align: 84 pixels an IOD), before the 2x pooling
MOUTH_STEPS = (0.005, 0.02)


def near_boundary(labels: torch.Tensor, steps: int) -> torch.Tensor:
    """Steps whose centre lies within `steps` steps of a change of label: where a timing error, not a wrong
    phone, can land."""
    near = torch.zeros(len(labels), dtype=torch.bool)
    for i in (torch.nonzero(labels[1:] != labels[:-1])[:, 0] + 1).tolist():  # a boundary before step i
        near[max(0, i - steps):i + steps] = True
    return near


def symbol(label: int) -> str:
    return PHONES[label - 1] if label != SILENCE else "_"


class Mouths:
    """How much the renderer's mouth would change had a clip's speaker said another phone in place of one
    of its true phones: both timelines through engines.data.visemes.track (the clip's own closure and
    rest_open), each viseme parameter scaled by its swing in the rendered face (the clip's render
    settings, inter-ocular distances: IOD), the largest change over the video frames the phone spans (±1).
    A small change is a phone the lips could not show apart, whatever a reader learns."""

    def __init__(self, clip: Any) -> None:
        meta = clip_meta(clip)
        self.phones = [Phone(s, start, dur) for s, start, dur in meta["phones"]]
        self.frames, self.fps = int(meta["frames"]), float(meta["fps"])
        self.options = {"rest_open": meta.get("rest_open", 0.0), "closure": meta.get("closure", 0.0)}
        self.scale = np.array([meta["render"][k] for k in SWINGS], np.float32)
        self.base = self._track(self.phones)
        self._changes: dict[tuple[int, str], float] = {}

    def _track(self, phones: list[Phone]) -> np.ndarray:
        return track(phones, self.frames, self.fps, **self.options) * self.scale

    def at(self, step_s: float) -> int | None:
        """Index of the true phone said at a time (None between phones)."""
        return next((k for k, p in enumerate(self.phones) if p.start_s <= step_s < p.end_s), None)

    def change(self, k: int, said: str) -> float:
        """The largest change (IOD) of the mouth about phone k had `said` been said in its place."""
        if (k, said) not in self._changes:
            p = self.phones[k]
            other = [*self.phones[:k], Phone(said, p.start_s, p.dur_s), *self.phones[k + 1:]]
            lo, hi = max(0, int(p.start_s * self.fps) - 1), min(self.frames, int(p.end_s * self.fps) + 2)
            self._changes[k, said] = float(np.abs(self._track(other)[lo:hi] - self.base[lo:hi]).max())
        return self._changes[k, said]


def confusion_table(corpus: str, errors: list[tuple[int, int, float, float]], top: int) -> str:
    """errors: (true, read, the mouth's change for the phone read, for a random other phone) per step."""
    pairs = Counter((t, r) for t, r, _, _ in errors)
    changes: dict[tuple[int, int], list[float]] = defaultdict(list)
    for t, r, change, _ in errors:
        changes[t, r].append(change)
    read, random = (np.array([e[i] for e in errors]) for i in (2, 3))
    shares = ", ".join(f"{x} IOD for {np.mean(read < x):.1%} of them ({np.mean(random < x):.1%} for a random "
                       "other phone)" for x in MOUTH_STEPS)
    rows = [f"{corpus}: {len(errors)} streamed GRID speech steps read wrong in mid-phone. The phone read "
            f"would change the rendered mouth by less than {shares}; median {np.median(read):.3f} IOD "
            f"({np.median(random):.3f}).\n",
            "| true | read | steps | share | mouth change (IOD, median) |\n|---|---|---|---|---|"]
    for (t, r), n in pairs.most_common(top):
        rows.append(f"| {symbol(t)} | {symbol(r)} | {n} | {n / len(errors):.1%} | "
                    f"{np.median(changes[t, r]):.3f} |")
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
        errors: list[tuple[int, int, float, float]] = []  # GRID mid-phone errors, as confusion_table takes
        rng = np.random.default_rng(0)
        for clip in samples.clips:
            phones = StreamedPhones(aligner, conds.conds[clip.id][0].float())
            truth = true_labels(clip, len(phones.whole), phones.steps)
            speech, near = truth != SILENCE, near_boundary(truth, 2)
            whole = phones.whole.long() == truth
            read = phones.committed(args.hop, args.lookahead)
            live = read == truth
            grid = (clip.text or "") in GRID_GRAMMAR
            row = counts["GRID" if grid else "open"]
            if grid and args.confusions:
                mouths = Mouths(clip)
                for step in torch.nonzero(speech & ~live & ~near)[:, 0].tolist():
                    k = mouths.at((step + 0.5) / (phones.steps * VIDEO_FPS))
                    if k is not None:
                        t, r = int(truth[step]), int(read[step])
                        other = rng.choice([p for p in PHONES if p != symbol(t)])
                        errors.append((t, r, mouths.change(k, symbol(r)), mouths.change(k, other)))
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
            tables.append(confusion_table(corpus, errors, args.confusions))
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}`\n")
    print("\n\n".join(["\n".join(rows), *tables]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
