"""Schedule, guidance and samplers, checked on toy data whose optimal noise predictor is exact.

For data x0 ~ Σ_k π_k N(μ_k, Σ_k), x_t = a·x0 + s·ε is again a mixture, and E[ε | x_t] has a closed form
(`GaussianMixture.eps`): a perfect "network". Samplers fed with it must reproduce the data
distribution, up to their own discretisation error, which is what the distribution tests measure
(`w2`: the 2-Wasserstein distance between Gaussian fits, per dimension). bench/samplers.py uses the
same toys for its table.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from engines.diffusion import (
    DiffusionSchedule,
    GuidedDenoiser,
    diffusion_loss,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)

SCHEDULE = DiffusionSchedule()



class GaussianMixture:
    """Toy data over (C, F) tensors: means (K, C, F), covs (K, D, D) with D = C·F, weights (K,)."""

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: list[float],
                 schedule: DiffusionSchedule = SCHEDULE) -> None:
        self.shape = tuple(means.shape[1:])
        self.means = means.reshape(means.shape[0], -1).double()
        self.evals, self.evecs = torch.linalg.eigh(covs.double())
        self.log_w = torch.tensor(weights, dtype=torch.float64).log()
        self.schedule = schedule
        w = self.log_w.exp()
        self.mean = (w[:, None] * self.means).sum(0)
        second = covs.double() + self.means[:, :, None] * self.means[:, None, :]
        self.cov = (w[:, None, None] * second).sum(0) - self.mean[:, None] * self.mean[None, :]

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[ε | x_t]: per component s·(a²Σ_k + s²I)⁻¹(x_t − a·μ_k), weighted by the posterior of k."""
        ab = self.schedule.alpha_bar_at(t.detach().cpu()).to(x)
        a, s = ab.sqrt()[:, None, None], (1.0 - ab).sqrt()[:, None, None]
        centred = x.reshape(x.shape[0], 1, -1) - a * self.means[None].to(x)
        y = torch.einsum("bkd,kde->bke", centred, self.evecs.to(x))  # in each component's eigenbasis
        var = a**2 * self.evals[None].to(x) + s**2
        z = y / var
        log_post = (self.log_w.to(x) - 0.5 * (y * z).sum(-1) - 0.5 * var.log().sum(-1)).softmax(-1)
        eps = s * torch.einsum("bke,kde->bkd", z, self.evecs.to(x))
        return (log_post[..., None] * eps).sum(1).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        x = self.means[k] + torch.einsum("nde,ne->nd", self.evecs[k], self.evals[k].sqrt() * z)
        return x.reshape(n, *self.shape)

    def start(self, n: int, generator: torch.Generator, t: float | None = None) -> torch.Tensor:
        """Exact samples of x_t at the samplers' first time, so only the sampler's own error remains."""
        t = self.schedule.T - 1 if t is None else t
        x0 = self.sample(n, generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return self.schedule.q_sample(x0, torch.full((n,), float(t)), noise)


def correlated_cov(channels: int, frames: int, std: torch.Tensor, rho_c: float = 0.5,
                   rho_f: float = 0.9) -> torch.Tensor:
    """AR(1)-like correlation across channels and (more strongly) across frames, like a smooth mel."""
    c = torch.arange(channels, dtype=torch.float64)
    f = torch.arange(frames, dtype=torch.float64)
    rc = rho_c ** (c[:, None] - c[None]).abs() * std[:, None] * std[None]
    return torch.kron(rc, rho_f ** (f[:, None] - f[None]).abs())


def gaussian(channels: int = 2, frames: int = 8, schedule: DiffusionSchedule = SCHEDULE) -> GaussianMixture:
    """One correlated Gaussian with a non-zero mean, stds 0.2–0.5."""
    c = torch.arange(channels, dtype=torch.float64)[:, None]
    f = torch.arange(frames, dtype=torch.float64)[None]
    std = torch.linspace(0.2, 0.5, channels, dtype=torch.float64)
    return GaussianMixture((0.4 * torch.sin(c + f / 3))[None], correlated_cov(channels, frames, std)[None],
                           [1.0], schedule)


def bimodal(channels: int = 2, frames: int = 8, schedule: DiffusionSchedule = SCHEDULE) -> GaussianMixture:
    """Two narrow correlated modes (std 0.12) at ±m, weights 0.3 / 0.7."""
    c = torch.arange(channels, dtype=torch.float64)[:, None]
    f = torch.arange(frames, dtype=torch.float64)[None]
    m = 0.5 * torch.cos(c + f / 4)
    cov = correlated_cov(channels, frames, torch.full((channels,), 0.12, dtype=torch.float64))
    return GaussianMixture(torch.stack([m, -m]), torch.stack([cov, cov]), [0.3, 0.7], schedule)


def w2(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """2-Wasserstein distance between the samples' Gaussian fit and N(mean, cov), per dimension (RMS)."""
    flat = samples.reshape(samples.shape[0], -1).double()
    m, c = flat.mean(0), torch.cov(flat.T)
    root = _sqrtm(cov)
    sq = ((m - mean) ** 2).sum() + torch.trace(c + cov - 2.0 * _sqrtm(root @ c @ root))
    return math.sqrt(max(float(sq), 0.0) / flat.shape[1])


def _sqrtm(s: torch.Tensor) -> torch.Tensor:
    e, v = torch.linalg.eigh(s)
    return (v * e.clamp_min(0.0).sqrt()) @ v.T


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _counting(fn: Callable[..., torch.Tensor], calls: list) -> Callable[..., torch.Tensor]:
    def wrapped(*args: torch.Tensor) -> torch.Tensor:
        calls.append(args)
        return fn(*args)
    return wrapped


# --- schedule -------------------------------------------------------------------------------------


def test_schedule_is_lipvoicers() -> None:
    # A transcription of LipVoicer's utils.calc_diffusion_hyperparams (T=400, β 1e-4 … 0.02).
    beta = torch.linspace(1e-4, 0.02, 400, dtype=torch.float64)
    alpha, alpha_bar, beta_tilde = 1 - beta, (1 - beta).clone(), beta.clone()
    for t in range(1, 400):
        alpha_bar[t] *= alpha_bar[t - 1]
        beta_tilde[t] *= (1 - alpha_bar[t - 1]) / (1 - alpha_bar[t])
    s = DiffusionSchedule()
    assert (s.T, s.beta_start, s.beta_end) == (400, 1e-4, 0.02)
    torch.testing.assert_close(s.betas, beta)
    torch.testing.assert_close(s.alphas, alpha)
    torch.testing.assert_close(s.alpha_bars, alpha_bar)
    torch.testing.assert_close(s.sigmas, beta_tilde.sqrt())
    with pytest.raises(ValueError):
        DiffusionSchedule(T=0)


def test_alpha_bar_is_exact_at_steps_and_sqrt_linear_between() -> None:
    s = SCHEDULE
    torch.testing.assert_close(s.alpha_bar_at(torch.arange(400.0)), s.alpha_bars)
    assert float(s.alpha_bar_at(-1.0)) == 1.0
    mid = s.alpha_bar_at(torch.tensor([99.5, -0.5]))
    torch.testing.assert_close(mid[0].sqrt(), (s.alpha_bars[99].sqrt() + s.alpha_bars[100].sqrt()) / 2)
    torch.testing.assert_close(mid[1].sqrt(), (1 + s.alpha_bars[0].sqrt()) / 2)
    for bad in (-1.5, 399.5):
        with pytest.raises(ValueError):
            s.alpha_bar_at(bad)


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_timesteps_are_distinct_descending_training_steps(spacing: str) -> None:
    for nfe in (1, 2, 3, 4, 8, 50, 399, 400):
        t = SCHEDULE.timesteps(nfe, spacing)
        assert len(t) == nfe and t[0] == 399 and t[-1] >= 0
        assert bool((t[1:] < t[:-1]).all()) and bool((t == t.round()).all())
    assert SCHEDULE.timesteps(400, spacing).tolist() == list(range(399, -1, -1))
    with pytest.raises(ValueError):
        SCHEDULE.timesteps(0, spacing)


def test_timestep_spacings() -> None:
    assert SCHEDULE.timesteps(4, "uniform").tolist() == [399, 299, 199, 99]
    assert SCHEDULE.timesteps(4, "quadratic").tolist() == [399, 224, 99, 24]
    # From a partly noised start (the mel prior's), the same curve over the shorter span.
    assert SCHEDULE.timesteps(2, "quadratic", start=99).tolist() == [99, 24]
    assert SCHEDULE.timesteps(100, "uniform", start=99).tolist() == list(range(99, -1, -1))
    for bad in ({"nfe": 101, "start": 99}, {"nfe": 1, "start": 400}, {"nfe": 1, "start": -1}):
        with pytest.raises(ValueError):
            SCHEDULE.timesteps(**bad)
    assert SCHEDULE.timesteps(4).tolist() == [399, 224, 99, 24]  # quadratic by default
    with pytest.raises(ValueError):
        SCHEDULE.timesteps(4, "cosine")


def _diffwave_twiddle(train_beta: torch.Tensor, fast_beta: list[float]) -> list[float]:
    """lmnt-com/diffwave inference.py's time map (= LipVoicer's diffwave_fast_inference_schedule)."""
    talpha_cum = torch.cumprod(1 - train_beta, 0)
    alpha_cum = torch.cumprod(1 - torch.tensor(fast_beta, dtype=torch.float64), 0)
    out = []
    for s in range(len(fast_beta)):
        for t in range(len(train_beta) - 1):
            if talpha_cum[t + 1] <= alpha_cum[s] <= talpha_cum[t]:
                twiddle = (talpha_cum[t] ** 0.5 - alpha_cum[s] ** 0.5) / (
                    talpha_cum[t] ** 0.5 - talpha_cum[t + 1] ** 0.5)
                out.append(t + float(twiddle))
                break
    return out


FAST_BETAS = [1e-4, 1e-3, 1e-2, 0.05, 0.3, 0.9]


def test_twiddle_maps_a_fast_beta_list_like_diffwave() -> None:
    times = SCHEDULE.twiddle(FAST_BETAS)
    assert times.flip(0).tolist() == pytest.approx(_diffwave_twiddle(SCHEDULE.betas, FAST_BETAS), abs=1e-9)
    fast_ab = torch.cumprod(1 - torch.tensor(FAST_BETAS, dtype=torch.float64), 0)
    torch.testing.assert_close(SCHEDULE.alpha_bar_at(times), fast_ab.flip(0))
    assert float(SCHEDULE.twiddle([1e-5])[0]) == pytest.approx(-0.9, abs=0.1)  # cleaner than step 0
    with pytest.raises(ValueError):
        SCHEDULE.twiddle([0.5, 0.9, 0.9])  # noisier than step T−1


def test_q_sample() -> None:
    x0, noise = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t = torch.tensor([0, 100, 399])
    xt = SCHEDULE.q_sample(x0, t, noise)
    ab = SCHEDULE.alpha_bars[t].float()[:, None, None]
    torch.testing.assert_close(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * noise)


# --- samplers -------------------------------------------------------------------------------------


def _lipvoicer_sampling(eps_fn: Callable, x: torch.Tensor, s: DiffusionSchedule,
                        generator: torch.Generator) -> torch.Tensor:
    """LipVoicer's `sampling()` loop (inference_real_video.py) without guidance, transcribed."""
    alpha, alpha_bar, sigma = s.alphas, s.alpha_bars, s.sigmas
    for t in range(s.T - 1, -1, -1):
        eps = eps_fn(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        x = (x - (1 - alpha[t]) / torch.sqrt(1 - alpha_bar[t]) * eps) / torch.sqrt(alpha[t])
        if t > 0:
            x = x + sigma[t] * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def _diffwave_fast_sampling(eps_fn: Callable, x: torch.Tensor, s: DiffusionSchedule, fast_beta: list[float],
                            generator: torch.Generator) -> torch.Tensor:
    """lmnt-com/diffwave's fast inference loop (inference.py), transcribed."""
    times = _diffwave_twiddle(s.betas, fast_beta)
    beta = torch.tensor(fast_beta, dtype=torch.float64)
    alpha, alpha_cum = 1 - beta, torch.cumprod(1 - beta, 0)
    for n in range(len(alpha) - 1, -1, -1):
        c1, c2 = 1 / alpha[n] ** 0.5, beta[n] / (1 - alpha_cum[n]) ** 0.5
        x = c1 * (x - c2 * eps_fn(x, torch.full((x.shape[0],), times[n], dtype=x.dtype)))
        if n > 0:
            sigma = ((1.0 - alpha_cum[n - 1]) / (1.0 - alpha_cum[n]) * beta[n]) ** 0.5
            x = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x


def test_ddpm_is_lipvoicers_ancestral_sampler() -> None:
    toy = gaussian()
    x = torch.randn(16, *toy.shape, generator=_gen(1), dtype=torch.float64)
    ours = sample_ddpm(toy.eps, x, SCHEDULE, generator=_gen(2))
    torch.testing.assert_close(ours, _lipvoicer_sampling(toy.eps, x, SCHEDULE, _gen(2)), rtol=1e-9, atol=1e-9)


def test_ddpm_on_twiddle_times_is_diffwave_fast_inference() -> None:
    toy = gaussian()
    x = torch.randn(16, *toy.shape, generator=_gen(1), dtype=torch.float64)
    times = SCHEDULE.twiddle(FAST_BETAS)
    ours = sample_ddpm(toy.eps, x, SCHEDULE, len(times), timesteps=times, generator=_gen(2))
    theirs = _diffwave_fast_sampling(toy.eps, x, SCHEDULE, FAST_BETAS, _gen(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


def _k_diffusion_dpmpp_2m(denoised_fn: Callable, x: torch.Tensor, sigmas: list[float]) -> torch.Tensor:
    """k-diffusion's sample_dpmpp_2m (sampling.py), transcribed: the variance-exploding form, σ → 0."""
    sigmas_t = torch.tensor(sigmas, dtype=torch.float64)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = denoised_fn(x, i)
        t, t_next = -sigmas_t[i].log(), -sigmas_t[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas_t[i + 1] / sigmas_t[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas_t[i - 1].log())) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas_t[i + 1] / sigmas_t[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def test_dpmpp_2m_is_k_diffusions_on_the_equivalent_variance_exploding_process() -> None:
    # x_VE = x_VP / √ᾱ with σ = √((1−ᾱ)/ᾱ): the data-prediction solver gives the same x0 in either form.
    toy = bimodal()
    x = torch.randn(64, *toy.shape, generator=_gen(1), dtype=torch.float64)
    times = SCHEDULE.timesteps(6)
    ab = SCHEDULE.alpha_bar_at(times)
    sigmas = [*((1 - ab) / ab).sqrt().tolist(), 0.0]

    def denoised(x_ve: torch.Tensor, i: int) -> torch.Tensor:
        t = torch.full((x_ve.shape[0],), float(times[i]), dtype=x_ve.dtype)
        x_vp = x_ve * ab[i].sqrt()
        return (x_vp - (1 - ab[i]).sqrt() * toy.eps(x_vp, t)) / ab[i].sqrt()

    theirs = _k_diffusion_dpmpp_2m(denoised, x / ab[0].sqrt(), sigmas)
    torch.testing.assert_close(sample_dpmpp_2m(toy.eps, x, SCHEDULE, 6), theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make", [gaussian, bimodal])
def test_samplers_reproduce_the_data_distribution(make: Callable[[], GaussianMixture]) -> None:
    toy, n = make(), 3000
    floor = w2(toy.sample(n, _gen(9)), toy.mean, toy.cov)  # what n exact samples score
    x = toy.start(n, _gen(0))
    assert w2(sample_ddpm(toy.eps, x, SCHEDULE, generator=_gen(1)), toy.mean, toy.cov) < 3 * floor
    for sampler in (sample_ddim, sample_dpmpp_2m):
        dist = [w2(sampler(toy.eps, x, SCHEDULE, nfe), toy.mean, toy.cov) for nfe in (1, 2, 4, 8)]
        assert dist == sorted(dist, reverse=True), (sampler.__name__, dist)
        assert dist[-1] < dist[0] / 4, (sampler.__name__, dist)
    # The second-order solver pays off from 3 steps on (at 1–2 it is DDIM).
    for nfe in (4, 8):
        assert (w2(sample_dpmpp_2m(toy.eps, x, SCHEDULE, nfe), toy.mean, toy.cov)
                < w2(sample_ddim(toy.eps, x, SCHEDULE, nfe), toy.mean, toy.cov))
    one = sample_ddim(toy.eps, x, SCHEDULE, 1)
    torch.testing.assert_close(sample_dpmpp_2m(toy.eps, x, SCHEDULE, 1), one)
    torch.testing.assert_close(sample_ddpm(toy.eps, x, SCHEDULE, 1), one)


@pytest.mark.parametrize("sampler", [sample_ddpm, sample_ddim, sample_dpmpp_2m])
def test_each_step_is_one_network_call_and_one_callback(sampler: Callable) -> None:
    toy, calls, seen = gaussian(), [], []
    x = torch.randn(3, *toy.shape, dtype=torch.float64)
    out = sampler(_counting(toy.eps, calls), x, SCHEDULE, 4, spacing="quadratic", callback=seen.append)
    assert [c[1].tolist() for c in calls] == [[t] * 3 for t in (399.0, 224.0, 99.0, 24.0)]
    assert [info["i"] for info in seen] == [0, 1, 2, 3]
    assert seen[-1]["x"] is out and out.shape == x.shape
    assert all(info["x0"].shape == x.shape for info in seen)


def test_generator_makes_sampling_reproducible() -> None:
    toy = gaussian()
    x = torch.randn(8, *toy.shape, generator=_gen(0), dtype=torch.float64)
    for run in (lambda g: sample_ddpm(toy.eps, x, SCHEDULE, 20, generator=g),
                lambda g: sample_ddim(toy.eps, x, SCHEDULE, 6, eta=0.5, generator=g)):
        assert torch.equal(run(_gen(5)), run(_gen(5)))
        assert not torch.allclose(run(_gen(5)), run(_gen(6)))
    assert torch.equal(sample_dpmpp_2m(toy.eps, x, SCHEDULE, 6), sample_dpmpp_2m(toy.eps, x, SCHEDULE, 6))


def test_explicit_timesteps_are_checked() -> None:
    toy, x = gaussian(), torch.randn(2, 2, 8, dtype=torch.float64)
    for bad in ([300.0, 300.0], [100.0, 200.0], [300.0, -1.0]):
        with pytest.raises(ValueError):
            sample_ddim(toy.eps, x, SCHEDULE, 2, timesteps=bad)
    with pytest.raises(ValueError):
        sample_ddim(toy.eps, x, SCHEDULE, 3, timesteps=[300.0, 100.0])


def test_clip_x0_keeps_the_output_in_the_mel_range() -> None:
    std = torch.full((2,), 0.5, dtype=torch.float64)
    toy = GaussianMixture(torch.full((1, 2, 8), 0.9), correlated_cov(2, 8, std)[None], [1.0])
    x = torch.randn(200, 2, 8, generator=_gen(0), dtype=torch.float64)
    assert float(sample_dpmpp_2m(toy.eps, x, SCHEDULE, 4).max()) > 1.0
    for sampler in (sample_ddpm, sample_ddim, sample_dpmpp_2m):
        out = sampler(toy.eps, x, SCHEDULE, 4, clip_x0=True, generator=_gen(1))
        assert float(out.abs().max()) <= 1.0


def test_inpainting_keeps_the_known_past_and_continues_it() -> None:
    """The streaming case: frames 0–3 known, 4–7 generated. The known part must come out exactly, and
    the generated part must continue it: for a Gaussian, p(unknown | known) has a closed form."""
    toy, n = gaussian(channels=1, frames=8), 2000
    known = torch.zeros(1, 1, 8, dtype=torch.bool)
    known[..., :4] = True
    values = (toy.mean.reshape(1, 1, 8) + 0.6).expand(n, 1, 8)  # 1.2–3 σ above the mean
    k, u = known.flatten(), ~known.flatten()
    gain = toy.cov[u][:, k] @ torch.linalg.inv(toy.cov[k][:, k])
    shift = gain @ (values[0, 0, :4] - toy.mean[k])  # E[unknown | known] − E[unknown]
    cond_std = (toy.cov[u][:, u] - gain @ toy.cov[k][:, u]).diag().sqrt()
    x = torch.randn(n, 1, 8, generator=_gen(0), dtype=torch.float64)
    for sampler, nfe, at_least in ((sample_ddpm, 100, 0.9), (sample_ddim, 8, 0.4), (sample_dpmpp_2m, 8, 0.4)):
        out = sampler(toy.eps, x, SCHEDULE, nfe, fixed_mask=known, fixed_values=values, generator=_gen(1))
        assert torch.equal(out[..., :4], values[..., :4]), sampler.__name__
        moved = out[..., 4:].mean(0).flatten() - toy.mean[u]
        # Every generated frame moves towards the known past; the few-step samplers part of the way.
        assert bool((moved > at_least * shift).all()) and bool((moved < 1.1 * shift).all()), \
            (sampler.__name__, moved / shift)
        if sampler is sample_ddpm:  # the many-step ancestral sampler gets the conditional spread too
            spread = out[..., 4:].std(0).flatten()
            assert bool(((spread / cond_std - 1).abs() < 0.12).all()), (spread, cond_std)
    with pytest.raises(ValueError):
        sample_ddim(toy.eps, x, SCHEDULE, 2, fixed_mask=known)
    with pytest.raises(ValueError):
        sample_ddim(toy.eps, x, SCHEDULE, 2, fixed_mask=torch.ones(2, 1, 8, dtype=torch.bool),
                    fixed_values=values)


# --- guidance -------------------------------------------------------------------------------------


def _cond_model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """A per-sample toy ε-model whose output depends on x, t and the condition (B, T, C)."""
    return 0.5 * x + torch.tanh(cond.mean(1))[:, :, None] + 1e-3 * t[:, None, None]


def test_cfg_runs_cond_and_null_in_one_batch_and_matches_the_two_pass_formula() -> None:
    x, t = torch.randn(3, 2, 8), torch.full((3,), 123.0)
    cond, null = torch.randn(3, 2, 2), torch.randn(2)  # a learned null (C,) broadcasts
    calls: list = []
    guided = GuidedDenoiser(_counting(_cond_model, calls), SCHEDULE, cond, null, w1=2.0)
    eps = guided(x, t)
    assert len(calls) == 1 and calls[0][0].shape[0] == 6
    want = 3.0 * _cond_model(x, t, cond) - 2.0 * _cond_model(x, t, null.expand_as(cond))
    torch.testing.assert_close(eps, want)
    assert not bool(guided.last.active.any())
    plain = GuidedDenoiser(_cond_model, SCHEDULE, cond)  # w1 = 0: one pass of batch B
    torch.testing.assert_close(plain(x, t), _cond_model(x, t, cond))
    with pytest.raises(ValueError):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, None, w1=1.0)


class ToyASR(torch.nn.Module):
    """A linear CTC "ASR": mean of each 4 frames → logits over blank + 3 symbols (ignores t)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.proj = torch.nn.Linear(channels, 4).double()
        with torch.no_grad():
            self.proj.weight.mul_(8.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pooled = x.reshape(x.shape[0], x.shape[1], -1, 4).mean(-1).transpose(1, 2)
        return self.proj(pooled).log_softmax(-1)


def _ctc(asr: ToyASR, x: torch.Tensor, texts: list[list[int]]) -> torch.Tensor:
    """Per-sample CTC loss of the ASR on x against one text per sample."""
    lp = asr(x, torch.zeros(x.shape[0]))
    targets = torch.tensor([s + [1] * (3 - len(s)) for s in texts])  # padding past each length is ignored
    return F.ctc_loss(lp.transpose(0, 1), targets, torch.full((x.shape[0],), lp.shape[1]),
                      torch.tensor([len(s) for s in texts]), reduction="none")


@pytest.mark.parametrize("asr_input", ["x_t", "x0", "x0_denoiser"])
def test_asr_guidance_makes_the_text_more_likely(asr_input: str) -> None:
    toy, asr, text, n = gaussian(channels=3, frames=8), ToyASR(3), [3, 1], 400
    x = torch.randn(n, 3, 8, generator=_gen(0), dtype=torch.float64)
    cond = torch.zeros(n, 2, 1, dtype=torch.float64)

    def model(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return toy.eps(x, t)

    losses = {}
    for w2_ in (0.0, 1.0):
        guided = GuidedDenoiser(model, SCHEDULE, cond, asr=asr, text=text, w2=w2_, asr_input=asr_input)
        with torch.no_grad():
            losses[w2_] = _ctc(asr, sample_dpmpp_2m(guided, x, SCHEDULE, 8), [text] * n)
    hits = {w: float((loss < math.log(2)).double().mean()) for w, loss in losses.items()}  # p(text) > 1/2
    assert float(losses[1.0].mean()) < 0.5 * float(losses[0.0].mean()), losses
    assert hits[1.0] > hits[0.0] + 0.2, hits


def test_asr_guidance_is_norm_scaled_and_only_below_asr_t_max() -> None:
    asr, x = ToyASR(2), torch.randn(4, 2, 8, dtype=torch.float64)
    cond = torch.randn(4, 3, 2, dtype=torch.float64)
    null = torch.zeros(2, dtype=torch.float64)
    texts = [[1], [2, 3], [3, 1], []]
    guided = GuidedDenoiser(_cond_model, SCHEDULE, cond, null, w1=1.5, asr=asr, text=texts, w2=0.7)
    plain = GuidedDenoiser(_cond_model, SCHEDULE, cond, null, w1=1.5)
    assert guided.asr_t_max == 270
    high = torch.full((4,), 271.0, dtype=torch.float64)
    torch.testing.assert_close(guided(x, high), plain(x, high))
    assert not bool(guided.last.active.any()) and bool(guided.last.ctc_loss.isnan().all())
    low = torch.full((4,), 270.0, dtype=torch.float64)
    with torch.no_grad():  # the callers' usual context
        eps, stats = guided.guide(x, low)
    base = plain(x, low)
    push = torch.linalg.vector_norm(eps - base, dim=(1, 2))
    torch.testing.assert_close(push, 0.7 * torch.linalg.vector_norm(base, dim=(1, 2)))
    torch.testing.assert_close(stats.ctc_loss, _ctc(asr, x, texts))
    assert bool(stats.active.all()) and bool((stats.grad_norm > 0).all())
    with torch.inference_mode():
        torch.testing.assert_close(guided(x, low), eps)
    # LipVoicer's 270 of 400 steps scales with T; sub-sampled schedules keep it (same time axis).
    assert GuidedDenoiser(_cond_model, DiffusionSchedule(T=200), cond).asr_t_max == 135


def test_asr_guidance_through_the_denoiser_follows_its_jacobian() -> None:
    asr, x = ToyASR(2), torch.randn(3, 2, 8, dtype=torch.float64)
    cond = torch.randn(3, 3, 2, dtype=torch.float64)
    t = torch.full((3,), 200.0, dtype=torch.float64)

    def still(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)  # x̂0 = x_t / √ᾱ: the chain rule only adds a factor, which w2 scales away

    def mixing(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.roll(1, dims=2)  # its Jacobian turns the gradient

    for model, same in ((still, True), (mixing, False)):
        pushes = {}
        for asr_input in ("x0", "x0_denoiser"):
            guided = GuidedDenoiser(model, SCHEDULE, cond, asr=asr, text=[1, 2], w2=0.1, step="x0",
                                    asr_input=asr_input)
            with torch.inference_mode():  # the streaming engine's context
                pushes[asr_input] = guided(x, t) - model(x, t, cond)
        assert torch.allclose(pushes["x0"], pushes["x0_denoiser"]) == same
    with pytest.raises(ValueError, match="asr_input"):
        GuidedDenoiser(still, SCHEDULE, cond, asr_input="x1")


def test_asr_guidance_step_in_x0_moves_the_clean_estimate_by_w2_of_its_norm() -> None:
    asr, x = ToyASR(2), torch.randn(3, 2, 8, dtype=torch.float64)
    cond = torch.randn(3, 3, 2, dtype=torch.float64)
    t = torch.full((3,), 200.0, dtype=torch.float64)
    guided = GuidedDenoiser(_cond_model, SCHEDULE, cond, asr=asr, text=[1, 2], w2=0.1, step="x0",
                            asr_input="x0")
    plain = GuidedDenoiser(_cond_model, SCHEDULE, cond)
    ab = SCHEDULE.alpha_bar_at(t).reshape(-1, 1, 1)

    def x0(eps: torch.Tensor) -> torch.Tensor:
        return (x - (1 - ab).sqrt() * eps) / ab.sqrt()

    with torch.no_grad():
        moved, still = x0(guided(x, t)), x0(plain(x, t))
    torch.testing.assert_close(torch.linalg.vector_norm(moved - still, dim=(1, 2)),
                               0.1 * torch.linalg.vector_norm(still, dim=(1, 2)))
    assert bool((_ctc(asr, moved, [[1, 2]] * 3) < _ctc(asr, still, [[1, 2]] * 3)).all())
    with pytest.raises(ValueError, match="step"):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, step="x1")


def test_asr_guidance_with_bad_text() -> None:
    asr, x, cond = ToyASR(2), torch.randn(2, 2, 8, dtype=torch.float64), torch.zeros(2, 1, 1)
    t = torch.full((2,), 10.0, dtype=torch.float64)
    with pytest.raises(ValueError):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, asr=asr, text=[0, 1], w2=1.0)  # 0 is the blank
    with pytest.raises(ValueError):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, asr=asr, text=[[1]], w2=1.0)  # 1 text, 2 samples
    with pytest.raises(ValueError):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, w2=1.0)  # no ASR
    with pytest.raises(ValueError):
        GuidedDenoiser(_cond_model, SCHEDULE, cond, asr=asr, text=[7], w2=1.0)(x, t)  # not an ASR symbol
    # Three symbols cannot fit the ASR's 2 frames: no push for that sample, the other one is guided.
    guided = GuidedDenoiser(_cond_model, SCHEDULE, cond, asr=asr, text=[[1, 2, 3], [1]], w2=1.0)
    eps = guided(x, t)
    plain = _cond_model(x, t, cond)
    torch.testing.assert_close(eps[0], plain[0])
    assert not torch.allclose(eps[1], plain[1]) and bool(torch.isfinite(eps).all())
    assert float(guided.last.grad_norm[0]) == 0.0


# --- training loss --------------------------------------------------------------------------------


def test_diffusion_loss_targets_the_noise_of_q_sample() -> None:
    x0, cond = torch.randn(64, 2, 8, dtype=torch.float64), torch.randn(64, 3, 2, dtype=torch.float64)

    def oracle(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ab = SCHEDULE.alpha_bar_at(t)[:, None, None]
        assert bool((t == t.round()).all()) and float(t.min()) >= 0 and float(t.max()) <= 399
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()  # the very noise that made x_t

    for loss in ("l1", "l2"):
        assert float(diffusion_loss(oracle, x0, cond, SCHEDULE, 0.0, loss=loss)) < 1e-10
    zero = diffusion_loss(lambda x, t, c: torch.zeros_like(x), x0, cond, SCHEDULE, 0.0, generator=_gen(0))
    assert 0.7 < float(zero) < 0.9  # E|N(0, 1)| = 0.798: L1 by default
    again = diffusion_loss(lambda x, t, c: torch.zeros_like(x), x0, cond, SCHEDULE, 0.0, generator=_gen(0))
    assert float(zero) == float(again)
    with pytest.raises(ValueError):
        diffusion_loss(oracle, x0, cond, SCHEDULE, 0.0, loss="huber")

    # An x0 loss hears the oracle's clean estimate (x0 itself) and ᾱ_t, and adds to the loss.
    heard: list = []

    def x0_loss(x0_hat: torch.Tensor, ref: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        heard.append((x0_hat, ref, alpha_bar))
        return torch.tensor(0.25, dtype=torch.float64)

    assert float(diffusion_loss(oracle, x0, cond, SCHEDULE, 0.0, x0_loss=x0_loss)) == pytest.approx(0.25)
    (x0_hat, ref, alpha_bar), = heard
    torch.testing.assert_close(x0_hat, x0)
    assert ref is x0 and alpha_bar.shape == (64,) and bool(((alpha_bar > 0) & (alpha_bar <= 1)).all())


def test_diffusion_loss_drops_the_condition_per_sample() -> None:
    x0, cond = torch.randn(400, 2, 4), torch.randn(400, 1, 3) + 5.0
    null = torch.nn.Parameter(torch.zeros(3))
    seen: list = []

    def model(x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        seen.append(c)
        return c.mean(-1, keepdim=True).expand_as(x_t)

    dropped = []
    for p in (0.0, 0.2, 1.0):
        diffusion_loss(model, x0, cond, SCHEDULE, p, null, generator=_gen(1))
        dropped.append(float((seen[-1] == 0).all(-1).double().mean()))
    assert dropped[0] == 0.0 and 0.12 < dropped[1] < 0.28 and dropped[2] == 1.0
    loss = diffusion_loss(model, x0, cond, SCHEDULE, 0.5, null, generator=_gen(2))
    loss.backward()
    assert null.grad is not None and bool(null.grad.abs().sum() > 0)  # a learned null is trained
    with pytest.raises(ValueError):
        diffusion_loss(model, x0, cond, SCHEDULE, 0.2, None)
