"""MelGen: the conditional diffusion denoiser over normalised log-mel windows (LipVoicer's layout).

A DiffWave/WaveNet residual stack over mel frames (in = out = 80 channels), as LipVoicer's
models/wavenet.py (from diffwave-sashimi):

    x_t (B, 80, F) → 1×1 conv → ReLU → L residual layers → Σ skips · √(1/L) → 1×1 → ReLU → 1×1 (zero init)
    residual layer: h = x + Linear(t_emb); h = dilated conv k (R → 2R); h += 1×1 conv(upsampled cond);
                    out = tanh(h[:R]) · sigmoid(h[R:]); x' = (x + 1×1(out)) · √0.5; skip = 1×1(out)
                    (the last layer's x' is never used, so it has no residual 1×1)
    t_emb: 128-d sinusoid → Linear → swish → Linear → swish (128 → 512 → 512 in LipVoicer)
    cond (B, T, C) per 25-fps video frame; in every layer it is upsampled ×4 in time by two
    ConvTranspose2d(1, 1, (3, 2s), stride (1, s)) over the (channel, time) plane, leaky-ReLU 0.4 each,
    so 4 mel frames belong to each video frame (F ≤ 4T; longer conditions are cut to F).

Our conditioning is the visual feature D of the front end joined with the identity embedding E,
`join_condition(visual, identity)`; a linear `cond_proj` maps it to the stack's `cond_channels` when
those differ (LipVoicer's released stack takes 640 = 128 face + 512 lip, in that order). For
classifier-free guidance the model holds a null condition vector (learned by default), trained by
condition dropout and expanded by `null_condition(B, T)`.

The condition path (projection, upsampling, 1×1 cond conv of every layer) does not depend on x_t or t:
`prepare(cond)` computes it once, and `forward` accepts the prepared condition, so a few-step sampler
pays for it once per window rather than once per step.

Default size is small for CPU real time (8 layers × 64 channels); `MelGenConfig.lipvoicer()` is the
released size (12 × 512, cond 640). engines.importers.lipvoicer loads the released weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.params import param


@dataclass(frozen=True)
class MelGenConfig:
    n_mels: int = param(80, "mel bins (input and output channels)")
    num_res_layers: int = param(8, "residual layers L")
    res_channels: int = param(64, "residual channels R")
    skip_channels: int = param(64, "skip channels S")
    kernel_size: int = param(3, "dilated conv kernel (odd)")
    dilation_cycle: int = param(1, "layer n has dilation 2 ** (n % cycle); 1 = all dilation 1 as LipVoicer")
    step_embed_in: int = param(128, "sinusoidal diffusion-step embedding size")
    step_embed_mid: int = param(256, "hidden size of the step-embedding MLP")
    step_embed_out: int = param(256, "output size of the step-embedding MLP")
    cond_dim: int = param(256, "condition size per video frame given to forward: visual D + identity E")
    cond_channels: int = param(256, "condition channels in the stack (projected from cond_dim if different)")
    cond_upsample: tuple[int, ...] = param((2, 2), "time strides of the cond upsamplers (product 4)")
    learned_null: bool = param(True, "learn the null condition for CFG (else a fixed zero vector)")
    prediction: str = param("eps", "what the network predicts: eps (LipVoicer) or x0 (ProDiff-style: its "
                                   "estimates at high noise are the conditional mean, so 1–4 step sampling "
                                   "works early in training); forward returns ε̂ either way",
                            choices=("eps", "x0"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "cond_upsample", tuple(self.cond_upsample))
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.step_embed_in % 2:
            raise ValueError(f"step_embed_in must be even, got {self.step_embed_in}")
        if self.prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', got {self.prediction!r}")
        if math.prod(self.cond_upsample) != 4 or any(s % 2 for s in self.cond_upsample):
            raise ValueError(f"cond_upsample must be even strides with product 4, got {self.cond_upsample}")

    @property
    def mels_per_frame(self) -> int:
        return math.prod(self.cond_upsample)

    @classmethod
    def lipvoicer(cls, **overrides: object) -> MelGenConfig:
        """LipVoicer's released MelGen size (configs/config.yaml `melgen`): 12 × 512, cond 640."""
        values = dict(num_res_layers=12, res_channels=512, skip_channels=512, dilation_cycle=1,
                      step_embed_mid=512, step_embed_out=512, cond_dim=640, cond_channels=640)
        return dataclasses.replace(cls(), **{**values, **overrides})


def timestep_embedding(t: Tensor, dim: int = 128) -> Tensor:
    """DiffWave's sinusoidal embedding of diffusion steps t (B,) → (B, dim):
    [sin(t · 10^(−4k/(h−1))), cos(·)] for k < h = dim/2. Fractional t is allowed."""
    half = dim // 2
    steps = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(steps * -(math.log(10000.0) / (half - 1)))
    args = t.reshape(-1, 1).float() * freqs
    return torch.cat((torch.sin(args), torch.cos(args)), dim=1)


class StepEmbedding(nn.Module):
    """Sinusoid → Linear → swish → Linear → swish (LipVoicer's fc_t1/fc_t2)."""

    def __init__(self, dim_in: int, dim_mid: int, dim_out: int) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.fc1 = nn.Linear(dim_in, dim_mid)
        self.fc2 = nn.Linear(dim_mid, dim_out)

    def forward(self, t: Tensor) -> Tensor:
        return F.silu(self.fc2(F.silu(self.fc1(timestep_embedding(t, self.dim_in)))))


def as_steps(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Diffusion steps as a (B,) tensor: a scalar or a 0-d tensor is broadcast over the batch."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"expected diffusion steps of shape ({batch},), got {tuple(t.shape)}")
    return t


def join_condition(visual: Tensor, identity: Tensor) -> Tensor:
    """MelGen's condition: visual features (B, T, D) with the identity embedding (B, E) on every frame."""
    return torch.cat((visual, identity[:, None, :].expand(-1, visual.shape[1], -1)), dim=2)


class PreparedCondition:
    """The per-layer conditioning terms (B, 2R, 4T) of one condition, ready for any number of steps."""

    def __init__(self, terms: list[Tensor]) -> None:
        self.terms = terms

    @property
    def frames(self) -> int:
        return self.terms[0].shape[2]

    def cut(self, frames: int) -> list[Tensor]:
        if frames > self.frames:
            raise ValueError(f"the condition covers {self.frames} mel frames, the input has {frames}")
        return [term[:, :, :frames] for term in self.terms]


class CondUpsample(nn.Module):
    """ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s/2)) over the (channel, time) plane,
    with the same parameters (and state-dict names) and the same output, computed as one 3×3
    convolution with s output phases that are then interleaved in time: CPU kernels run that several
    times faster than a one-channel transposed convolution."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = s = stride
        self.weight = nn.Parameter(torch.empty(1, 1, 3, 2 * s))
        nn.init.kaiming_normal_(self.weight)  # as LipVoicer (kaiming under weight norm)
        self.bias = nn.Parameter(torch.empty(1).uniform_(-1 / math.sqrt(6 * s), 1 / math.sqrt(6 * s)))
        # Output time s·j + r takes input j − m through kernel tap s·m + r + s/2 (m ∈ {1, 0, −1} ↔ kernel
        # column 1 − m of the correlation); taps outside the kernel are masked out.
        taps = torch.tensor([[s * (1 - b) + r + s // 2 for b in range(3)] for r in range(s)])
        self.register_buffer("_taps", taps.clamp(0, 2 * s - 1), persistent=False)
        self.register_buffer("_mask", ((taps >= 0) & (taps < 2 * s)).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, C, T) → (B, 1, C, sT)."""
        w = self.weight[0, 0].flip(0)  # a transposed conv is a correlation with the flipped kernel
        kernel = (w[:, self._taps] * self._mask).permute(1, 0, 2)[:, None]  # (s, 1, 3, 3)
        # The 3×3 one-input-channel convolution as nine shifted copies: oneDNN's backward for this shape
        # is ~40x slower than the arithmetic (73 ms vs 2 ms for a 16×256×25 condition on one core).
        b, _, c, t = x.shape
        padded = F.pad(x[:, 0], (1, 1, 1, 1))
        shifted = torch.stack([padded[:, i:i + c, j:j + t] for i in range(3) for j in range(3)], dim=1)
        y = torch.einsum("bkct,sk->bsct", shifted, kernel.reshape(self.stride, 9))  # (B, s, C, T)
        s = self.stride
        return y.permute(0, 2, 3, 1).reshape(b, 1, c, t * s) + self.bias


class ResidualLayer(nn.Module):
    """One gated layer; the last one has no residual 1×1 (LipVoicer's is computed and then unused), so
    every parameter gets a gradient (DistributedDataParallel insists)."""

    def __init__(self, config: MelGenConfig, dilation: int, last: bool) -> None:
        super().__init__()
        r = config.res_channels
        self.step_proj = nn.Linear(config.step_embed_out, r)
        self.conv = nn.Conv1d(r, 2 * r, config.kernel_size, dilation=dilation,
                              padding=dilation * (config.kernel_size - 1) // 2)
        self.cond_upsample = nn.ModuleList(CondUpsample(s) for s in config.cond_upsample)
        self.cond_conv = nn.Conv1d(config.cond_channels, 2 * r, 1)
        self.res_conv = None if last else nn.Conv1d(r, r, 1)
        self.skip_conv = nn.Conv1d(r, config.skip_channels, 1)
        for conv in (self.conv, self.cond_conv, self.res_conv, self.skip_conv):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight)  # as LipVoicer (kaiming under weight norm)

    def condition(self, cond: Tensor) -> Tensor:
        """(B, C, T) condition → (B, 2R, 4T) term added before the gate."""
        c = cond[:, None]
        for up in self.cond_upsample:
            c = F.leaky_relu(up(c), 0.4)
        return self.cond_conv(c[:, 0])

    def forward(self, x: Tensor, step: Tensor, cond_term: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conv(x + self.step_proj(step)[:, :, None]) + cond_term
        r = x.shape[1]
        out = torch.tanh(h[:, :r]) * torch.sigmoid(h[:, r:])
        residual = x if self.res_conv is None else (x + self.res_conv(out)) * math.sqrt(0.5)
        return residual, self.skip_conv(out)


class MelGen(nn.Module):
    def __init__(self, config: MelGenConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MelGenConfig()
        self.step_embed = StepEmbedding(config.step_embed_in, config.step_embed_mid, config.step_embed_out)
        self.cond_proj = (nn.Identity() if config.cond_dim == config.cond_channels
                          else nn.Linear(config.cond_dim, config.cond_channels))
        null = torch.zeros(config.cond_dim)
        if config.learned_null:
            self.null_cond = nn.Parameter(null)
        else:
            self.register_buffer("null_cond", null)
        self.input_conv = nn.Conv1d(config.n_mels, config.res_channels, 1)
        nn.init.kaiming_normal_(self.input_conv.weight)
        self.layers = nn.ModuleList(
            ResidualLayer(config, 2 ** (n % config.dilation_cycle), last=n == config.num_res_layers - 1)
            for n in range(config.num_res_layers))
        self.output_conv = nn.Conv1d(config.skip_channels, config.skip_channels, 1)
        nn.init.kaiming_normal_(self.output_conv.weight)
        self.final_conv = nn.Conv1d(config.skip_channels, config.n_mels, 1)
        nn.init.zeros_(self.final_conv.weight)  # ε̂ = 0 at init, as LipVoicer's ZeroConv1d
        nn.init.zeros_(self.final_conv.bias)
        if config.prediction == "x0":
            from engines.diffusion.schedule import DiffusionSchedule

            # √ᾱ at t = −1 … T−1, for turning the x̂0 the network predicts into the ε̂ samplers take
            self.register_buffer("sqrt_alpha_bar", DiffusionSchedule()._sqrt_ab.float(), persistent=False)

    def adopt_weights(self, weights: dict[str, Tensor], config: dict) -> dict[str, Tensor]:
        """Weights for this model from those of a shallower MelGen (`config`, the checkpoint's, differs only
        in num_res_layers) that compute the same function, so a deeper stack can fine-tune a trained one:
        the added layers start with zero skip outputs, the old last layer gets a zero residual 1×1 (nothing
        downstream of it speaks yet), and output_conv takes up the skip sum's change of scale √(L_old/L)."""
        old, new = config["num_res_layers"], self.config.num_res_layers
        mine = dataclasses.asdict(self.config)
        theirs = {**config, "num_res_layers": new, "cond_upsample": tuple(config["cond_upsample"])}
        if theirs != mine or not 0 < old < new:
            raise ValueError(f"can only grow a MelGen deeper: {config} → {mine}")
        grown = {k: v.clone() for k, v in self.state_dict().items()}
        grown.update({k: v.clone() for k, v in weights.items()})
        grown["output_conv.weight"] = weights["output_conv.weight"] * math.sqrt(new / old)
        for name in ("weight", "bias"):
            grown[f"layers.{old - 1}.res_conv.{name}"].zero_()
            for n in range(old, new):
                grown[f"layers.{n}.skip_conv.{name}"].zero_()
        return grown

    def _eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε̂ = (x_t − √ᾱ_t x̂0) / √(1 − ᾱ_t), √ᾱ linear between integer times (DiffusionSchedule)."""
        table = self.sqrt_alpha_bar
        u = (t.float() + 1.0).clamp(0.0, float(table.shape[0] - 1))
        lo = u.floor().clamp(max=table.shape[0] - 2)
        frac = u - lo
        lo = lo.long()
        sqrt_ab = (table[lo] * (1.0 - frac) + table[lo + 1] * frac).reshape(-1, 1, 1)
        return (x_t - sqrt_ab * x0) / (1.0 - sqrt_ab.square()).clamp_min(1e-8).sqrt()

    def null_condition(self, batch: int, frames: int) -> Tensor:
        """The null condition (B, T, C) for classifier-free guidance."""
        return self.null_cond.expand(batch, frames, -1)

    def prepare(self, cond: Tensor) -> PreparedCondition:
        """Precompute the x_t- and t-independent condition path of `cond` (B, T, cond_dim)."""
        if cond.ndim != 3 or cond.shape[2] != self.config.cond_dim:
            raise ValueError(f"expected a condition (B, T, {self.config.cond_dim}), got {tuple(cond.shape)}")
        c = self.cond_proj(cond).transpose(1, 2)
        return PreparedCondition([layer.condition(c) for layer in self.layers])

    def forward(self, x_t: Tensor, t: Tensor | float, cond: Tensor | PreparedCondition) -> Tensor:
        """ε̂ (B, 80, F) of x_t (B, 80, F) at diffusion steps t (B,) under cond (B, T, C), 4T ≥ F."""
        if x_t.ndim != 3 or x_t.shape[1] != self.config.n_mels:
            raise ValueError(f"expected x_t (B, {self.config.n_mels}, F), got {tuple(x_t.shape)}")
        prepared = cond if isinstance(cond, PreparedCondition) else self.prepare(cond)
        terms = prepared.cut(x_t.shape[2])
        step = self.step_embed(as_steps(t, x_t.shape[0], x_t.device))
        h = F.relu(self.input_conv(x_t))
        skip = torch.zeros((), device=x_t.device)
        for layer, term in zip(self.layers, terms, strict=True):
            h, s = layer(h, step, term)
            skip = skip + s
        skip = skip * math.sqrt(1.0 / len(self.layers))
        out = self.final_conv(F.relu(self.output_conv(skip)))
        if self.config.prediction == "x0":
            return self._eps_from_x0(x_t, as_steps(t, x_t.shape[0], x_t.device), out)
        return out
