"""Sampler benchmark: how close each sampler gets to the data distribution at 1–8 network evaluations,
how well in-painting continues a known past, and what the samplers cost per step besides the network.

Run: `.venv/bin/python bench/samplers.py [--n 8000] [--seed 0] [--threads 1] [--repeats 200]`.

Quality uses the toy data of tests/engines/test_diffusion.py, whose optimal noise predictor is exact
(a perfect network), so every error is the sampler's own. Each sampler starts from exact samples of
x_{T−1} (so the "N(0, I) start" row shows the prior's mismatch separately: √ᾱ_{T−1} = 0.13, not 0). The
distance is the 2-Wasserstein distance between the Gaussian fit of the samples and the data's
moments, per dimension (RMS); "exact samples" is the floor a perfect sampler scores with n samples.
Overhead runs each sampler with a denoiser that returns a stored tensor, on one normalised mel window.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engines.diffusion import (  # noqa: E402
    DiffusionSchedule,
    GuidedDenoiser,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
)
from tests.engines.test_diffusion import FAST_BETAS, GaussianMixture, bimodal, gaussian, w2  # noqa: E402

SCHEDULE = DiffusionSchedule()
NFES = (1, 2, 4, 8)
Sampler = Callable[..., torch.Tensor]


def quality(n: int, seed: int) -> None:
    toys = {"gaussian": gaussian(channels=4, frames=16), "bimodal": bimodal(channels=4, frames=16)}
    starts = {name: toy.start(n, torch.Generator().manual_seed(seed)) for name, toy in toys.items()}
    rows: list[tuple[str, str, Callable[[GaussianMixture, torch.Tensor], torch.Tensor]]] = [
        ("exact samples", "–", lambda toy, x: toy.sample(n, _gen(seed + 1))),
        ("DDPM (LipVoicer reference)", "400",
         lambda toy, x: sample_ddpm(toy.eps, x, SCHEDULE, generator=_gen(seed))),
        ("DDPM from N(0, I), as deployed", "400",
         lambda toy, x: sample_ddpm(toy.eps, torch.randn(x.shape, generator=_gen(seed + 2), dtype=x.dtype),
                                    SCHEDULE, generator=_gen(seed))),
        ("DDPM, DiffWave twiddle β " + str(FAST_BETAS), str(len(FAST_BETAS)), _twiddle(seed)),
    ]
    for name, sampler in (("DDIM", sample_ddim), ("DPM-Solver++(2M)", sample_dpmpp_2m),
                          ("DDPM respaced", sample_ddpm)):
        for spacing in ("quadratic", "uniform"):
            for nfe in NFES:
                run = functools.partial(_run, sampler, nfe, spacing, seed)
                rows.append((f"{name}, {spacing}", str(nfe), run))
    print(f"## Distance to the data distribution (W2 per dimension, lower is better; n = {n}, "
          f"{toys['gaussian'].means.shape[1]} dimensions)\n")
    print("| sampler | NFE | correlated Gaussian | bimodal mixture |")
    print("|---|---|---|---|")
    for label, nfe, run in rows:
        dists = [w2(run(toy, starts[name]), toy.mean, toy.cov) for name, toy in toys.items()]
        print(f"| {label} | {nfe} | " + " | ".join(f"{d:.4f}" for d in dists) + " |")


def _run(sampler: Sampler, nfe: int, spacing: str, seed: int, toy: GaussianMixture,
         x: torch.Tensor) -> torch.Tensor:
    return sampler(toy.eps, x, SCHEDULE, nfe, spacing=spacing, generator=_gen(seed))


def _twiddle(seed: int) -> Callable[[GaussianMixture, torch.Tensor], torch.Tensor]:
    times = SCHEDULE.twiddle(FAST_BETAS)

    def run(toy: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
        start = toy.start(x.shape[0], _gen(seed), t=float(times[0]))  # its first step is not T−1
        return sample_ddpm(toy.eps, start, SCHEDULE, len(times), timesteps=times, generator=_gen(seed))
    return run


def inpainting(n: int, seed: int) -> None:
    """The streaming window: the first half of the frames known (the past), the second half generated."""
    toy, frames = gaussian(channels=1, frames=16), 16
    known = torch.zeros(1, 1, frames, dtype=torch.bool)
    known[..., : frames // 2] = True
    values = (toy.mean.reshape(1, 1, frames) + 0.6).expand(n, 1, frames)
    k, u = known.flatten(), ~known.flatten()
    gain = toy.cov[u][:, k] @ torch.linalg.inv(toy.cov[k][:, k])
    shift = gain @ (values[0, 0, k] - toy.mean[k])
    cond_std = (toy.cov[u][:, u] - gain @ toy.cov[k][:, u]).diag().sqrt()
    x = torch.randn(n, 1, frames, generator=_gen(seed), dtype=torch.float64)
    print("\n## In-painting a known past (1 channel, frames 0–7 known at +0.6 above the mean, frames 8–15 "
          "generated; frame correlation 0.9^|Δ|)\n")
    print("Shift of the generated mean / exact conditional shift, and generated spread / conditional "
          "spread, at the first and the last generated frame (1.00 = exact).\n")
    print("| sampler | NFE | shift, frame 8 | shift, frame 15 | spread, frame 8 | spread, frame 15 |")
    print("|---|---|---|---|---|---|")
    for label, sampler, nfe in (("DDPM", sample_ddpm, 400), ("DDPM respaced, uniform", sample_ddpm, 8),
                                ("DDIM", sample_ddim, 4), ("DDIM", sample_ddim, 8),
                                ("DPM-Solver++(2M)", sample_dpmpp_2m, 4),
                                ("DPM-Solver++(2M)", sample_dpmpp_2m, 8)):
        out = sampler(toy.eps, x, SCHEDULE, nfe, fixed_mask=known, fixed_values=values,
                      generator=_gen(seed + 1))
        assert torch.equal(out[..., k], values[..., k])
        moved = (out[..., u].mean(0).flatten() - toy.mean[u]) / shift
        spread = out[..., u].std(0).flatten() / cond_std
        print(f"| {label} | {nfe} | {moved[0]:.2f} | {moved[-1]:.2f} | {spread[0]:.2f} | {spread[-1]:.2f} |")


def overhead(repeats: int) -> None:
    print(f"\n## Sampler overhead per NFE, network excluded (median of {repeats} runs, float32, "
          f"{torch.get_num_threads()} thread(s))\n")
    print("| sampler | NFE | mel (1, 80, 100) | mel (8, 80, 100) | with in-painting, (1, 80, 100) |")
    print("|---|---|---|---|---|")
    for label, sampler, nfe in (("DDPM", sample_ddpm, 400), ("DDIM", sample_ddim, 4),
                                ("DPM-Solver++(2M)", sample_dpmpp_2m, 4),
                                ("DPM-Solver++(2M)", sample_dpmpp_2m, 8)):
        cells = []
        for batch, inpaint in ((1, False), (8, False), (1, True)):
            x = torch.randn(batch, 80, 100)
            eps = torch.randn_like(x)
            kwargs = {}
            if inpaint:
                mask = torch.zeros(1, 1, 100, dtype=torch.bool)
                mask[..., :40] = True
                kwargs = {"fixed_mask": mask, "fixed_values": torch.zeros_like(x)}
            runs = max(1, repeats // max(1, nfe // 8))
            cells.append(_per_nfe(lambda s=sampler, n=nfe, x=x, e=eps, kw=kwargs: s(
                lambda xt, t: e, x, SCHEDULE, n, generator=_gen(0), **kw), runs, nfe))
        print(f"| {label} | {nfe} | " + " | ".join(cells) + " |")
    cond, null = torch.randn(1, 25, 640), torch.zeros(640)
    x = torch.randn(1, 80, 100)
    cfg = GuidedDenoiser(lambda xt, t, c: xt, SCHEDULE, cond, null, w1=2.0)
    t = torch.full((1,), 100.0)
    cell = _per_nfe(lambda: cfg(x, t), repeats, 1)
    print(f"| GuidedDenoiser CFG batching (identity network, w1 = 2), (1, 80, 100) | 1 | {cell} | | |")


def _per_nfe(fn: Callable[[], object], runs: int, nfe: int) -> str:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return f"{statistics.median(times) / nfe * 1e6:.0f} µs"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8000, help="samples per distribution estimate (8000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--repeats", type=int, default=200, help="timing runs per overhead cell (200)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"`{' '.join([Path(sys.executable).name, *sys.argv])}` (torch {torch.__version__})\n")
    quality(args.n, args.seed)
    inpainting(args.n, args.seed)
    overhead(args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
