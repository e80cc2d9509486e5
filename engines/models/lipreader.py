"""The lip reader: visual front end → unidirectional GRU → CTC over engines.text.charset at 25 fps.

Causal apart from the front end's declared look-ahead: the GRU runs forward only, and its state can be
carried from one streaming chunk to the next (`state` in, `state` out). Decode the log-probabilities
with engines.text.ctc (greedy, beam, or the GRID-grammar beam).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from engines.models.frontend import VisualFrontend, VisualFrontendConfig
from engines.params import param
from engines.text.charset import VOCAB_SIZE

# LipReader.adopt_weights
WEIGHTLESS_FRONTEND = ("mean_window", "normalise", "normalise_window", "motion_gain", "motion_noise")


@dataclass(frozen=True)
class LipReaderConfig:
    # frozen, so one shared default instance is safe
    frontend: VisualFrontendConfig = param(VisualFrontendConfig(), "visual front end")  # noqa: RUF009
    hidden: int = param(192, "GRU width")
    gru_layers: int = param(1, "stacked GRU layers")
    dropout: float = param(0.1, "dropout before the CTC head (training only)")

    def __post_init__(self) -> None:
        if isinstance(self.frontend, dict):  # a config read back from a checkpoint's plain dict
            object.__setattr__(self, "frontend", VisualFrontendConfig(**self.frontend))


class LipReaderOutput(NamedTuple):
    log_probs: Tensor  # (B, T, V) CTC log-probabilities over CHARSET
    visual: Tensor  # (B, T, D) front-end features
    hidden: Tensor  # (B, T, hidden) GRU outputs
    state: Tensor  # (layers, B, hidden) GRU state after the last frame


CONDITION_FEATURES = ("visual", "reader")


def condition_features(out: LipReaderOutput, kind: str) -> Tensor:
    """MelGen's visual condition (B, T, ·) from a lip reader's output: the front-end features ("visual")
    or those joined with the GRU outputs ("reader"), which carry the reader's phonetic context."""
    if kind == "visual":
        return out.visual
    if kind == "reader":
        return torch.cat((out.visual, out.hidden), dim=2)
    raise ValueError(f"condition features must be one of {CONDITION_FEATURES}, got {kind!r}")


class LipReader(nn.Module):
    def __init__(self, config: LipReaderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or LipReaderConfig()
        self.frontend = VisualFrontend(config.frontend)
        self.gru = nn.GRU(config.frontend.dim, config.hidden, num_layers=config.gru_layers, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, VOCAB_SIZE)

    def read(self, visual: Tensor, state: Tensor | None = None) -> LipReaderOutput:
        """CTC log-probabilities from front-end features (B, T, D), e.g. a streaming chunk's."""
        hidden, state = self.gru(visual, state)
        log_probs = self.head(self.dropout(hidden)).log_softmax(dim=-1)
        return LipReaderOutput(log_probs, visual, hidden, state)

    def forward(self, roi: Tensor, geometry: Tensor, state: Tensor | None = None,
                lengths: Tensor | None = None) -> LipReaderOutput:
        """Mouth ROIs (B, T, 88, 88) and lip geometry (B, T, 82) → LipReaderOutput; `lengths` (B,): each
        clip's frames before padding (see VisualFrontendConfig.normalise)."""
        return self.read(self.frontend(roi, geometry, lengths), state)

    def adopt_weights(self, weights: dict[str, Tensor], config: dict) -> dict[str, Tensor]:
        """Weights of a reader whose config (`config`, the checkpoint's) differs from this one's only in front
        end fields no weight depends on (WEIGHTLESS_FRONTEND: its running mean, how it normalises each clip
        and the training jitter of that): a trained reader fine-tunes into one that reads otherwise."""
        theirs = LipReaderConfig(**config)
        mine = self.config
        kept = {name: getattr(mine.frontend, name) for name in WEIGHTLESS_FRONTEND}
        if dataclasses.replace(theirs, frontend=dataclasses.replace(theirs.frontend, **kept)) != mine:
            raise ValueError(f"only the front end's {', '.join(WEIGHTLESS_FRONTEND)} may differ: {config}")
        return weights

    def condition_dim(self, kind: str) -> int:
        """Size of `condition_features(·, kind)` per frame."""
        return self.config.frontend.dim + (self.config.hidden if kind == "reader" else 0)
