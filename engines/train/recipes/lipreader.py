"""The lip reader's recipe: mouth ROIs + lip geometry → CTC over characters, with per-clip augmentations
and an optional speaker adversary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engines.models.lengths import frame_mask
from engines.params import param
from engines.train.augment import LipAugment
from engines.train.distributed import Context
from engines.train.recipes.common import (
    DataOptions,
    Recipe,
    RecipeError,
    Windows,
    batches,
    collate,
    ctc_cer,
    ctc_loss,
    load_samples,
    summarize,
)


@dataclass(frozen=True)
class LipReaderOptions(LipAugment):
    speaker_adversary: float = param(0.0, "weight of a face classifier on the clip-mean front-end features, "
                                          "trained through gradient reversal so the features forget whose "
                                          "face it is (0: off)")


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


class SpeakerAdversary(nn.Module):
    """Which training face a clip shows, from its front-end features averaged over its frames. Its loss
    trains it as usual, while the gradient reaching the front end is reversed and scaled by `weight`
    (domain-adversarial training): the ten training faces are few enough that a reader learns them, and
    what it learns of a face is no help on the next one."""

    def __init__(self, dim: int, faces: int, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.net = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, faces))

    def forward(self, visual: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = frame_mask(lengths, visual.shape[1], visual)
        mean = (visual * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.net(_ReverseGradient.apply(mean, self.weight))


def recipe(model: nn.Module, config: Any, options: LipReaderOptions, data: DataOptions, train: Any,
              ctx: Context) -> Recipe:
    samples = load_samples(data, data.split, data.limit, ctx)
    val = Windows(load_samples(data, data.val_split, data.val_limit, ctx), 0, 0) if data.val_split else None
    faces = {c.id: c.identity or c.speaker for c in samples.clips}
    labels = {name: i for i, name in enumerate(sorted(set(faces.values())))}
    adversary = None
    if options.speaker_adversary > 0:
        if len(labels) < 2:
            raise RecipeError(f"speaker_adversary needs clips of 2 or more faces, found {sorted(labels)}")
        adversary = SpeakerAdversary(config.frontend.dim, len(labels), options.speaker_adversary)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model(batch["video"], batch["lips"], lengths=batch["lengths"])
        loss = ctc_loss(out.log_probs, batch, batch["lengths"])
        if adversary is None:
            return loss, {}
        logits = adversary(out.visual, batch["lengths"])
        target = torch.tensor([labels[faces[i]] for i in batch["id"]], device=logits.device)
        accuracy = (logits.argmax(1) == target).float().mean()
        return loss + F.cross_entropy(logits, target), {"ctc": loss.detach(), "face_acc": accuracy}

    def validate(model: nn.Module) -> dict[str, float]:
        errors = chars = 0
        losses = []
        for batch in batches(val, train.batch_size, ctx.device):
            log_probs = model(batch["video"], batch["lips"], lengths=batch["lengths"]).log_probs
            losses.append(ctc_loss(log_probs, batch, batch["lengths"]).item())
            e, c = ctc_cer(log_probs, batch, batch["lengths"])
            errors, chars = errors + e, chars + c
        return {"loss": float(np.mean(losses)), "cer": errors / max(1, chars)}

    summary = {**summarize(data, samples.clips), "faces": len(labels)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed, options), summary,
                  collate, validate if val is not None else None, aux=adversary)
