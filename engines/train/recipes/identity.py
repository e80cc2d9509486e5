"""The identity encoder's recipe: face crop → unit embedding, trained to tell the training identities apart
by a cosine classifier head that is not shipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from engines.params import param
from engines.train.distributed import Context, derive_seed
from engines.train.recipes.common import DataOptions, Recipe, RecipeError, batches, load_samples, summarize


@dataclass
class IdentityOptions:
    scale: float = param(16.0, "logit scale of the cosine classifier over the training identities")
    flip: bool = param(True, "mirror faces at random (augmentation)")
    brightness: float = param(0.3, "scale brightness by a random factor in 1 ± this (augmentation)")


class CosineHead(nn.Module):
    """Logits = scale · cos(embedding, class centre): trains unit embeddings to separate identities."""

    def __init__(self, dim: int, classes: int, scale: float, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.centres = nn.Parameter(torch.randn(classes, dim, generator=generator) / dim ** 0.5)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embedding, dim=1) @ F.normalize(self.centres, dim=1).T


class Faces(Dataset):
    """(face crop, identity label) per clip, augmented from (seed, epoch, index)."""

    def __init__(self, samples: Any, labels: dict[str, int], options: IdentityOptions | None,
                 seed: int) -> None:
        self.samples, self.labels, self.options = samples, labels, options
        self.keep = [i for i, c in enumerate(samples.clips) if (c.identity or c.speaker) in labels]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[self.keep[index]]
        face = torch.from_numpy(sample.face_crop.astype(np.float32) / 255.0).permute(2, 0, 1)
        if self.options is not None:
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            if self.options.flip and rng.random() < 0.5:
                face = face.flip(2)
            face = (face * (1 + self.options.brightness * (2 * rng.random() - 1))).clamp(0, 1)
        ref = sample.ref
        return {"face": face, "label": torch.tensor(self.labels[ref.identity or ref.speaker])}


def recipe(model: nn.Module, config: Any, options: IdentityOptions, data: DataOptions, train: Any,
             ctx: Context) -> Recipe:
    samples = load_samples(data, data.split, data.limit, ctx)
    names = sorted({c.identity or c.speaker for c in samples.clips})
    if len(names) < 2:
        raise RecipeError(f"the identity encoder needs clips of 2 or more identities, found {names}")
    labels = {n: i for i, n in enumerate(names)}
    head = CosineHead(config.embed_dim, len(names), options.scale, train.seed)
    val = (Faces(load_samples(data, data.val_split, data.val_limit, ctx), labels, None, 0)
           if data.val_split else None)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = head(model(batch["face"]))
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        return F.cross_entropy(logits, batch["label"]), {"acc": accuracy}

    def validate(model: nn.Module) -> dict[str, float]:
        right = total = 0
        for batch in batches(val, train.batch_size, ctx.device, torch.utils.data.default_collate):
            right += int((head(model(batch["face"])).argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
        return {"acc": right / max(1, total)}

    summary = {**summarize(data, samples.clips), "classes": len(names)}
    return Recipe(model, config, loss_fn, Faces(samples, labels, options, train.seed),
                  summary, None, validate if val is not None and len(val) else None, aux=head)
