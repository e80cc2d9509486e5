"""The visual front end: mouth ROI + lip geometry per video frame → features (B, T, D) at 25 fps.

Per frame (no temporal context, so cacheable frame by frame):
    ROI (88×88, normalised) → average-pooled by `roi_pool` → strided 2-D conv stages (each halves the
    size; GroupNorm, GELU) → average-pooled to 3×3 → Linear; lip geometry (82) → LayerNorm → MLP;
    both joined → Linear → LayerNorm.
Per clip, optionally (`normalise` "clip", offline only): the ROIs and the lip geometry each taken as motion
about the clip's own median frame, in units of the clip's own motion (the 90th percentile of its frames'
distance from that median). What stays is how the mouth moves, not how the face looks or how wide it
opens, where rendered faces differ most from real ones (a reader of the ROIs as they are reads the real
grid-dev faces at chance; notes/history.md, session 17).
`normalise` "span" takes that median and scale over the span where the lips move only (first to last
frame that changes by more than a fifth of the clip's 90th-percentile change, ± 2 frames), so how long
the face is still before and after speech does not move them (notes/history.md, session 18).
Both need the whole clip, so such a reader cannot stream. `normalise` "trailing" is their causal form, which
streams: each frame as motion about the mean of the `normalise_window` frames up to it, in units of the
largest distance of those frames from that mean (so no frame's motion exceeds 1: a mouth that starts to
move after a still stretch is not blown up by the still frames' tiny scale). A stream keeps the last
window − 1 inputs to normalise each new frame (`normalise_inputs`' `context`).
Over time: optionally each frame's features minus their mean over the last `mean_window` frames (a
face's look is mostly static and the reader mostly reads the ROI's look, so this is the visual
counterpart of cepstral mean normalisation), then residual 1-D conv blocks that are causal (left
padding only), run on the per-frame features shifted by `lookahead_frames`: output t = causal stack at
t + L, so it sees frames ≤ t + L and never later; the clip end is padded with L zero frames.
`receptive_field()` = (past, future) frames.

Streaming: `frame_features` per new frame (cache them; with normalise trailing, `normalise_inputs` over
the kept inputs and the new ones, then `frame`), then `temporal` over a window that holds at
least `past` frames before the first output wanted and `future` frames after the last one; outputs
with their whole receptive field inside the window equal the whole-clip outputs exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.models.lengths import frame_mask
from engines.params import param

ROI_MEAN, ROI_STD = 0.421, 0.165  # LipVoicer's mouth ROI normalisation: (x / 255 - mean) / std
NORMALISATIONS = ("none", "clip", "span", "trailing")  # VisualFrontendConfig.normalise
# trailing_motion normalises a clip this many frames at a time, about as many as a stream's hop brings
TRAILING_ROWS = 8
# normalise span: a moving frame changes by > SPAN_CHANGE × the clip's 90th-percentile change, ± SPAN_PAD
SPAN_CHANGE, SPAN_PAD = 0.2, 2


def normalize_roi(roi_u8: Tensor) -> Tensor:
    """uint8 mouth ROIs → the float input of the front end."""
    return (roi_u8.float() / 255.0 - ROI_MEAN) / ROI_STD


@dataclass(frozen=True)
class VisualFrontendConfig:
    roi_size: int = param(88, "mouth ROI side in pixels")
    roi_pool: int = param(2, "average-pool the ROI by this factor before the CNN (CPU cost falls ~4x per 2)")
    geometry_dim: int = param(82, "lip geometry features per frame (engines.face.lips)")
    channels: tuple[int, ...] = param((16, 32, 48), "per-frame CNN stage widths (each halves the ROI)")
    geometry_hidden: int = param(64, "lip geometry MLP width")
    dim: int = param(128, "output feature size D")
    kernel_size: int = param(3, "temporal conv kernel")
    dilations: tuple[int, ...] = param((1, 2, 4, 1), "temporal conv dilations, one residual block each")
    lookahead_frames: int = param(2, "future video frames each output may see")
    dropout: float = param(0.1, "dropout in the temporal blocks (training only)")
    mean_window: int = param(0, "subtract from each frame's features their mean over this many frames up "
                                "to it (fewer at a clip's start); 0: off")
    normalise: str = param("none", "inputs as they are (none), or each clip's ROIs and lip geometry as "
                                   "motion about its median frame in units of its own motion (clip), both "
                                   "taken over the span where the lips move (span); whole clips only, no "
                                   "streaming; or each frame about the last normalise_window frames "
                                   "(trailing), which streams", choices=NORMALISATIONS)
    normalise_window: int = param(50, "normalise trailing: frames up to each frame its motion is taken over")
    motion_gain: float = param(0.0, "normalise other than none, training only: scale each clip's motion "
                                    "by a factor in [e^-g, e^g]")
    motion_noise: float = param(0.0, "normalise other than none, training only: add Gaussian noise of this "
                                     "std to the motion")

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "dilations", tuple(self.dilations))
        if self.roi_pool < 1 or self.roi_size % self.roi_pool:
            raise ValueError(f"roi_pool must be a divisor of roi_size {self.roi_size}, got {self.roi_pool}")
        if self.lookahead_frames < 0:
            raise ValueError(f"lookahead_frames must be >= 0, got {self.lookahead_frames}")
        if self.mean_window < 0 or self.mean_window == 1:  # 1 would leave nothing: x minus itself
            raise ValueError(f"mean_window must be 0 (off) or >= 2, got {self.mean_window}")
        if self.normalise_window < 1:
            raise ValueError(f"normalise_window must be >= 1, got {self.normalise_window}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.lookahead_frames > self.span:
            raise ValueError(f"lookahead_frames {self.lookahead_frames} exceeds the temporal span "
                             f"{self.span}")

    @property
    def span(self) -> int:
        """Frames the causal temporal stack looks back over."""
        return sum((self.kernel_size - 1) * d for d in self.dilations)

    @property
    def streams(self) -> bool:
        """Whether each frame's input is normalised from that frame and earlier ones only."""
        return self.normalise in ("none", "trailing")

    @property
    def input_history(self) -> int:
        """Earlier inputs the normalisation of a new frame looks back over (a stream keeps them)."""
        return self.normalise_window - 1 if self.normalise == "trailing" else 0


class FrameEncoder(nn.Module):
    """One video frame's ROI and lip geometry → a D vector (no temporal context)."""

    def __init__(self, config: VisualFrontendConfig) -> None:
        super().__init__()
        stages: list[nn.Module] = [nn.AvgPool2d(config.roi_pool)] if config.roi_pool > 1 else []
        c_in = 1
        for i, c in enumerate(config.channels):
            k = 5 if i == 0 else 3
            stages += [nn.Conv2d(c_in, c, k, stride=2, padding=k // 2), nn.GroupNorm(min(8, c), c), nn.GELU()]
            c_in = c
        self.cnn = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                                 nn.Linear(9 * c_in, config.dim))
        self.geometry = nn.Sequential(nn.LayerNorm(config.geometry_dim),
                                      nn.Linear(config.geometry_dim, config.geometry_hidden), nn.GELU(),
                                      nn.Linear(config.geometry_hidden, config.geometry_hidden))
        self.fuse = nn.Sequential(nn.GELU(), nn.Linear(config.dim + config.geometry_hidden, config.dim),
                                  nn.LayerNorm(config.dim))

    def forward(self, roi: Tensor, geometry: Tensor) -> Tensor:
        b, t = roi.shape[:2]
        image = self.cnn(roi.reshape(b * t, 1, *roi.shape[2:])).reshape(b, t, -1)
        return self.fuse(torch.cat((image, self.geometry(geometry)), dim=2))


def clip_motion(x: Tensor, lengths: Tensor | None = None, eps: float = 1e-3,
                span: bool = False) -> Tensor:
    """Each clip of x (B, T, ...) minus its median frame over its first `lengths` frames (all when None),
    divided by the 90th percentile of its frames' RMS distance from that median (+ eps: a still clip stays
    near zero rather than noise blown up); padding frames come out zero. With `span`, median and percentile
    over the span where the clip moves (`moving_span`) only. Invariant to any per-clip gain and offset of
    x."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        n = x.shape[1] if lengths is None else int(lengths[b])
        if n == 0:
            continue
        frames = x[b, :n].reshape(n, -1)
        lo, hi = moving_span(frames) if span else (0, n)
        motion = frames - frames[lo:hi].median(dim=0).values
        rms = motion[lo:hi].square().mean(dim=1).sqrt()
        out[b, :n] = (motion / (torch.quantile(rms, 0.9) + eps)).reshape(x[b, :n].shape)
    return out


def trailing_motion(x: Tensor, window: int, lengths: Tensor | None = None, context: int = 0,
                    eps: float = 1e-3) -> Tensor:
    """Each frame of x (B, T, ...) from frame `context` on, minus the mean of the `window` frames up to it
    (fewer at a clip's start), divided by the largest RMS distance of those frames from that mean (+ eps:
    still frames stay zero rather than noise blown up); (B, T − context, ...), padding frames zero. The
    first `context` frames only fill the windows: a stream passes its last window − 1 frames with the new
    ones and gets what the whole clip would give them. Invariant to any per-clip gain and offset of x."""
    out = torch.zeros_like(x[:, context:])
    for b in range(x.shape[0]):
        n = x.shape[1] if lengths is None else int(lengths[b])
        for first in range(context, n, TRAILING_ROWS):
            last = min(first + TRAILING_ROWS, n)
            out[b, first - context:last - context] = _trailing_rows(x[b], window, first, last, eps)
    return out


def _trailing_rows(x: Tensor, window: int, first: int, last: int, eps: float) -> Tensor:
    """trailing_motion of frames first..last − 1 of one clip x (T, ...)."""
    lo = max(first - window + 1, 0)  # the earliest frame their windows hold
    frames = x[lo:last].reshape(last - lo, -1)
    # The distances come from a Gram matrix, whose float32 cancellation would swamp still frames when the
    # frames sit far from the origin: centred on the mean of these few rows' windows, which differ little,
    # every window's mean is close to the origin and float32 holds.
    frames = frames - frames.mean(0)
    rows = torch.arange(first - lo, last - lo, device=x.device)[:, None]
    k = torch.arange(last - lo, device=x.device)[None]
    inside = (k <= rows) & (k > rows - window)
    mean = (inside / inside.sum(1, keepdim=True)).to(frames.dtype) @ frames
    squared = frames.square().sum(1)[None] - 2.0 * mean @ frames.T + mean.square().sum(1)[:, None]
    scale = (squared.clamp(min=0.0) / frames.shape[1]).sqrt().where(inside, 0.0).amax(1)
    motion = (frames[first - lo:] - mean) / (scale + eps)[:, None]
    return motion.reshape(x[first:last].shape)


def moving_span(frames: Tensor) -> tuple[int, int]:
    """[lo, hi) of frames (T, D) from the first to the last frame whose change from the one before (the
    first frame: its change to the next) exceeds SPAN_CHANGE × the 90th percentile of those changes,
    widened by SPAN_PAD; all frames when none does (a still clip)."""
    n = frames.shape[0]
    if n < 2:
        return 0, n
    change = (frames[1:] - frames[:-1]).square().mean(dim=1).sqrt()
    change = torch.cat((change[:1], change))
    moving = (change > SPAN_CHANGE * torch.quantile(change, 0.9)).nonzero().flatten()
    if len(moving) == 0:
        return 0, n
    return max(int(moving[0]) - SPAN_PAD, 0), min(int(moving[-1]) + SPAN_PAD + 1, n)


def jitter_motion(xs: tuple[Tensor, ...], lengths: Tensor | None, gain: float,
                  noise: float) -> tuple[Tensor, ...]:
    """Each x (B, T, ...) of one batch of clips scaled by one random factor per clip in [e^-gain, e^gain]
    and given Gaussian noise of std `noise`, padding frames left zero. A training regulariser on normalised
    motion: the clip's own normalisation would undo the same jitter applied to the raw inputs."""
    first = xs[0]
    scale = torch.empty(first.shape[0], device=first.device).uniform_(-gain, gain).exp()
    valid = torch.ones(first.shape[:2], device=first.device) if lengths is None else \
        frame_mask(lengths, first.shape[1], first)
    out = []
    for x in xs:
        shape = (*x.shape[:2], *[1] * (x.ndim - 2))
        x = x * scale.reshape(-1, *[1] * (x.ndim - 1)) + noise * torch.randn_like(x)
        out.append(x * valid.reshape(shape))
    return tuple(out)


def running_mean(x: Tensor, window: int) -> Tensor:
    """Mean of x (B, T, D) over the `window` steps up to each step, or over all of them before the
    window fills. Pooling rather than a cumulative sum, which exports to ONNX and TensorRT as one op."""
    total = F.avg_pool1d(F.pad(x.transpose(1, 2), (window - 1, 0)), window, stride=1) * window
    count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype).clamp(max=window)
    return (total / count).transpose(1, 2)


class CausalBlock(nn.Module):
    """x + dropout(GELU(causal dilated conv(x))), then LayerNorm over channels; (B, T, D) in and out."""

    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.pad(x.transpose(1, 2), (self.pad, 0))).transpose(1, 2)
        return self.norm(x + self.dropout(F.gelu(y)))


class VisualFrontend(nn.Module):
    def __init__(self, config: VisualFrontendConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VisualFrontendConfig()
        self.frame = FrameEncoder(config)
        self.blocks = nn.Sequential(*(CausalBlock(config.dim, config.kernel_size, d, config.dropout)
                                      for d in config.dilations))

    def receptive_field(self) -> tuple[int, int]:
        """(past, future) video frames an output frame depends on."""
        c = self.config
        return c.span - c.lookahead_frames + max(c.mean_window - 1, 0), c.lookahead_frames

    def frame_features(self, roi: Tensor, geometry: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-frame features (B, T, D) of ROIs (B, T, H, W) and lip geometry (B, T, G); `lengths` (B,): each
        clip's frames before padding, for `normalise` other than none (None: no padding)."""
        return self.frame(*self.normalise_inputs(roi, geometry, lengths))

    def normalise_inputs(self, roi: Tensor, geometry: Tensor, lengths: Tensor | None = None,
                         context: int = 0) -> tuple[Tensor, Tensor]:
        """ROIs and lip geometry as the per-frame encoder takes them (`normalise`; in training jittered by
        motion_gain and motion_noise), from frame `context` on: the frames before it only fill trailing
        windows (a stream's kept inputs)."""
        c = self.config
        if roi.ndim != 4 or roi.shape[2:] != (c.roi_size, c.roi_size):
            raise ValueError(f"expected mouth ROIs (B, T, {c.roi_size}, {c.roi_size}), "
                             f"got {tuple(roi.shape)}")
        if geometry.shape != (*roi.shape[:2], c.geometry_dim):
            raise ValueError(f"expected lip geometry {(*roi.shape[:2], c.geometry_dim)}, "
                             f"got {tuple(geometry.shape)}")
        if context and c.normalise != "trailing":
            raise ValueError(f"only normalise trailing takes context frames, not {c.normalise!r}")
        if c.normalise == "trailing":
            roi, geometry = (trailing_motion(x, c.normalise_window, lengths, context)
                             for x in (roi, geometry))
            lengths = None if lengths is None else (lengths - context).clamp(min=0)
        elif c.normalise != "none":
            span = c.normalise == "span"
            roi, geometry = clip_motion(roi, lengths, span=span), clip_motion(geometry, lengths, span=span)
        if c.normalise != "none" and self.training and (c.motion_gain or c.motion_noise):
            roi, geometry = jitter_motion((roi, geometry), lengths, c.motion_gain, c.motion_noise)
        return roi, geometry

    def temporal(self, frames: Tensor) -> Tensor:
        """Temporal context over per-frame features (B, T, D) → (B, T, D), look-ahead L."""
        lookahead = self.config.lookahead_frames
        if self.config.mean_window:
            frames = frames - running_mean(frames, self.config.mean_window)
        x = F.pad(frames, (0, 0, 0, lookahead))  # the L frames after the clip end are zeros
        return self.blocks(x)[:, lookahead:]

    def forward(self, roi: Tensor, geometry: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.temporal(self.frame_features(roi, geometry, lengths))
