"""The phone aligner's recipe: a frozen lip reader's features → the phone at each mel step of the clip's
phone timeline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.params import param
from engines.train import checkpoint
from engines.train.augment import LipAugment
from engines.train.distributed import Context
from engines.train.recipes.common import (
    DataOptions,
    Recipe,
    RecipeError,
    Windows,
    batches,
    collate,
    load_frozen,
    load_samples,
    summarize,
)
from engines.train.recipes.conditions import ConditionCache


@dataclass
class AlignerOptions:
    lipreader: str = param("lipreader", "trained lip reader whose features the aligner reads (checkpoint "
                                        "path or shipped name)")
    features: str = param("reader", "lip-reader features: 'visual' (front end) or 'reader' (front end and "
                                    "GRU states)", choices=("visual", "reader"))
    condition_variants: int = param(1, "features per training clip: the plain ones and N − 1 of lip inputs "
                                       "changed as `augment` says (as MelGen's condition_variants)")
    augment: LipAugment = param(LipAugment(), "augmentations of the extra feature variants; onset_trim, "  # noqa: RUF009
                                              "onset_hold and end_hold move the phone labels with the frames "
                                              "(tempo is refused)")
    stream_cuts: float = param(0.0, "share of training clips cut at a random frame, the steps before the cut "
                                    "scored: a stream's window ends at its look-ahead, mid-speech, where "
                                    "whole clips only ever end in silence (cuts drawn from train.seed)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.stream_cuts <= 1.0:
            raise RecipeError(f"stream_cuts must be in [0, 1], got {self.stream_cuts}")


def clip_meta(clip: Any) -> dict[str, Any]:
    """What our corpus writes beside each clip (engines.data.corpus): its phone timeline, viseme track and
    render settings among them."""
    meta = clip.video.with_suffix(".json")
    if not meta.is_file():
        raise RecipeError(f"{clip.id}: no {meta.name} with the phone timeline beside its video (the phone "
                          "aligner trains on our synthetic corpora, whose clips record what was said when)")
    return json.loads(meta.read_text())


def phone_timeline(clip: Any) -> list[Any]:
    """The true phone timeline [(symbol, start_s, dur_s), ...] our corpus writes beside each clip."""
    return clip_meta(clip)["phones"]


def true_labels(clip: Any, n_steps: int, steps_per_frame: int) -> torch.Tensor:
    """Per-step phone classes (n_steps,) of what the clip's audio says when (its corpus timeline)."""
    from engines.audio.mel import VIDEO_FPS
    from engines.text.phones import timeline_labels

    return torch.from_numpy(timeline_labels(phone_timeline(clip), n_steps, steps_per_frame * VIDEO_FPS))


def moved_labels(labels: torch.Tensor, lead: int, tail: int) -> torch.Tensor:
    """Per-step labels of a clip whose start moved by `lead` steps (held: silence before; negative: that
    many dropped) and whose end moved by `tail` (silence after): augment.move_onset's move, in steps."""
    from engines.text.phones import SILENCE

    return torch.cat([torch.full((max(0, lead),), SILENCE, dtype=labels.dtype), labels[max(0, -lead):],
                      torch.full((tail,), SILENCE, dtype=labels.dtype)])


def recipe(model: nn.Module, config: Any, options: AlignerOptions, data: DataOptions, train: Any,
            ctx: Context) -> Recipe:
    reader = load_frozen(options.lipreader, "lipreader")
    if reader.condition_dim(options.features) != config.feature_dim:
        raise RecipeError(f"the lip reader's {options.features!r} features have "
                          f"{reader.condition_dim(options.features)} values per frame; set model.feature_dim")
    steps = config.steps_per_frame

    def prepared(split: str, limit: int, variants: int) -> tuple[Any, ConditionCache, dict[str, Any]]:
        """Samples, their features and per clip and variant the phone labels (moved with the frames)."""
        samples = load_samples(data, split, limit, ctx)
        feats = ConditionCache(samples, reader, None, options.features, ctx.main, variants, options.augment,
                               train.seed, moves=True)
        labels = {}
        for clip in samples.clips:
            truth = true_labels(clip, steps * feats.conds[clip.id][0].shape[0], steps)
            labels[clip.id] = [moved_labels(truth, steps * lead, steps * tail)
                               for lead, tail in feats.moved[clip.id]]
        return samples, feats, labels

    samples, feats, labels = prepared(data.split, data.limit, options.condition_variants)
    cuts = torch.Generator().manual_seed(train.seed)

    def nll(batch: dict[str, Any], model: nn.Module, cache: ConditionCache, truth: dict[str, torch.Tensor],
            cut_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, correct steps, steps) of one batch; steps past a clip's end (or its cut) do not count."""
        frames = batch["lips"].shape[1]
        x = cache.window(batch["id"], batch["start"].tolist(), frames, batch["variant"].tolist())
        x = x.to(ctx.device)
        target = torch.full((len(batch["id"]), steps * frames), -100, dtype=torch.long)
        lengths = torch.zeros(len(batch["id"]), dtype=torch.long)
        for k, (clip, start, variant) in enumerate(zip(batch["id"], batch["start"].tolist(),
                                                       batch["variant"].tolist(), strict=True)):
            part = truth[clip][variant][steps * start:steps * (start + frames)]
            length = min(frames, cache.conds[clip][variant].shape[0] - start)
            if cut_share and length > 1 and torch.rand((), generator=cuts) < cut_share:
                length = int(torch.randint(1, length, (), generator=cuts))
            lengths[k] = length
            part = part[:steps * length]
            target[k, :len(part)] = part
        target = target.to(ctx.device)
        log_probs = model(x, lengths)
        loss = F.nll_loss(log_probs.reshape(-1, config.classes), target.reshape(-1), ignore_index=-100)
        counted = target >= 0
        return loss, (log_probs.argmax(dim=2) == target)[counted].sum(), counted.sum()

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        return nll(batch, model, feats, labels, options.stream_cuts)[0], {}

    validate = None
    if data.val_split:
        val_samples, val_feats, val_labels = prepared(data.val_split, data.val_limit, 1)
        val = Windows(val_samples, 0, 0)

        def validate(model: nn.Module) -> dict[str, float]:
            losses, right, total = [], 0, 0
            with torch.no_grad():
                for batch in batches(val, train.batch_size, ctx.device):
                    loss, correct, counted = nll(batch, model, val_feats, val_labels)
                    losses.append(loss.item())
                    right, total = right + int(correct), total + int(counted)
            return {"loss": float(np.mean(losses)), "step_accuracy": right / max(total, 1)}

    summary = {**summarize(data, samples.clips), "lipreader": options.lipreader, "features": options.features,
               "lipreader_digest": checkpoint.weights_digest(reader)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed,
                                                  variants=options.condition_variants), summary,
                  collate, validate)
