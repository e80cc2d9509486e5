"""CTC decoding of (T, V) log-probabilities over engines.text.charset.CHARSET.

- `greedy_decode`: best token per frame, repeats collapsed, blanks dropped.
- `text_confidence`: how surely the log-probabilities spell a text (the per-character geometric mean of
  its CTC likelihood): what a listener is told about a transcript, since a reader that cannot read a face
  still decodes some sentence.
- `beam_search`: CTC prefix beam search (Hannun et al. 2014, in log space), optionally constrained by a
  `WordGrammar` so that only prefixes of sentences of the grammar survive. `GRID_GRAMMAR` is the GRID
  corpus grammar (command colour preposition letter digit adverb).

Log-probabilities may be a numpy array or a torch tensor (one utterance, not a batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.grid import GRID_SLOTS
from engines.text.charset import BLANK, CHARSET, SPACE, VOCAB_SIZE, decode, encode

_NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def _log_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`_logaddexp` elementwise."""
    high, low = np.maximum(a, b), np.minimum(a, b)
    # low − high only where low is finite (both -inf would give nan): else exp(-inf) = 0 adds nothing
    diff = np.subtract(low, high, out=np.full(np.shape(low), _NEG_INF), where=low > _NEG_INF)
    return high + np.log1p(np.exp(diff))


def _as_matrix(log_probs: Any) -> np.ndarray:
    if hasattr(log_probs, "detach"):  # a torch tensor; engines.text does not import torch
        log_probs = log_probs.detach().cpu().numpy()
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != VOCAB_SIZE:
        raise ValueError(f"expected log-probabilities of shape (T, {VOCAB_SIZE}), got {lp.shape}")
    return lp


def greedy_decode(log_probs: Any) -> list[int]:
    """Token ids of the best path: argmax per frame, repeats collapsed, blanks dropped."""
    best = _as_matrix(log_probs).argmax(axis=1)
    ids, previous = [], BLANK
    for token in best.tolist():
        if token != previous and token != BLANK:
            ids.append(token)
        previous = token
    return ids


# Log-probabilities are floored here (e^-1e4 is no probability at all) so that the prefix sums of a label's
# log-probabilities over a long utterance stay finite (CtcForward._add_label).
_FLOOR = -1.0e4


class CtcForward:
    """CTC forward variables of a text that grows at its end over log-probabilities that grow by frames: a
    causal reader's, read hop by hop. Each `log_prob` costs the new frames and the new characters, not the
    whole utterance again, and gives what `sequence_log_prob` gives. A text that is not the last one
    extended, or fewer frames than before, starts over; frames already read must not change (the caller's
    promise: give each utterance its own CtcForward)."""

    def __init__(self) -> None:
        self._start_over()

    def _start_over(self) -> None:
        self.ids: list[int] = []
        self.frames = 0
        self.labels = [BLANK]  # the text's ids with a blank before, between and after them
        self.skips = [False]  # whether each label may be reached from two back (_skips)
        self.alpha = np.full(1, _NEG_INF)  # the forward variable of every label at the last frame read
        # the last two labels' forward variables at every frame read: what a label added later starts from
        self.last: list[float] = []
        self.before_last: list[float] = []

    def log_prob(self, log_probs: Any, ids: Sequence[int]) -> float:
        """log P(ids | log_probs) under CTC; -inf when no path fits in the frames."""
        lp = np.maximum(_as_matrix(log_probs), _FLOOR)
        ids = list(ids)
        if len(lp) < self.frames or ids[:len(self.ids)] != self.ids:
            self._start_over()
        for token in ids[len(self.ids):]:
            self._add_label(token, lp)
            self._add_label(BLANK, lp)
        self.ids = ids
        labels, skips = np.asarray(self.labels), np.asarray(self.skips)
        for frame in lp[self.frames:]:
            self._step(frame, labels, skips)
        if not self.frames:
            return _NEG_INF
        return float(np.logaddexp(self.alpha[-1], self.alpha[-2]) if len(self.alpha) > 1 else self.alpha[-1])

    def _skips(self, s: int) -> bool:
        """Whether label s may be reached from two back, over the blank between: unless it repeats it."""
        return s >= 2 and self.labels[s] != BLANK and self.labels[s] != self.labels[s - 2]

    def _add_label(self, label: int, lp: np.ndarray) -> None:
        """The new label's forward variables at every frame read so far, from its two predecessors'. Along the
        frames a label's recursion is a_t = e_t + log(exp a_(t-1) + exp c_t), with c_t what enters from the
        labels before; with prefix sums P of e that unrolls to a_t = P_t + logcumsumexp_k (c_k − P_(k−1)),
        one vector operation instead of a loop over the frames."""
        s = len(self.labels)
        self.labels.append(label)
        self.skips.append(self._skips(s))
        n = self.frames
        if not n:
            self.alpha = np.append(self.alpha, _NEG_INF)
            return
        enter = np.full(n, _NEG_INF)
        enter[0] = 0.0 if s < 2 else _NEG_INF  # a path starts on the first blank or the first character
        enter[1:] = self.last[:-1]
        if self.skips[s]:
            enter[1:] = np.logaddexp(enter[1:], self.before_last[:-1])
        emit = lp[:n, label]
        sums = np.cumsum(emit)
        column = sums + np.logaddexp.accumulate(enter - np.concatenate(([0.0], sums[:-1])))
        self.before_last, self.last = self.last, column.tolist()
        self.alpha = np.append(self.alpha, column[-1])

    def _step(self, frame: np.ndarray, labels: np.ndarray, skips: np.ndarray) -> None:
        if not self.frames:
            alpha = np.full(len(labels), _NEG_INF)
            alpha[:2] = frame[labels[:2]]
        else:
            one_back = np.concatenate(([_NEG_INF], self.alpha[:-1]))
            two_back = np.concatenate(([_NEG_INF, _NEG_INF], self.alpha[:-2]))[:len(labels)]
            two_back = np.where(skips, two_back, _NEG_INF)
            alpha = np.logaddexp(np.logaddexp(self.alpha, one_back), two_back) + frame[labels]
        self.alpha, self.frames = alpha, self.frames + 1
        self.last.append(float(alpha[-1]))
        self.before_last.append(float(alpha[-2]) if len(alpha) > 1 else _NEG_INF)


def sequence_log_prob(log_probs: Any, ids: Sequence[int]) -> float:
    """log P(ids | log_probs) under CTC: the sum over every frame path that collapses to `ids` (the forward
    recursion over the blank-interleaved labels); -inf when no path fits in the frames."""
    return CtcForward().log_prob(log_probs, ids)


def text_confidence(log_probs: Any, text: str, forward: CtcForward | None = None) -> float:
    """How surely the log-probabilities (T, V) spell `text`, in [0, 1]: exp of its CTC log-likelihood per
    character. A reader's own decoding of lips it reads well scores high; of lips it cannot read (real faces
    for the shipped readers, speech played backwards) low, yet still decodes to some sentence
    (bench/confidence.py). 0 for an empty text (nothing was read). A live caller passes its utterance's
    `forward` to pay only for what is new since its last call."""
    ids = encode(text)
    if not ids:
        return 0.0
    return math.exp((forward or CtcForward()).log_prob(log_probs, ids) / len(ids))


@dataclass(frozen=True)
class Hypothesis:
    """One decoded prefix: its token ids, the log-probability of all its CTC paths, and whether it is a
    whole sentence of the grammar (always True without one)."""

    ids: tuple[int, ...]
    log_prob: float
    complete: bool = True

    @property
    def text(self) -> str:
        return decode(self.ids)


class _Node:
    """A character trie node of one word slot; `allowed` is filled once the grammar is built."""

    __slots__ = ("allowed", "block", "children", "end", "order", "slot")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.children: dict[int, _Node] = {}
        self.end = False
        self.allowed: tuple[int, ...] = ()
        self.order = np.full(VOCAB_SIZE, -1)  # each token's place in `allowed`, -1 where not allowed
        self.block = np.full(1, BLANK)  # a beam search's candidates here: blank (the prefix stays), `allowed`

    def allow(self, tokens: tuple[int, ...]) -> None:
        """The tokens a prefix in this state may grow by, in the order a beam search tries them."""
        self.allowed = tokens
        self.order[list(tokens)] = np.arange(len(tokens))
        self.block = np.array((BLANK, *tokens))


class WordGrammar:
    """Sentences made of one word from each slot, in order, separated by single spaces.

    The decoder state is a trie node (each node belongs to one slot); `allowed(state)` gives the token
    ids that may come next, `advance` moves on by one token.
    """

    def __init__(self, slots: Sequence[Iterable[str]]) -> None:
        self.slots = tuple(tuple(words) for words in slots)
        if not self.slots or any(not words for words in self.slots):
            raise ValueError("a grammar needs at least one slot and one word per slot")
        self._roots = [_Node(i) for i in range(len(self.slots))]
        nodes = list(self._roots)
        for root, words in zip(self._roots, self.slots, strict=True):
            for word in words:
                node = root
                for ch in word:
                    if ch not in CHARSET or ch in "_ ":
                        raise ValueError(f"word {word!r} has character {ch!r} outside the charset")
                    token = CHARSET.index(ch)
                    if token not in node.children:
                        node.children[token] = _Node(root.slot)
                        nodes.append(node.children[token])
                    node = node.children[token]
                node.end = True
        last = len(self.slots) - 1
        for node in nodes:
            node.allow(tuple(node.children) + ((SPACE,) if node.end and node.slot < last else ()))

    def start(self) -> _Node:
        return self._roots[0]

    @staticmethod
    def allowed(state: _Node) -> tuple[int, ...]:
        return state.allowed

    def advance(self, state: _Node, token: int) -> _Node:
        return self._roots[state.slot + 1] if token == SPACE else state.children[token]

    def is_complete(self, state: _Node) -> bool:
        return state.end and state.slot == len(self.slots) - 1

    def complete_word(self, start: str) -> str:
        """A sentence's `start` with its last word completed where only one word of that word's slot begins
        so (GRID's "lay whi" is "lay white"); as it is where it ends between words, in a whole word or in
        one that several words of the slot begin with."""
        words = start.split(" ")
        if len(words) > len(self.slots):
            return start
        fits = [w for w in self.slots[len(words) - 1] if w.startswith(words[-1])]
        return " ".join([*words[:-1], fits[0]]) if len(fits) == 1 else start

    def __contains__(self, sentence: str) -> bool:
        words = sentence.split(" ")
        return len(words) == len(self.slots) and all(w in s for w, s in zip(words, self.slots, strict=True))


GRID_GRAMMAR = WordGrammar([tuple(slot.values()) for slot in GRID_SLOTS])

_FREE = _Node(0)  # without a grammar, every prefix may grow by any token but blank
_FREE.allow(tuple(i for i in range(VOCAB_SIZE) if i != BLANK))


def beam_search(log_probs: Any, beam_width: int = 16, grammar: WordGrammar | None = None,
                prune_log_prob: float = -20.0, token_bonus: float = 0.0) -> list[Hypothesis]:
    """CTC prefix beam search; hypotheses best first.

    With a `grammar`, only prefixes of its sentences are kept; complete sentences rank before
    incomplete ones (an incomplete best guess is still returned when the input is too short for any
    whole sentence). Tokens with a frame log-probability below `prune_log_prob` are not tried there.
    `token_bonus` is added to the log-probability of every token a prefix emits (an insertion bonus: it
    lets the beam reach whole sentences where the frames mostly say blank).
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    lp = _as_matrix(log_probs)
    # The beam: prefixes, their grammar states, log p(ends in blank), log p(ends in its last token). Each
    # frame every prefix stays (after a blank, or with its last token once more) or grows by a token its
    # state allows; the candidates are laid out as a dict of prefixes would receive them (each prefix, then
    # its growths), which decides ties in the ranking.
    prefixes: list[tuple[int, ...]] = [()]
    states: list[Any] = [grammar.start() if grammar else _FREE]
    p_blank, p_token = np.zeros(1), np.full(1, _NEG_INF)
    for row in lp:
        n = len(prefixes)
        total = _log_add(p_blank, p_token)
        last = np.array([prefix[-1] if prefix else BLANK for prefix in prefixes])
        blocks = [state.block for state in states]
        token = np.concatenate(blocks)
        sizes = [len(block) for block in blocks]
        beam = np.repeat(np.arange(n), sizes)
        starts = np.cumsum(sizes) - sizes  # where each prefix's block begins: the prefix itself, staying
        grown_lp = row[token]
        # a repeated token is a new one only after a blank
        source = np.where(token == last[beam], p_blank[beam], total[beam])
        cand_token = source + (grown_lp + token_bonus)
        cand_token[starts] = np.where(last != BLANK, p_token + row[last], _NEG_INF)
        cand_blank = np.full(len(token), _NEG_INF)
        cand_blank[starts] = total + row[BLANK]
        valid = grown_lp >= prune_log_prob
        valid[starts] = True
        # a prefix grown into another prefix of the beam joins it, in the place of whichever came first
        index = {prefix: k for k, prefix in enumerate(prefixes)}
        begins = starts.tolist()
        for j, prefix in enumerate(prefixes):
            parent = index.get(prefix[:-1]) if prefix else None
            if parent is None:
                continue
            grown = begins[parent] + 1 + int(states[parent].order[prefix[-1]])
            if not valid[grown]:
                continue
            joined = _logaddexp(float(cand_token[begins[j]]), float(cand_token[grown]))
            keep, drop = (grown, begins[j]) if parent < j else (begins[j], grown)
            cand_blank[keep], cand_token[keep], valid[drop] = cand_blank[begins[j]], joined, False
        candidates = np.flatnonzero(valid)
        scores = _log_add(cand_blank[candidates], cand_token[candidates])
        best = candidates[np.argsort(-scores, kind="stable")[:beam_width]]
        kept_prefixes, kept_states = [], []
        stays = np.zeros(len(token), bool)
        stays[starts] = True
        for k, t, stay in zip(beam[best].tolist(), token[best].tolist(), stays[best].tolist(), strict=True):
            kept_prefixes.append(prefixes[k] if stay else (*prefixes[k], t))
            kept_states.append(states[k] if stay else grammar.advance(states[k], t) if grammar else _FREE)
        prefixes, states = kept_prefixes, kept_states
        p_blank, p_token = cand_blank[best], cand_token[best]
    hyps = [Hypothesis(prefix, _logaddexp(float(pb), float(pt)),
                       grammar.is_complete(state) if grammar else True)
            for prefix, state, pb, pt in zip(prefixes, states, p_blank, p_token, strict=True)]
    hyps.sort(key=lambda h: (h.complete, h.log_prob), reverse=True)
    return hyps


COMPLETION_BONUSES = (1.0, 2.0, 4.0, 8.0)


def best_sentence(log_probs: Any, beam_width: int, grammar: WordGrammar,
                  rescore: Callable[[list[str]], Sequence[float]] | None = None, whole: bool = True) -> str:
    """The grammar's likeliest whole sentence for the frames: the plain beam's best, or, where the frames
    say too little for any (a face the reader barely reads: mostly blank), the first whole sentence a
    growing `token_bonus` brings into the beam; the plain beam's best prefix if none does. A robot acts
    on whole commands, and a mel prior speaks only what it is given. Not `whole` (frames of a sentence
    still being said): the plain beam's best, a sentence's start where no whole one fits, never completed.

    `rescore` gives each of the beam's whole sentences a log-score of a second view of the same frames
    (a phone aligner's: engines.models.aligner), added to its CTC log-probability before they are ranked."""
    hyps = beam_search(log_probs, beam_width, grammar)
    if whole and hyps and not hyps[0].complete:
        for bonus in COMPLETION_BONUSES:
            found = beam_search(log_probs, beam_width, grammar, token_bonus=bonus)
            if found and found[0].complete:
                hyps = found
                break
    if not hyps:
        return ""
    sentences = [h for h in hyps if h.complete]
    if rescore is None or len(sentences) < 2:
        return hyps[0].text
    extra = rescore([h.text for h in sentences])
    return max(zip(sentences, extra, strict=True), key=lambda pair: pair[0].log_prob + pair[1])[0].text
