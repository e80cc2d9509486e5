"""The phone aligner: when each phone of the lip-read text is spoken, read from the lips.

The lip reader's CTC output is no clock (it spells a sentence's first word before any sound and drags the
last one over the trailing silence), so the text's phones are timed by a small net of their own over the
frozen reader's condition features ("reader": front end + GRU states, per 25-fps frame):

    features (B, T, D) → Linear D → H → [GELU → Conv1d k (same padding)] × layers → GELU
                       → Linear H → S·C → (B, S·T, C) log-posteriors, S steps per video frame

over C = engines.text.phones.N_CLASSES (silence + PHONES) at S × 25 Hz (100 Hz by default, the mel's rate).
`align` force-aligns a text's phones to them (engines.text.phones.align_text); phone_rescorer scores
candidate texts against them, which GRID-grammar decoding uses to re-rank the reader's whole sentences
(engines.synth.engine: trained on frame-exact phone targets, the aligner tells look-alike letters and
command words apart better than the reader's CTC head on unseen faces). Trained on the corpora's true phone
timelines (engines.train.recipes.aligner); the convolutions look `layers · (k − 1) / 2` frames ahead
(`receptive_field`). A stream, which has no whole utterance's text to time, takes each step's most likely
phone instead (engines.synth.streaming), on as much of that look-ahead as it waits for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from engines.models.lengths import frame_mask
from engines.params import param
from engines.text.phones import N_CLASSES, align_text


@dataclass(frozen=True)
class PhoneAlignerConfig:
    feature_dim: int = param(320, "lip-reader condition features per frame (its condition_dim('reader'))")
    hidden: int = param(256, "width H")
    kernel_size: int = param(5, "temporal convolution kernel (odd)")
    layers: int = param(2, "temporal convolutions")
    steps_per_frame: int = param(4, "phone steps per 25-fps video frame (4: 100 Hz, one per mel frame)")
    classes: int = param(N_CLASSES, "silence + the phones of engines.text.phones.PHONES")

    def __post_init__(self) -> None:
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.steps_per_frame < 1 or self.layers < 0:
            raise ValueError("steps_per_frame must be >= 1 and layers >= 0")


class PhoneAligner(nn.Module):
    def __init__(self, config: PhoneAlignerConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or PhoneAlignerConfig()
        self.inp = nn.Linear(c.feature_dim, c.hidden)
        self.convs = nn.ModuleList(nn.Conv1d(c.hidden, c.hidden, c.kernel_size, padding=c.kernel_size // 2)
                                   for _ in range(c.layers))
        self.out = nn.Linear(c.hidden, c.steps_per_frame * c.classes)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, T, feature_dim) → log-posteriors (B, steps_per_frame · T, classes). `lengths` (B,): each row's
        frames; the convolutions then see zeros past a row's end, as they do past the end of a sequence
        that long (batch padding would otherwise read as frames: training sees a row's end as inference
        does, a clip's or a stream window's)."""
        c = self.config
        h = self.inp(features).transpose(1, 2)
        keep = None if lengths is None else frame_mask(lengths, h.shape[2], h)[:, None]
        for conv in self.convs:
            h = torch.nn.functional.gelu(h)
            h = conv(h if keep is None else h * keep)
        h = torch.nn.functional.gelu(h).transpose(1, 2)
        b, t, _ = h.shape
        return self.out(h).reshape(b, t * c.steps_per_frame, c.classes).log_softmax(dim=-1)

    def receptive_field(self) -> tuple[int, int]:
        """(past, future) video frames one output frame's posteriors depend on."""
        half = self.config.layers * (self.config.kernel_size // 2)
        return half, half

    def posteriors(self, features: Tensor, graph: Callable[[Tensor], Tensor] | None = None) -> np.ndarray:
        """Log-posteriors (steps_per_frame · T, classes) of one clip's features (T, D), as numpy: what
        engines.text.phones.align_text times a text on and phone_rescorer ranks texts by. `graph`: this
        network compiled for a backend (engines.synth.graphs.aligner_graph), else the module itself."""
        if features.shape[0] == 0:
            return np.zeros((0, self.config.classes), np.float32)
        with torch.no_grad():
            return (graph or self)(features[None].float())[0].float().cpu().numpy()

    def align(self, features: Tensor, text: str) -> np.ndarray:
        """Per-step phone classes (steps_per_frame · T,) of `text` spoken over one clip's features (T, D):
        all silence when the text has no phones or the clip is too short to say them."""
        return align_text(self.posteriors(features), text)
