"""Conditions of frozen networks over whole clips, computed once per clip and variant (in memory and on
disk), for the recipes that train on a frozen lip reader's features."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.train import checkpoint
from engines.train.augment import LipAugment, augment_lips, draw_move, move_onset
from engines.train.distributed import derive_seed
from engines.train.recipes.common import RecipeError

log = logging.getLogger(__name__)


class ConditionCache:
    """MelGen's condition (T, C) of every clip, computed once over the whole clip by the frozen lip reader
    and identity encoder, so a training window hears the GRU states of the whole utterance (as a stream
    does, carrying them from window to window) and the frozen networks never run twice. With `variants`
    > 1 each clip also keeps conditions of augmented lip inputs (variant 0 is the plain one), drawn from
    (seed, variant, clip index). Without an identity encoder, the lip reader's features alone (the phone
    aligner's input). With `moves` (the phone aligner, whose labels can follow), the augmentations may also
    move a clip's start and end (onset_trim, onset_hold, end_hold; not tempo): `moved[clip][variant]` is
    then (lead, tail), the frames held before (dropped, if negative) and after the clip (augment.move_onset),
    and each variant has its own length.

    Each clip's conditions are also kept on disk beside the features (`conditions/` under the samples'
    cache), keyed by the networks' weights, these options, the clip's index and its content: a resumed
    or repeated training with the same reader skips the frozen networks (they take most of a short
    fine-tune's time: ~20–45 minutes on 2 cores for the four corpora)."""

    def __init__(self, samples: Any, lipreader: nn.Module, identity_encoder: nn.Module | None, kind: str,
                 progress: bool = True, variants: int = 1, augment: LipAugment | None = None,
                 seed: int = 0, moves: bool = False) -> None:
        from tqdm import tqdm

        from engines.data.cache import FeatureCache
        from engines.data.loaders import TorchSamples

        if variants < 1 or (variants > 1 and (augment is None or not augment.active)):
            raise RecipeError(f"condition_variants {variants} needs >= 1, and augmentations when above 1")
        moving = augment is not None and augment.moves_onset
        if augment is not None and (augment.tempo or (moving and not moves)):
            raise RecipeError("onset_trim, onset_hold, end_hold and tempo change a clip's length: MelGen's "
                              "conditions must stay aligned with its mel (they are for the lip reader; the "
                              "phone aligner takes all but tempo)")
        # the move is drawn first, then the rest as augment_lips draws it without one
        steady = dataclasses.replace(augment, onset_trim=0, onset_hold=0, end_hold=0) if moving else augment
        items = TorchSamples(samples, window=0)
        networks = [checkpoint.weights_digest(net, exact=True)
                    for net in (lipreader, identity_encoder) if net is not None]
        self.stored = FeatureCache(samples.cache.root / "conditions", "|".join(map(str, (
            "conditions-1", *networks, kind, variants, augment, seed, moves))))
        self.conds: dict[str, list[torch.Tensor]] = {}  # clip → per variant (T_v, C)
        self.moved: dict[str, list[tuple[int, int]]] = {}
        self._writable = True
        with torch.no_grad():
            for i in (bar := tqdm(range(len(items)), unit="clip", desc="conditions", disable=not progress)):
                ref = samples.clips[i]
                key = self.stored.key(ref.files, str(i))  # augmentations are drawn from the clip's index
                arrays = self.stored.load(key)
                if arrays is None:
                    arrays = self._compute(items[i], i, lipreader, identity_encoder, kind, variants, augment,
                                           steady, seed)
                    self._keep(key, arrays)
                else:
                    self.stored.hits += 1
                    bar.set_postfix_str(f"{self.stored.hits} from disk", refresh=False)
                self.conds[ref.id] = [torch.from_numpy(arrays[f"v{v}"]) for v in range(variants)]
                self.moved[ref.id] = [(int(lead), int(tail)) for lead, tail in arrays["moved"]]

    def _keep(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store a computed clip; a full or read-only disk only costs the saving (the run keeps them in
        memory), said once."""
        self.stored.misses += 1
        if not self._writable:
            return
        try:
            self.stored.store(key, arrays)
        except OSError as e:
            self._writable = False
            log.warning("conditions are not kept on disk (%s); this run holds them in memory", e)

    @staticmethod
    def _compute(it: dict[str, Any], index: int, lipreader: nn.Module, identity_encoder: nn.Module | None,
                 kind: str, variants: int, augment: LipAugment | None, steady: LipAugment | None,
                 seed: int) -> dict[str, np.ndarray]:
        """One clip's arrays as stored: v0 … v{variants−1} (T_v, C) float16 and moved (variants, 2)."""
        from engines.models.lipreader import condition_features
        from engines.models.melgen import join_condition

        identity = identity_encoder(it["face"][None]) if identity_encoder is not None else None
        arrays, moved = {}, []
        for v in range(variants):
            seen, lead, tail = it, 0, 0
            if v:
                rng = np.random.default_rng(derive_seed(seed, v, index))
                if augment is not None and augment.moves_onset:
                    lead, tail = draw_move(augment, rng, it["lips"].shape[0])
                    seen = move_onset(it, lead, tail)
                seen = augment_lips(seen, steady, rng)
            visual = condition_features(lipreader(seen["video"], seen["lips"][None]), kind)
            cond = join_condition(visual, identity) if identity is not None else visual
            arrays[f"v{v}"] = cond[0].half().numpy()
            moved.append((lead, tail))
        arrays["moved"] = np.array(moved, dtype=np.int64).reshape(variants, 2)
        return arrays

    def window(self, ids: Sequence[str], starts: Sequence[int], frames: int,
               variants: Sequence[int] | None = None) -> torch.Tensor:
        """(B, frames, C): each clip's condition (of its variant; default the plain one) from its window
        start, zero past the clip's end."""
        out = torch.zeros((len(ids), frames, self.conds[ids[0]][0].shape[1]))
        for row, clip, start, variant in zip(out, ids, starts, variants or [0] * len(ids), strict=True):
            part = self.conds[clip][int(variant)][int(start):int(start) + frames]
            row[:len(part)] = part.float()
        return out
