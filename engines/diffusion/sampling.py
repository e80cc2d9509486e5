"""Samplers over the discrete VP schedule, and the training loss. Plain functions, like k-diffusion's.

Every sampler is `sample_*(denoise_fn, x, schedule, nfe, *, …) -> x0` where `denoise_fn(x_t, t) -> ε̂`
(t a (B,) tensor of training times, fractional allowed; a `GuidedDenoiser` or any model closure) is
called exactly `nfe` times, and x is the starting point at the first time (N(0, I) noise in use).
The steps are t_0 = T−1 > … > t_{nfe−1} > clean (`DiffusionSchedule.timesteps`), or any descending
`timesteps` (e.g. `schedule.twiddle(fast_betas)`); the last step always lands on the clean estimate.

- `sample_ddpm`: LipVoicer's ancestral sampler (σ_t² = β̃_t), all T steps by default: the reference.
  It is DDIM with η = 1, which is the same update (tested against a transcription of LipVoicer's loop);
  fewer steps give the respaced ancestral sampler (DiffWave's fast inference with `twiddle` times).
- `sample_ddim`: DDIM (Song et al. 2021), η = 0 deterministic.
- `sample_dpmpp_2m`: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): second-order multistep in the data
  (x0) prediction, with time in λ = log(√ᾱ/√(1−ᾱ)); first order on the first step, and the last step
  (to λ = ∞) returns the clean estimate, as k-diffusion does. At 1 NFE all three return the same x̂0.

In-painting (`fixed_mask` True where `fixed_values` are known, both broadcastable to x; the overlapping
past of a streaming window), RePaint-style replacement: the start's known region becomes
√ᾱ·values + √(1−ᾱ)·z, and after every network call the known region of x_t becomes √ᾱ·values +
√(1−ᾱ)·ε̂ and that of x̂0 the values, before the update. Noising the values with the network's own ε̂
rather than noise of its own is what makes the generated part follow the past: on the test's toy
Gaussian the 400-step reference then lands on the exact conditional (mean and spread); with the
values noised independently of ε̂ it under-shot the conditional shift by 25–46 %. Few-step samplers
still fall part of the way short (bench/samplers.py).
The output's known region equals the values exactly. `clip_x0` clamps x̂0 to [−1, 1] (the normalised
mel range) before the update. `generator` makes the noise reproducible; `callback({"i", "t", "x",
"x0"})` sees each step's new x and the clean estimate it used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from engines.diffusion.schedule import DiffusionSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]
Known = tuple[torch.Tensor, torch.Tensor]  # (mask, values) of in-painting


def sample_ddpm(denoise_fn: Denoiser, x: torch.Tensor, schedule: DiffusionSchedule, nfe: int | None = None,
                **kwargs: Any) -> torch.Tensor:
    """LipVoicer's ancestral sampler over all T steps (or `nfe` uniformly respaced ones)."""
    kwargs.setdefault("spacing", "uniform")
    return sample_ddim(denoise_fn, x, schedule, schedule.T if nfe is None else nfe, eta=1.0, **kwargs)


def sample_ddim(denoise_fn: Denoiser, x: torch.Tensor, schedule: DiffusionSchedule, nfe: int, *,
                eta: float = 0.0, spacing: str = "quadratic", timesteps: Sequence[float] | None = None,
                fixed_mask: torch.Tensor | None = None, fixed_values: torch.Tensor | None = None,
                clip_x0: bool = False, generator: torch.Generator | None = None,
                callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DDIM: x_s = √ᾱ_s·x̂0 + √(1−ᾱ_s−σ²)·ε̂ + σ·z, σ = η·√((1−ᾱ_s)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_s)."""
    plan = _plan(schedule, nfe, spacing, timesteps)
    known = _known(x, fixed_mask, fixed_values)
    x = _start(x, plan[0][1], known, generator)
    for i, (t, ab, ab_next) in enumerate(tqdm(plan, desc="sampling", disable=not progress)):
        x0, eps, _ = _estimate(denoise_fn, x, t, ab, clip_x0, known)
        if ab_next == 1.0:
            x = x0
        else:
            sigma = eta * math.sqrt((1.0 - ab_next) / (1.0 - ab) * (1.0 - ab / ab_next))
            x = math.sqrt(ab_next) * x0 + math.sqrt(max(1.0 - ab_next - sigma**2, 0.0)) * eps
            if sigma > 0.0:
                x = x + sigma * _randn(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


def sample_dpmpp_2m(denoise_fn: Denoiser, x: torch.Tensor, schedule: DiffusionSchedule, nfe: int, *,
                    spacing: str = "quadratic", timesteps: Sequence[float] | None = None,
                    fixed_mask: torch.Tensor | None = None, fixed_values: torch.Tensor | None = None,
                    clip_x0: bool = False, generator: torch.Generator | None = None,
                    callback: Callback | None = None, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M): x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·D, D = (1 + 1/2r)·x̂0 − (1/2r)·x̂0_prev."""
    plan = _plan(schedule, nfe, spacing, timesteps)
    known = _known(x, fixed_mask, fixed_values)
    x = _start(x, plan[0][1], known, generator)
    x0_prev = h_prev = None
    for i, (t, ab, ab_next) in enumerate(tqdm(plan, desc="sampling", disable=not progress)):
        x0, _, x = _estimate(denoise_fn, x, t, ab, clip_x0, known)
        if ab_next == 1.0:
            x = x0
        else:
            h = _lam(ab_next) - _lam(ab)
            d = x0
            if x0_prev is not None:
                half_r = 0.5 * h / h_prev  # 1 / (2r), r = h_prev / h
                d = (1.0 + half_r) * x0 - half_r * x0_prev
            x = math.sqrt((1.0 - ab_next) / (1.0 - ab)) * x - math.sqrt(ab_next) * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


def diffusion_loss(model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                   x0: torch.Tensor, cond: torch.Tensor, schedule: DiffusionSchedule,
                   cond_drop_prob: float = 0.2, null_cond: torch.Tensor | None = None, loss: str = "l1", *,
                   generator: torch.Generator | None = None, target: str = "eps",
                   x0_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                   ) -> torch.Tensor:
    """The ε-prediction loss of one batch (LipVoicer's train_melgen.py `training_loss`), or with
    target "x0" the same error measured on the clean estimate x̂0 = (x_t − √(1−ᾱ) ε̂) / √ᾱ (for a model
    that predicts x0 and returns ε̂: every noise level then weighs by its error on the data).

    A uniform training time t ∈ {0, …, T−1} and noise per sample; x_t = q_sample(x0, t, noise); the
    condition is replaced by null_cond (broadcast, so a learned null gets its gradient) for each
    sample with probability cond_drop_prob, which teaches the model ε(x_t, ∅) for CFG. loss "l1"
    (LipVoicer's nn.L1Loss) or "l2", averaged over every element. `x0_loss(x̂0, x0, ᾱ_t)`, when given,
    adds a loss of its own on the clean estimate (ᾱ_t shaped (B,) for weighting by noise level).
    """
    if loss not in ("l1", "l2"):
        raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
    if target not in ("eps", "x0"):
        raise ValueError(f"target must be 'eps' or 'x0', got {target!r}")
    if cond_drop_prob > 0.0 and null_cond is None:
        raise ValueError("cond_drop_prob > 0 needs null_cond")
    b = x0.shape[0]
    device = generator.device if generator is not None else x0.device
    t = torch.randint(schedule.T, (b,), generator=generator, device=device).to(x0.device)
    noise = _randn(x0, generator)
    x_t = schedule.q_sample(x0, t, noise)
    if cond_drop_prob > 0.0:
        drop = (torch.rand(b, generator=generator, device=device) < cond_drop_prob).to(cond.device)
        cond = torch.where(drop.reshape(b, *[1] * (cond.dim() - 1)), null_cond.to(cond.dtype), cond)
    eps = model_fn(x_t, t.to(x0.dtype), cond)
    ab = schedule.alpha_bar_at(t.cpu()).to(x0.device, x0.dtype).reshape(b, *[1] * (x0.dim() - 1))
    x0_hat = (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()
    err = x0_hat - x0 if target == "x0" else eps - noise
    total = err.abs().mean() if loss == "l1" else err.square().mean()
    return total if x0_loss is None else total + x0_loss(x0_hat, x0, ab.reshape(b))


def _plan(schedule: DiffusionSchedule, nfe: int, spacing: str,
          timesteps: Sequence[float] | None) -> list[tuple[float, float, float]]:
    """(t, ᾱ_t, ᾱ of the next time) per network call; the last call's next ᾱ is 1 (clean)."""
    if timesteps is None:
        times = schedule.timesteps(nfe, spacing)
    else:
        times = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
        if len(times) != nfe:
            raise ValueError(f"{len(times)} timesteps given for nfe={nfe}")
        if len(times) == 0 or bool((times <= -1).any()) or bool((times[1:] >= times[:-1]).any()):
            raise ValueError(f"timesteps must be descending and > -1: {times.tolist()}")
    abars = [*schedule.alpha_bar_at(times).tolist(), 1.0]
    return [(float(t), abars[i], abars[i + 1]) for i, t in enumerate(times.tolist())]


def _lam(ab: float) -> float:
    """Half log-SNR λ = log(√ᾱ / √(1−ᾱ))."""
    return 0.5 * (math.log(ab) - math.log1p(-ab))


def _estimate(denoise_fn: Denoiser, x: torch.Tensor, t: float, ab: float, clip_x0: bool,
              known: Known | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One network call: x̂0 (clipped, known region put in), ε̂, and x_t re-set to √ᾱ·x̂0 + √(1−ᾱ)·ε̂.

    Clipping keeps x_t and takes the ε̂ that fits the clipped x̂0 (as improved-diffusion does). The
    known region keeps the network's ε̂ instead: its x_t becomes the known values noised with the
    network's own noise estimate, which agrees with what the network believes of the unknown region;
    noised independently, the network reads it as a noisy observation, shrinks it, and the unknown
    region under-shoots the conditional (module docstring).
    """
    eps = denoise_fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))
    a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
    x0 = (x - s * eps) / a
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - a * x0) / s
    if known is not None:
        x0 = torch.where(known[0], known[1], x0)
        x = torch.where(known[0], a * known[1] + s * eps, x)
    return x0, eps, x


def _known(x: torch.Tensor, mask: torch.Tensor | None, values: torch.Tensor | None) -> Known | None:
    if (mask is None) != (values is None):
        raise ValueError("fixed_mask and fixed_values go together")
    if mask is None:
        return None
    mask = mask.to(device=x.device, dtype=torch.bool)
    values = values.to(x)
    try:
        fits = torch.broadcast_shapes(mask.shape, values.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"fixed_mask {tuple(mask.shape)} / fixed_values {tuple(values.shape)} "
                         f"do not broadcast to x {tuple(x.shape)}")
    return mask, values


def _start(x: torch.Tensor, ab: float, known: Known | None,
           generator: torch.Generator | None) -> torch.Tensor:
    if known is None:
        return x
    noised = math.sqrt(ab) * known[1] + math.sqrt(1.0 - ab) * _randn(x, generator)
    return torch.where(known[0], noised, x)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)
