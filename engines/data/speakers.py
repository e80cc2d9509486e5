"""Synthetic speakers: each is one face identity paired with one voice setting of the same gender, so a
face predicts its voice; and the speaker-level split.

Split (everything decided from the seed, nothing from the order of files on disk):
- test: about `test_fraction` of the identities of each gender AND about `test_fraction` of the voice
  settings of each gender are held out whole and paired only with each other: test clips show faces
  never seen in training, speaking with voice settings never heard in training;
- train: the other identities, paired with the other voice settings;
- val is not a speaker split: it is unseen utterances (sentences never used in train) of train
  speakers, chosen per clip by engines.data.corpus.

An identity that pins a voice (a `voice` label, engines.data.identities) is a training speaker with that
voice and takes no part in the split: derived faces are made from training people only, so they must
neither become test faces nor use up voice settings; the other identities split exactly as without them.

Held-out voice settings are drawn round-robin over the base voices (mbrola us2, us3, en1, piper
joe-us, ...), so the test voices are spread over the base voices rather than all variations of one.
Within each side (train or test) of a gender, identities take the settings in that same round-robin
order; where a gender has more identities than settings, a setting serves several faces (each face still
has exactly one voice). A gender with fewer than two identities or two voice settings has no test
speakers (nothing could be held out on both sides). An identity whose gender no voice has (e.g.
"unknown") is paired from all the voices.

Sizes for ../shared/faces (13 identities: 5 female with 26 photos, 8 male with 24) and the default
voice bank (15 female settings, all mbrola us1; 36 male: mbrola us2, us3, en1 and piper joe-us) at
test_fraction 0.2: test = 1 female + 2 male identities, with 3 female + 7 male held-out settings (one
per test identity is used); train = 4 female + 6 male identities with 12 female + 29 male settings
(one per identity used). So 13 speakers, 3 of them test: about 3/13 of the clips are test, and val is
about `val_fraction` of the other 10/13. `split_sizes` gives these figures for any folder; speakers.json
at the corpus root lists every speaker with its identity, voice and split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engines.data.identities import Identity
    from engines.data.voices import Voice

TEST_FRACTION = 0.2
SPLITS = ("train", "val", "test")
_STREAM = 0x5BEA  # the speaker plan's own random stream under the corpus seed


@dataclass(frozen=True)
class Speaker:
    id: str  # "spk007": the folder name of its clips
    identity: Identity
    voice: Voice
    split: str  # "train" (its clips go to train or val) or "test"

    @property
    def gender(self) -> str:
        return self.identity.gender


def held_out(n: int, fraction: float) -> int:
    """How many of n items a split holds out: none when n < 2, else at least one and at most n - 1."""
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, round(fraction * n)))


def _round_robin(voices: Sequence[Voice], rng: np.random.Generator) -> list[Voice]:
    """The voices interleaved over their base voices (each base's settings in a random order)."""
    groups: dict[tuple[str, str], list[Voice]] = {}
    for voice in sorted(voices, key=lambda v: v.id):
        groups.setdefault((voice.engine, voice.name), []).append(voice)
    bases = [groups[key] for key in sorted(groups)]
    bases = [[base[i] for i in rng.permutation(len(base))] for base in bases]
    order = rng.permutation(len(bases))
    out: list[Voice] = []
    for depth in range(max((len(b) for b in bases), default=0)):
        out += [bases[i][depth] for i in order if depth < len(bases[i])]
    return out


def assign(identities: Sequence[Identity], voices: Sequence[Voice], seed: int,
           test_fraction: float = TEST_FRACTION) -> list[Speaker]:
    """One speaker per identity, sorted by id (spk000, spk001, ... in identity-id order); see the module
    docstring. ValueError when there is no identity or no voice."""
    if not identities or not voices:
        raise ValueError(f"speakers need identities and voices (got {len(identities)} and {len(voices)})")
    rng = np.random.default_rng([seed, _STREAM])
    voice_genders = {v.gender for v in voices}
    by_id = {v.id: v for v in voices}
    pairs: dict[str, tuple[Identity, Voice, str]] = {}
    for identity in identities:
        if identity.voice is not None:
            if identity.voice not in by_id:
                raise ValueError(f"identity {identity.id} pins voice {identity.voice!r}, not in the bank")
            pairs[identity.id] = (identity, by_id[identity.voice], "train")
    free = [i for i in identities if i.voice is None]
    for gender in sorted({i.gender for i in free}):
        group = sorted((i for i in free if i.gender == gender), key=lambda i: i.id)
        pool = [v for v in voices if v.gender == gender] if gender in voice_genders else list(voices)
        group = [group[k] for k in rng.permutation(len(group))]
        ordered = _round_robin(pool, rng)
        k_id, k_voice = held_out(len(group), test_fraction), held_out(len(ordered), test_fraction)
        if k_id == 0 or k_voice == 0:
            k_id = k_voice = 0
        for side, faces, settings in (("test", group[:k_id], ordered[:k_voice]),
                                      ("train", group[k_id:], ordered[k_voice:])):
            for k, identity in enumerate(faces):
                pairs[identity.id] = (identity, settings[k % len(settings)], side)
    return [Speaker(f"spk{n:03d}", *pairs[key]) for n, key in enumerate(sorted(pairs))]


def split_sizes(speakers: Sequence[Speaker]) -> dict[str, dict[str, int]]:
    """Per speaker split and gender: speakers, identities, photos and distinct voice settings."""
    out: dict[str, dict[str, int]] = {}
    for side in ("train", "test"):
        for gender in sorted({s.gender for s in speakers}):
            chosen = [s for s in speakers if s.split == side and s.gender == gender]
            out[f"{side}/{gender}"] = {"speakers": len(chosen),
                                       "photos": sum(len(s.identity.photos) for s in chosen),
                                       "voice_settings": len({s.voice.id for s in chosen})}
    return out

