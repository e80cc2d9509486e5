"""The guidance ASR's recipe: mel (clean, or noised to x_t by the diffusion schedule) → CTC, as LipVoicer's
noise-aware guidance ASR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engines.params import param
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


@dataclass
class ASROptions:
    clean_fraction: float = param(0.25, "share of samples trained on the clean mel (t = 0)")
    t_max: int = param(400, "noisy samples draw t uniformly from 1..t_max − 1 (guidance uses t ≤ 270)")
    val_t: int = param(135, "diffusion step of the noisy validation CER (besides t = 0)")


def recipe(model: nn.Module, config: Any, options: ASROptions, data: DataOptions, train: Any,
        ctx: Context) -> Recipe:
    from engines.diffusion.schedule import DiffusionSchedule

    schedule = DiffusionSchedule()
    if not 1 < options.t_max <= schedule.T:
        raise RecipeError(f"recipe.t_max must be in 2..{schedule.T}")
    samples = load_samples(data, data.split, data.limit, ctx)
    val = Windows(load_samples(data, data.val_split, data.val_limit, ctx), 0, 0) if data.val_split else None

    def noised(mel: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mel.shape, generator=generator, device=mel.device)
        return torch.where((t > 0)[:, None, None], schedule.q_sample(mel, t, noise), mel)

    def loss_fn(batch: dict[str, Any], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        mel = batch["mel"]
        b = mel.shape[0]
        t = torch.randint(1, options.t_max, (b,), device=mel.device)
        t = torch.where(torch.rand(b, device=mel.device) < options.clean_fraction, torch.zeros_like(t), t)
        loss = ctc_loss(model(noised(mel, t), t.float()), batch, batch["lengths"])
        return loss, {"clean_share": (t == 0).float().mean()}

    def validate(model: nn.Module) -> dict[str, float]:
        out = {}
        for step in (0, options.val_t):
            generator = torch.Generator(ctx.device).manual_seed(step)
            errors = chars = 0
            for batch in batches(val, train.batch_size, ctx.device):
                t = torch.full((batch["mel"].shape[0],), step, device=ctx.device)
                e, c = ctc_cer(model(noised(batch["mel"], t, generator), t.float()), batch, batch["lengths"])
                errors, chars = errors + e, chars + c
            out[f"cer_t{step}"] = errors / max(1, chars)
        return out

    return Recipe(model, config, loss_fn, Windows(samples, data.window, train.seed),
                  summarize(data, samples.clips), collate, validate if val is not None else None)
