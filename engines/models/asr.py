"""The guidance ASR: normalised mel (B, 80, F) and diffusion step t (B,) → CTC log-probabilities
(B, F/4, V) over engines.text.charset at 25 Hz, one output per video frame.

Noise-aware as LipVoicer's fine-tuned ASR: the diffusion-step embedding (128-d sinusoid → MLP, the
same as MelGen's) is added after the ×4 subsampling stem and in every block, so one network reads
clean mel (t = 0, also for the sampler's x0 estimates) and noisy x_t. Layout:
    stem: Conv1d(80 → C, k3, stride 2) → GELU → Conv1d(C → C, k3, stride 2) → GELU   (F → ⌈F/4⌉)
    blocks: x + pointwise(GELU(dilated conv k(GroupNorm(x) + Linear(t_emb))))    (non-causal)
    head: GroupNorm → Linear → log-softmax
Differentiable end to end, for ∇_x of the CTC loss in ASR guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from engines.models.melgen import StepEmbedding, as_steps
from engines.params import param
from engines.text.charset import VOCAB_SIZE


@dataclass(frozen=True)
class ASRConfig:
    n_mels: int = param(80, "mel bins")
    channels: int = param(192, "model width C")
    num_layers: int = param(6, "residual conv blocks")
    kernel_size: int = param(5, "block conv kernel (odd)")
    dilation_cycle: int = param(3, "block n has dilation 2 ** (n % cycle)")
    step_embed_in: int = param(128, "sinusoidal diffusion-step embedding size")
    step_embed_dim: int = param(256, "step-embedding MLP width")
    dropout: float = param(0.1, "dropout in the blocks (training only)")

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


class ASRBlock(nn.Module):
    def __init__(self, config: ASRConfig, dilation: int) -> None:
        super().__init__()
        c = config.channels
        self.norm = nn.GroupNorm(1, c)
        self.step_proj = nn.Linear(config.step_embed_dim, c)
        self.conv = nn.Conv1d(c, c, config.kernel_size, dilation=dilation,
                              padding=dilation * (config.kernel_size - 1) // 2)
        self.pointwise = nn.Conv1d(c, c, 1)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, step: Tensor) -> Tensor:
        h = self.conv(self.norm(x) + self.step_proj(step)[:, :, None])
        return x + self.dropout(self.pointwise(F.gelu(h)))


class ASR(nn.Module):
    def __init__(self, config: ASRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ASRConfig()
        c = config.channels
        self.stem = nn.Sequential(nn.Conv1d(config.n_mels, c, 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv1d(c, c, 3, stride=2, padding=1), nn.GELU())
        self.step_embed = StepEmbedding(config.step_embed_in, config.step_embed_dim, config.step_embed_dim)
        self.step_proj = nn.Linear(config.step_embed_dim, c)
        self.blocks = nn.ModuleList(ASRBlock(config, 2 ** (n % config.dilation_cycle))
                                    for n in range(config.num_layers))
        self.norm = nn.GroupNorm(1, c)
        self.head = nn.Linear(c, VOCAB_SIZE)

    def forward(self, mel: Tensor, t: Tensor | float = 0) -> Tensor:
        """CTC log-probabilities (B, ⌈F/4⌉, V) of a normalised mel (B, 80, F) at diffusion steps t."""
        if mel.ndim != 3 or mel.shape[1] != self.config.n_mels:
            raise ValueError(f"expected mel (B, {self.config.n_mels}, F), got {tuple(mel.shape)}")
        step = self.step_embed(as_steps(t, mel.shape[0], mel.device))
        x = self.stem(mel) + self.step_proj(step)[:, :, None]
        for block in self.blocks:
            x = block(x, step)
        return self.head(self.norm(x).transpose(1, 2)).log_softmax(dim=-1)
