"""MelGen's recipe: diffusion on mel windows, conditioned on a frozen lip reader's features and a frozen
identity encoder's embedding, with condition dropout for classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
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
class MelGenOptions:
    lipreader: str = param("lipreader", "trained lip reader whose features MelGen hears "
                                        "(checkpoint path or shipped name)")
    identity: str = param("identity", "trained identity encoder (checkpoint path or shipped name)")
    features: str = param("reader", "lip-reader features: 'visual' (front end) or 'reader' (front end and "
                                    "GRU states)", choices=("visual", "reader"))
    cond_drop_prob: float = param(0.2, "probability of training a sample on the null condition (CFG)")
    loss: str = param("l1", "diffusion loss on the predicted ε or x0 (LipVoicer: l1 on ε)",
                      choices=("l1", "l2"))
    condition_variants: int = param(1, "conditions per training clip: the plain one and N − 1 from lip "
                                       "inputs changed as `augment` says; each training window hears one "
                                       "at random, so MelGen learns to bear how a new face shifts the lip "
                                       "reader's features")
    augment: LipAugment = param(LipAugment(), "augmentations of the extra condition variants")  # noqa: RUF009
    phonetic_loss: float = param(0.0, "weight of the phonetic loss: KL from the frozen ASR's character "
                                      "posteriors on the reference mel to those on MelGen's clean estimate, "
                                      "weighted by ᾱ_t (the L1 loss alone renders short words such as GRID's "
                                      "letters unintelligibly, NOTES.md)")
    asr: str = param("asr", "the frozen ASR of the phonetic loss (checkpoint path or shipped name)")


def phonetic_loss(asr: nn.Module, weight: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                                torch.Tensor]:
    """`diffusion_loss`'s x0_loss: weight · mean over samples of ᾱ_t · KL(ASR(x0) ‖ ASR(x̂0)) per ASR
    frame, both heard as clean (t = 0). The ASR stays frozen; the gradient reaches MelGen through x̂0."""
    def loss(x0_hat: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = asr(x0, 0)
        kl = (target.exp() * (target - asr(x0_hat, 0))).sum(dim=2).mean(dim=1)
        return weight * (alpha_bar * kl).mean()
    return loss


def recipe(model: nn.Module, config: Any, options: MelGenOptions, data: DataOptions, train: Any,
           ctx: Context) -> Recipe:
    from engines.diffusion.sampling import diffusion_loss
    from engines.diffusion.schedule import DiffusionSchedule

    reader = load_frozen(options.lipreader, "lipreader")
    identity_encoder = load_frozen(options.identity, "identity")
    cond_dim = reader.condition_dim(options.features) + identity_encoder.config.embed_dim
    if cond_dim != config.cond_dim:
        raise RecipeError(f"the lip reader's {options.features!r} features and the identity embedding make "
                          f"{cond_dim} values per frame; set model.cond_dim: {cond_dim}")
    schedule = DiffusionSchedule()
    samples = load_samples(data, data.split, data.limit, ctx)
    conds = ConditionCache(samples, reader, identity_encoder, options.features, ctx.main,
                           options.condition_variants, options.augment, train.seed)
    val = val_conds = None
    if data.val_split:
        val_samples = load_samples(data, data.val_split, data.val_limit, ctx)
        val = Windows(val_samples, data.window, 0)
        val_conds = ConditionCache(val_samples, reader, identity_encoder, options.features, ctx.main)

    def condition(batch: dict[str, Any], cache: ConditionCache) -> torch.Tensor:
        return cache.window(batch["id"], batch["start"].tolist(), batch["lips"].shape[1],
                            batch["variant"].tolist()).to(ctx.device)

    x0_loss = phonetic_loss(load_frozen(options.asr, "asr"), options.phonetic_loss) \
        if options.phonetic_loss > 0 else None

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        return diffusion_loss(model, batch["mel"], condition(batch, conds), schedule, options.cond_drop_prob,
                              model.null_cond, options.loss, target=config.prediction, x0_loss=x0_loss), {}

    def validate(model: nn.Module) -> dict[str, float]:
        generator = torch.Generator(ctx.device).manual_seed(0)
        losses = [diffusion_loss(model, batch["mel"], condition(batch, val_conds), schedule, 0.0, None,
                                 options.loss, generator=generator, target=config.prediction).item()
                  for batch in batches(val, train.batch_size, ctx.device)]
        return {"loss": float(np.mean(losses))}

    summary = {**summarize(data, samples.clips), "lipreader": options.lipreader, "identity": options.identity,
               "features": options.features, "lipreader_digest": checkpoint.weights_digest(reader),
               "identity_digest": checkpoint.weights_digest(identity_encoder)}
    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed,
                                                  variants=options.condition_variants), summary,
                  collate, validate if val is not None else None)
