"""The discrete VP noise schedule of LipVoicer's MelGen (DDPM, linear β from 1e-4 to 0.02, T = 400).

Time is LipVoicer's 0-based training index: step t ∈ {0, …, T−1} has ᾱ_t = ∏_{s≤t} (1 − β_s), and
x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε. The samplers also use t = −1 for the clean end (ᾱ = 1) and fractional
times between the integers, where √ᾱ is linear in t: that is DiffWave's "twiddle" interpolation, so a
fast β list mapped by `twiddle` lands exactly on its own ᾱ values.

The tensors are float64 (the sampler coefficients near t = 0 divide by √(1−ᾱ) ≈ 0.01); samplers read
them as Python floats, so they work on any device and dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from engines.params import param

SPACINGS = ("uniform", "quadratic")


@dataclasses.dataclass
class DiffusionSchedule:
    """LipVoicer's schedule; `betas`, `alphas`, `alpha_bars`, `sigmas` are (T,) float64 tensors."""

    T: int = param(400, "number of training diffusion steps")
    beta_start: float = param(1e-4, "β of step 0")
    beta_end: float = param(0.02, "β of step T−1 (linear in between)")

    def __post_init__(self) -> None:
        if self.T < 1 or not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"bad schedule: T={self.T}, β {self.beta_start}…{self.beta_end}")
        self.betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        # σ_t² = β̃_t = β_t (1−ᾱ_{t−1}) / (1−ᾱ_t), with β̃_0 = β_0 as in LipVoicer's utils.py.
        prev = torch.cat([self.alpha_bars.new_zeros(1), self.alpha_bars[:-1]])
        tilde = self.betas * (1.0 - prev) / (1.0 - self.alpha_bars)
        tilde[0] = self.betas[0]
        self.sigmas = tilde.sqrt()
        # √ᾱ over t = −1 … T−1 (index t + 1): the interpolation table for fractional times.
        self._sqrt_ab = torch.cat([self.alpha_bars.new_ones(1), self.alpha_bars.sqrt()])

    def alpha_bar_at(self, t: torch.Tensor | float) -> torch.Tensor:
        """ᾱ at (fractional) times t ∈ [−1, T−1], √ᾱ linear between integers; ᾱ(−1) = 1."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool(((t < -1) | (t > self.T - 1)).any()):
            raise ValueError(f"time outside [-1, {self.T - 1}]: {t}")
        u = t + 1.0
        lo = u.floor().clamp(max=self.T - 1).long()
        frac = u - lo
        return (self._sqrt_ab[lo] * (1.0 - frac) + self._sqrt_ab[(lo + 1).clamp(max=self.T)] * frac) ** 2

    def timesteps(self, nfe: int, spacing: str = "quadratic", start: int | None = None) -> torch.Tensor:
        """`nfe` integer training times, descending from `start` (default T−1): where a sampler calls the
        network.

        The sampler steps t_0 → t_1 → … → t_{nfe−1} → clean. The times are −1 + S·u^p rounded, S = start + 1,
        for u = 1, (nfe−1)/nfe, …, 1/nfe: p = 1 ("uniform", DDIM's even stride) or p = 2 ("quadratic",
        DDIM's "quad": the steps crowd towards the clean end, where a mel's fine detail is decided).
        Rounding collisions at large nfe are pushed apart, so the times are always distinct;
        nfe = T gives every step (the DDPM reference). A lower start samples from a partly noised mel
        (SDEdit: the mel prior's, engines.synth.engine): timesteps(2, start=99) are the last two of
        timesteps(4).
        """
        span = self.T if start is None else int(start) + 1
        if not 1 <= span <= self.T:
            raise ValueError(f"start must be in 0..{self.T - 1}, got {start}")
        if not 1 <= nfe <= span:
            raise ValueError(f"nfe must be in 1..{span}, got {nfe}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        power = 1.0 if spacing == "uniform" else 2.0
        u = torch.arange(nfe, 0, -1, dtype=torch.float64) / nfe
        t = torch.round(-1.0 + span * u**power)
        # Time i must leave room for the nfe−1−i distinct times after it.
        floor = torch.arange(nfe - 1, -1, -1, dtype=torch.float64)
        return torch.maximum(t, floor)

    def twiddle(self, betas: Sequence[float]) -> torch.Tensor:
        """DiffWave's fast-sampling map: the fractional training time of each step of a short β list.

        Step s of the fast schedule has ᾱ'_s = ∏_{r≤s} (1 − β_r); its time is where the training
        schedule's √ᾱ (linearly interpolated) equals √ᾱ'_s. Returned descending (sampling order), so
        `alpha_bar_at(schedule.twiddle(b))` gives back the fast ᾱ' and any sampler here runs the fast
        schedule; with `sample_ddpm` this is DiffWave's `--fast` inference (and LipVoicer's unused
        `diffwave_fast_inference_schedule`). Unlike DiffWave, a step cleaner than step 0 maps into
        (−1, 0) instead of being dropped; a step noisier than step T−1 is an error.
        """
        fast = torch.cumprod(1.0 - torch.as_tensor(list(betas), dtype=torch.float64), 0).sqrt()
        if len(fast) == 0 or bool((fast < self._sqrt_ab[-1]).any()) or bool((fast > 1.0).any()):
            raise ValueError(f"fast β list must stay within the training schedule's noise range: {betas}")
        # _sqrt_ab is descending; searchsorted wants ascending, hence the negation.
        hi = torch.searchsorted(-self._sqrt_ab, -fast).clamp(1, self.T)
        upper, lower = self._sqrt_ab[hi - 1], self._sqrt_ab[hi]
        times = (hi - 1).double() + (upper - fast) / (upper - lower) - 1.0
        return times.flip(0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise for per-sample times t (B,) (fractional allowed)."""
        ab = self.alpha_bar_at(t.detach().cpu()).to(x0.device, x0.dtype)
        ab = ab.reshape(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise
