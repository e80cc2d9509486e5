"""How long each phone lasts, and a text's phones timed with that knowledge as well as the lips'.

The phone aligner's Viterbi path (engines.text.phones.force_align) times each phone wherever the lips
best fit it, however short or long that makes it. Spoken by the mel prior, such timings are heard worse
than the same text on its true timeline: on 108 unseen-face test clips, the reference text timed by the
aligner 6.0 % sphinx-GRID WER, on its true timeline 3.2 % (bench/rendering.py; notes/history.md, session 16).
`paced_align` is the explicit-duration (semi-Markov) Viterbi path instead: every phone is one segment, scored
by the aligner's log-posteriors over its steps plus `weight` × the log-density of its length under the
phone's duration distribution; silences carry no duration term and may run on (segments of silence chain).

The distributions are log-normal per phone, in 10-ms steps, measured on the true phone timelines our corpora
write beside each clip (`durations.json`, with the command and corpora that made it). Rebuild it:
`python -m engines.text.durations CORPUS [CORPUS ...]` (each corpus's train split).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from engines.text.phones import PHONES, SILENCE, phone_sequence, us1_symbol

DURATIONS_FILE = Path(__file__).with_name("durations.json")
STEPS_PER_S = 100  # the aligner's steps: one per mel frame
MAX_STEPS = 60  # the longest phone a segment may be (0.6 s; the corpora's longest is 0.35 s)
MIN_LOG_SD = 0.15  # a floor on the spread, so no phone's length is pinned to one value
MIN_COUNT = 5  # phones seen fewer times take the distribution of all phones together


@dataclass(frozen=True)
class PhoneDurations:
    """Log-normal length of each phone class in steps: log_mean[k], log_sd[k] of class k (0: silence,
    unused)."""
    log_mean: np.ndarray
    log_sd: np.ndarray

    def log_prob(self, classes: Sequence[int], max_steps: int = MAX_STEPS) -> np.ndarray:
        """(S, max_steps): log-density of lasting 1 … max_steps steps for each class of `classes`; 0 for
        silences (no duration term)."""
        steps = np.log(np.arange(1, max_steps + 1, dtype=np.float64))
        cls = np.asarray(classes)
        mean, sd = self.log_mean[cls][:, None], self.log_sd[cls][:, None]
        out = -0.5 * ((steps - mean) / sd) ** 2 - np.log(sd) - steps - 0.5 * math.log(2 * math.pi)
        out[cls == SILENCE] = 0.0
        return out


def measure(corpora: Sequence[str | Path]) -> dict[str, Any]:
    """Per phone symbol: [log-mean, log-sd, count] of its lengths in steps over the train split's true
    timelines of each corpus (the .json beside every clip)."""
    lengths: dict[str, list[float]] = {p: [] for p in PHONES}
    clips = 0
    for corpus in corpora:
        for meta in sorted(Path(corpus, "train").rglob("*.json")):
            phones = json.loads(meta.read_text()).get("phones")
            if phones is None:
                continue
            clips += 1
            for symbol, start, dur in phones:
                mapped = us1_symbol(symbol)
                if mapped is not None:
                    steps = round((start + dur) * STEPS_PER_S) - round(start * STEPS_PER_S)
                    lengths[mapped].append(math.log(max(1, steps)))
    pooled = [x for xs in lengths.values() for x in xs]
    if not pooled:
        raise ValueError(f"no true phone timeline in the train split of {', '.join(map(str, corpora))}")

    def fit(xs: list[float]) -> list[float]:
        return [float(np.mean(xs)), float(max(np.std(xs), MIN_LOG_SD)), len(xs)]

    return {"corpora": [str(c) for c in corpora], "clips": clips, "all": fit(pooled),
            "phones": {p: fit(xs) for p, xs in lengths.items() if len(xs) >= MIN_COUNT}}


@lru_cache(maxsize=1)
def load(path: Path = DURATIONS_FILE) -> PhoneDurations:
    """The shipped duration distributions."""
    data = json.loads(path.read_text())
    mean, sd = np.zeros(len(PHONES) + 1), np.ones(len(PHONES) + 1)
    for k, phone in enumerate(PHONES, start=1):
        mean[k], sd[k], _ = data["phones"].get(phone, data["all"])
    return PhoneDurations(mean, sd)


def paced_align(log_probs: Any, text: str, weight: float, durations: PhoneDurations | None = None,
                max_steps: int = MAX_STEPS) -> np.ndarray | None:
    """Per-step phone classes (N,) of `text` on (N, C) log-posteriors: the best path of segments (one per
    phone, silences before, between and after the words optional and chainable) under log-posterior +
    `weight` × duration log-density; None when the steps cannot hold the text's phones."""
    lp = np.asarray(log_probs, np.float64)
    classes, optional = phone_sequence(text)
    n, s_len = lp.shape[0], len(classes)
    if n == 0 or s_len < 2:
        return None
    durations = load() if durations is None else durations
    neg = -np.inf
    emitted = np.vstack([np.zeros(s_len), np.cumsum(lp[:, classes], axis=0)])  # (N + 1, S)
    length_score = weight * durations.log_prob(classes, max_steps)  # (S, D)
    silence = np.asarray(classes) == SILENCE
    skippable = np.zeros(s_len, bool)
    skippable[2:] = np.asarray(optional, bool)[1:-1]  # s−2 → s passes over an optional s−1
    opening = np.full(s_len, neg)  # a path may open with state 0, or with state 1 when 0 is optional
    opening[0] = 0.0
    opening[1] = 0.0 if optional[0] else neg
    best = np.full((n + 1, s_len), neg)  # best[t, s]: steps [0, t) said, the last segment state s's
    length = np.zeros((n + 1, s_len), np.int64)
    came = np.zeros((n + 1, s_len), np.int64)  # previous state: s (silence chained), s−1, s−2, or −1 (none)
    states = np.arange(s_len)
    for t in range(1, n + 1):
        d = min(max_steps, t)
        starts = t - np.arange(1, d + 1)
        before = best[starts]  # (d, S): the path up to each candidate segment start
        pad = np.full((d, 2), neg)
        ways = np.stack([np.where(silence, before, neg), np.hstack([pad[:, :1], before[:, :-1]]),
                         np.where(skippable, np.hstack([pad, before[:, :-2]]), neg),
                         np.where(starts[:, None] == 0, opening, neg)])
        way = ways.argmax(axis=0)
        entry = np.take_along_axis(ways, way[None], axis=0)[0]
        score = entry + emitted[t] - emitted[starts] + length_score[:, :d].T
        k = score.argmax(axis=0)
        best[t], length[t] = score[k, states], k + 1
        chosen = way[k, states]  # 0: silence chained, 1: from s−1, 2: from s−2 over a silence, 3: the start
        came[t] = np.where(chosen == 3, -1, states - chosen)
    ends = [s_len - 1] + ([s_len - 2] if optional[-1] else [])
    state = max(ends, key=lambda e: best[n, e])
    if not np.isfinite(best[n, state]):
        return None
    path = np.empty(n, np.int64)
    t = n
    while t > 0:
        d, previous = length[t, state], came[t, state]
        path[t - d:t] = classes[state]
        t, state = t - d, previous
    return path


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m engines.text.durations CORPUS [CORPUS ...]")
    measured = {"command": f"python -m engines.text.durations {' '.join(sys.argv[1:])}",
                **measure(sys.argv[1:])}
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in measured.items() if k != "phones"]
    lines.append('"phones": {\n' + ",\n".join(f"  {json.dumps(p)}: {json.dumps(v)}"
                                             for p, v in measured["phones"].items()) + "\n}")
    DURATIONS_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    load.cache_clear()
    print(f"{len(measured['phones'])} phones from {measured['clips']} clips → {DURATIONS_FILE}")
