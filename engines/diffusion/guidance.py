"""The guided noise predictor the samplers call: classifier-free guidance (w1) and ASR guidance (w2).

`GuidedDenoiser(model, schedule, cond, null_cond, w1, asr, text, w2)(x_t, t) -> ε̂`, after LipVoicer's
`sampling()` (inference_real_video.py):

- CFG: ε̂ = (1 + w1)·ε(x_t, c) − w1·ε(x_t, ∅), the conditional and unconditional halves in ONE forward
  pass of batch 2B (one network evaluation per step, not two).
- ASR guidance, for steps t ≤ asr_t_max only: g = ∇_x CTC(asr(x_t, t), text), and
  ε̂ ← ε̂ + √(1−ᾱ_t)·w2·(‖ε̂/√(1−ᾱ_t)‖ / ‖g‖)·g. The added term always has norm w2·‖ε̂‖ (Guided-TTS's
  norm-based scaling), so w2 is a fraction of the step, whatever the CTC loss's scale. Norms are per
  sample (LipVoicer runs batch 1, where this is the same); a sample whose gradient vanishes (e.g. a
  CTC target longer than the ASR's frames, which `zero_infinity` turns into a zero loss) gets no push.
  `asr_input="x0"` instead feeds the ASR the current clean estimate x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ with
  time 0 (ε̂ held constant: no backward through the denoiser): an ASR trained on clean mel then works,
  and the gradient w.r.t. x̂0 is the gradient w.r.t. x_t up to the factor √ᾱ the norm scaling removes.
  `asr_input="x0_denoiser"` feeds the same x̂0 but differentiates through the denoiser: g = ∇_x_t of
  CTC(asr(x̂0(x_t), 0)) (as DPS does), one backward pass of the denoiser per guided step. The denoiser's
  Jacobian keeps the push to changes it would make itself: guided toward the reference text, speech went
  from 17.7 % sphinx-GRID WER (x_t) to 15.3 % (notes/history.md, session 9). The model must then be
  differentiable (PyTorch).
- `step="x0"` scales the push in the clean estimate instead: x̂0 ← x̂0 − w2·(‖x̂0‖/‖g‖)·g, i.e.
  ε̂ ← ε̂ + (√ᾱ/√(1−ᾱ))·w2·(‖x̂0‖/‖g‖)·g. A few-step sampler jumps to x̂0 at every step, and LipVoicer's
  ε-norm step (sized for 400 small steps) then moves it by several times its own norm at high noise:
  on our 4-step sampler it destroyed the speech at every w2 tried (0.1–1.5); here w2 is the fraction of
  ‖x̂0‖ each guided step may move.

The denoiser network always runs without autograd; only the ASR term enables it locally, so callers may
sit under `torch.no_grad()` or `torch.inference_mode()`. Put the ASR in eval mode (no dropout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from engines.diffusion.schedule import DiffusionSchedule

#: forward(x_t (B, 80, F), t (B,), cond (B, T, C)) -> ε (B, 80, F)
EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: forward(x (B, 80, F), t (B,)) -> CTC log-probabilities (B, F // 4, V), index 0 = blank
ASRModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: what the guidance ASR hears: x_t; the clean estimate x̂0 (denoiser held constant); x̂0 differentiated
#: through the denoiser
ASR_INPUTS = ("x_t", "x0", "x0_denoiser")

#: LipVoicer's `asr_start`: ASR guidance on the last 271 of 400 steps.
LIPVOICER_ASR_T_MAX = 270
LIPVOICER_T = 400


@dataclasses.dataclass
class GuidanceStats:
    """What one call did: `active` (B,) bool; `ctc_loss` and `grad_norm` (B,), NaN where inactive."""

    t: torch.Tensor
    active: torch.Tensor
    ctc_loss: torch.Tensor
    grad_norm: torch.Tensor


class GuidedDenoiser:
    """A sampler's `denoise_fn(x_t, t) -> ε̂` for one condition; `last` holds the latest GuidanceStats.

    cond (B, T, C); null_cond broadcastable to it (a learned (C,) or (1, 1, C) null works); text one id
    sequence per sample, or one for all (CHARSET ids, no blanks). asr_t_max is on the training-time
    axis, so it holds for any sub-sequence of steps; by default it is LipVoicer's 270 of 400, scaled
    to the schedule's T.
    """

    def __init__(self, model: EpsModel, schedule: DiffusionSchedule, cond: torch.Tensor,
                 null_cond: torch.Tensor | None = None, w1: float = 0.0, *, asr: ASRModel | None = None,
                 text: Sequence[int] | Sequence[Sequence[int]] | None = None, w2: float = 0.0,
                 asr_t_max: float | None = None, asr_input: str = "x_t", step: str = "eps") -> None:
        if w1 != 0.0 and null_cond is None:
            raise ValueError("classifier-free guidance (w1 != 0) needs null_cond")
        if w2 != 0.0 and (asr is None or text is None):
            raise ValueError("ASR guidance (w2 != 0) needs asr and text")
        if asr_input not in ASR_INPUTS:
            raise ValueError(f"asr_input must be one of {ASR_INPUTS}, got {asr_input!r}")
        if step not in ("eps", "x0"):
            raise ValueError(f"step must be 'eps' or 'x0', got {step!r}")
        self.step = step
        self.model, self.schedule, self.w1, self.asr, self.w2 = model, schedule, w1, asr, w2
        self.asr_input = asr_input
        self.asr_t_max = (LIPVOICER_ASR_T_MAX * schedule.T / LIPVOICER_T) if asr_t_max is None else asr_t_max
        self.cond = cond
        if w1 != 0.0:
            self.cond = torch.cat([cond, null_cond.to(cond).expand_as(cond)])
        self.targets = self.target_lengths = None
        if w2 != 0.0:
            self.targets, self.target_lengths = _ctc_targets(text, cond.shape[0])
        self.last: GuidanceStats | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps, self.last = self.guide(x, t)
        return eps

    def guide(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, GuidanceStats]:
        """Guided ε̂ for x_t (B, …) at times t (B,), and what the guidance did."""
        b = x.shape[0]
        nan = torch.full((b,), float("nan"))
        active = (t.detach().cpu() <= self.asr_t_max) if self.w2 != 0.0 else torch.zeros(b, dtype=torch.bool)
        stats = GuidanceStats(t=t.detach().cpu(), active=active, ctc_loss=nan, grad_norm=nan.clone())
        if not bool(active.any()):
            with torch.no_grad():
                return self._cfg_eps(x, t), stats
        per_sample = (b, *[1] * (x.dim() - 1))
        ab = self.schedule.alpha_bar_at(t.detach().cpu()).to(x.device, x.dtype).reshape(per_sample)
        eps, loss, grad = self._ctc_grad(x, t, ab)
        dims = tuple(range(1, x.dim()))
        grad_norm = torch.linalg.vector_norm(grad, dim=dims)
        usable = active.to(x.device) & (grad_norm > 0) & torch.isfinite(grad_norm)
        if self.step == "x0":
            x0_norm = torch.linalg.vector_norm((x - (1.0 - ab).sqrt() * eps) / ab.sqrt(), dim=dims)
            size, factor = x0_norm, (ab / (1.0 - ab)).sqrt()
        else:
            size, factor = torch.linalg.vector_norm(eps / (1.0 - ab).sqrt(), dim=dims), (1.0 - ab).sqrt()
        scale = torch.where(usable, self.w2 * size / grad_norm.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
        eps = eps + factor * scale.reshape(per_sample) * grad
        stats.ctc_loss = torch.where(active, loss.detach().cpu(), nan)
        stats.grad_norm = torch.where(active, grad_norm.detach().cpu(), nan)
        return eps, stats

    def _cfg_eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.w1 == 0.0:
            return self.model(x, t, self.cond)
        cond_eps, null_eps = self.model(torch.cat([x, x]), torch.cat([t, t]), self.cond).chunk(2)
        return (1.0 + self.w1) * cond_eps - self.w1 * null_eps

    def _ctc_grad(self, x: torch.Tensor, t: torch.Tensor,
                  ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The unguided ε̂, the per-sample CTC loss (B,) and its gradient w.r.t. the ASR input (w.r.t. x_t for
        x0_denoiser, whose one denoiser pass serves both)."""
        through = self.asr_input == "x0_denoiser"
        if not through:
            with torch.no_grad():
                eps = self._cfg_eps(x, t)
            if self.asr_input == "x0":
                x, t = (x - (1.0 - ab).sqrt() * eps) / ab.sqrt(), torch.zeros_like(t)
        # An inference-mode caller's tensors cannot enter autograd: clone them outside that mode.
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            t = t.detach().clone()
            heard = x_in
            if through:
                ab = ab.detach().clone()
                eps = self._cfg_eps(x_in, t)
                heard = (x_in - (1.0 - ab).sqrt() * eps) / ab.sqrt()
                t = torch.zeros_like(t)
            log_probs = self.asr(heard, t)
            frames = log_probs.shape[1]
            if int(self.targets.max()) >= log_probs.shape[2]:
                raise ValueError(f"text id {int(self.targets.max())} outside the ASR's "
                                 f"{log_probs.shape[2]} symbols")
            loss = F.ctc_loss(log_probs.transpose(0, 1), self.targets.to(x.device),
                              torch.full((x.shape[0],), frames, dtype=torch.long),
                              self.target_lengths, blank=0, reduction="none", zero_infinity=True)
            (grad,) = torch.autograd.grad(loss.sum(), x_in)
        return eps.detach(), loss.detach(), grad.detach()


def _ctc_targets(text: Sequence[int] | Sequence[Sequence[int]],
                 batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded (B, S) targets and (B,) lengths; a single id list is used for every sample."""
    single = len(text) == 0 or not hasattr(text[0], "__len__")
    seqs = [[int(i) for i in text]] * batch if single else [[int(i) for i in s] for s in text]
    if len(seqs) != batch:
        raise ValueError(f"{len(seqs)} texts for a batch of {batch}")
    if any(i <= 0 for s in seqs for i in s):
        raise ValueError("text ids must be > 0 (0 is the CTC blank)")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    padded = torch.zeros(batch, max(1, int(lengths.max())), dtype=torch.long)
    for row, s in zip(padded, seqs, strict=True):
        row[: len(s)] = torch.tensor(s, dtype=torch.long)
    return padded, lengths
