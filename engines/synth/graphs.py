"""The networks the synthesizer runs, as GraphSpecs for engines.backends (torch, ONNX Runtime, TensorRT).

    frame     roi (B, T, 88, 88), lips (B, T, 82), both as the front end normalises them (its
              `normalise_inputs`, in PyTorch: per clip or over trailing windows) → features (B, T, D)
    temporal  frames (B, T, D) → visual (B, T, D)              the front end's causal temporal stack
    reader    visual (B, T, D), state (layers, B, H) → log_probs (B, T, V), hidden (B, T, H), next_state
              the lip reader's GRU and CTC head (a stream carries the state from window to window)
    denoiser  x (B, 80, F), t (B,) float, cond (B, T, C) → eps (B, 80, F), F = 4T          MelGen
    vocoder   mel_norm (B, 80, F) → wav (B, 160 F)
    asr       mel (B, 80, F), t (B,) → log_probs (B, ⌈F/4⌉, V)                           forward only
    aligner   features (B, T, D) → log_posteriors (B, F, C)                             phone aligner
    prior     labels (B, F) int64, identity (B, E) → mel (B, 80, F)                     mel prior

Batch and time are dynamic (axes "batch", "frames", "mel_frames"); `GraphSizes` gives the example
sizes (the traced shapes and TensorRT's opt shapes) and the largest ones TensorRT's profiles accept.

ASR guidance needs the gradient of the CTC loss with respect to the mel, and ONNX Runtime and TensorRT
run forward only. So guidance keeps the ASR in PyTorch, on the same device, whatever backend runs the
other graphs: the denoiser's ε comes from its graph, the guidance term from the PyTorch ASR
(engines.diffusion.guidance). `asr_graph` is the forward alone, for reading a mel without guidance.

Two graphs differ from calling the model directly, each for its exporter:
- frame: the ONNX exporter cannot export an adaptive pool once the (B·T) flatten has hidden the spatial
  size, so the graph runs a copy of the front end whose adaptive pools are the plain average pools they
  equal at the fixed ROI size (`fixed_size_pools`).
- vocoder: ONNX has no complex tensors and no inverse STFT, so the graph takes the network's
  log-magnitude and phase and inverts them with `OverlapAddISTFT` (one transposed convolution and a
  division by the window envelope), which equals torch.istft(center=True).
The parity tests hold every graph to its model (tests/engines/test_backends.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.audio.mel import MELS_PER_FRAME
from engines.backends.base import GraphSpec
from engines.models.aligner import PhoneAligner
from engines.models.asr import ASR
from engines.models.frontend import VisualFrontend
from engines.models.lipreader import LipReader
from engines.models.mel_prior import MelPrior
from engines.models.melgen import MelGen
from engines.models.vocoder import Vocoder
from engines.params import param

BT = {0: "batch", 1: "frames"}


@dataclass(frozen=True)
class GraphSizes:
    batch: int = param(2, "example batch (2: classifier-free guidance's conditional and unconditional "
                          "halves)")
    frames: int = param(15, "example window in video frames (4 mel frames each)")
    max_batch: int = param(8, "largest batch the TensorRT profiles accept")
    max_frames: int = param(250, "largest window in video frames the TensorRT profiles accept (10 s)")

    def __post_init__(self) -> None:
        if not (1 <= self.batch <= self.max_batch and 1 <= self.frames <= self.max_frames):
            raise ValueError(f"need 1 <= batch <= max_batch and 1 <= frames <= max_frames, got {self}")

    def bounds(self) -> dict[str, tuple[int, int]]:
        return {"batch": (1, self.max_batch), "frames": (1, self.max_frames),
                "mel_frames": (MELS_PER_FRAME, MELS_PER_FRAME * self.max_frames)}


DEFAULT_SIZES = GraphSizes()


def _randn(*shape: int) -> Tensor:
    # example values only steer tracing and warm-up, but seeded keeps specs repeatable
    return torch.randn(shape, generator=torch.Generator().manual_seed(math.prod(shape)))


# ---------------------------------------------------------------- frame


def fixed_size_pools(module: nn.Module, run: Callable[[nn.Module], object]) -> nn.Module:
    """A copy of `module` whose adaptive average pools are replaced by the plain average pools they
    equal at the input sizes `run(copy)` feeds them; only for inputs whose spatial size never changes."""
    module = copy.deepcopy(module)
    pools = {name: m for name, m in module.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)}
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [pool.register_forward_pre_hook(
        lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, pool in pools.items()]
    try:
        with torch.no_grad():
            run(module)
    finally:
        for hook in hooks:
            hook.remove()
    for name, pool in pools.items():
        out = pool.output_size
        out = (out, out) if isinstance(out, int) else tuple(out)
        if name not in sizes or None in out or any(s % o for s, o in zip(sizes[name], out, strict=True)):
            raise ValueError(f"{name}: adaptive pool to {out} of input {sizes.get(name)} is no plain "
                             "average pool (the input must be a multiple of the output)")
        parent, _, child = name.rpartition(".")
        kernel = tuple(s // o for s, o in zip(sizes[name], out, strict=True))
        setattr(module.get_submodule(parent), child, nn.AvgPool2d(kernel))
    return module


class FrameGraph(nn.Module):
    def __init__(self, frontend: VisualFrontend, example: tuple[Tensor, Tensor]) -> None:
        super().__init__()
        self.frontend = fixed_size_pools(frontend, lambda m: m.frame(*example))

    def forward(self, roi: Tensor, lips: Tensor) -> Tensor:
        return self.frontend.frame(roi, lips)


def frame_graph(frontend: VisualFrontend, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    c = frontend.config
    example = (_randn(sizes.batch, sizes.frames, c.roi_size, c.roi_size),
               _randn(sizes.batch, sizes.frames, c.geometry_dim))
    return GraphSpec("frame", FrameGraph(frontend, example), example, ("roi", "lips"), ("features",),
                     {"roi": BT, "lips": BT, "features": BT}, sizes.bounds())


# ---------------------------------------------------------------- reader


class TemporalGraph(nn.Module):
    def __init__(self, frontend: VisualFrontend) -> None:
        super().__init__()
        self.frontend = frontend

    def forward(self, frames: Tensor) -> Tensor:
        return self.frontend.temporal(frames)


def temporal_graph(frontend: VisualFrontend, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    example = (_randn(sizes.batch, sizes.frames, frontend.config.dim),)
    return GraphSpec("temporal", TemporalGraph(frontend), example, ("frames",), ("visual",),
                     {"frames": BT, "visual": BT}, sizes.bounds())


class ReaderGraph(nn.Module):
    def __init__(self, lipreader: LipReader) -> None:
        super().__init__()
        self.lipreader = lipreader

    def forward(self, visual: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.lipreader.read(visual, state)
        return out.log_probs, out.hidden, out.state


def reader_graph(lipreader: LipReader, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    c = lipreader.config
    example = (_randn(sizes.batch, sizes.frames, c.frontend.dim), _randn(c.gru_layers, sizes.batch, c.hidden))
    return GraphSpec("reader", ReaderGraph(lipreader), example, ("visual", "state"),
                     ("log_probs", "hidden", "next_state"),
                     {"visual": BT, "state": {1: "batch"}, "log_probs": BT, "hidden": BT,
                      "next_state": {1: "batch"}}, sizes.bounds())


# ---------------------------------------------------------------- denoiser


class DenoiserGraph(nn.Module):
    def __init__(self, melgen: MelGen) -> None:
        super().__init__()
        self.melgen = melgen

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.melgen(x, t, cond)


def denoiser_graph(melgen: MelGen, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    c, b, t = melgen.config, sizes.batch, sizes.frames
    steps = torch.linspace(1.0, 50.0, b)
    example = (_randn(b, c.n_mels, c.mels_per_frame * t), steps, _randn(b, t, c.cond_dim))
    mel = {0: "batch", 2: "mel_frames"}
    return GraphSpec("denoiser", DenoiserGraph(melgen), example, ("x", "t", "cond"), ("eps",),
                     {"x": mel, "t": {0: "batch"}, "cond": BT, "eps": mel}, sizes.bounds())


# ---------------------------------------------------------------- vocoder


class OverlapAddISTFT(nn.Module):
    """torch.istft(center=True, length=hop·F) of a one-sided spectrum given as real and imaginary parts
    (B, n_fft/2 + 1, F), in operations ONNX has: the inverse real DFT and the synthesis window make one
    transposed-convolution kernel (stride hop) that overlap-adds the frames; the sum is divided by the
    overlap-added squared window and the first n_fft/2 samples (the centring pad) are dropped."""

    def __init__(self, n_fft: int, hop: int, window: Tensor) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
        weight = torch.full((len(k), 1), 2.0, dtype=torch.float64)  # bins 1 .. n/2 − 1 stand for two
        weight[0] = 1.0
        if n_fft % 2 == 0:
            weight[-1] = 1.0
        w = window.detach().cpu().double()
        kernel = torch.cat((weight * torch.cos(angle), -weight * torch.sin(angle))) * w / n_fft
        self.register_buffer("kernel", kernel[:, None, :].float(), persistent=False)  # (2K, 1, n_fft)
        self.register_buffer("window_sq", (w * w)[None, None, :].float(), persistent=False)

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}"

    def forward(self, real: Tensor, imag: Tensor) -> Tensor:
        frames = real.shape[-1]
        wav = F.conv_transpose1d(torch.cat((real, imag), dim=1), self.kernel, stride=self.hop)
        envelope = F.conv_transpose1d(torch.ones_like(real[:1, :1]), self.window_sq, stride=self.hop)
        start = self.n_fft // 2
        return (wav / envelope)[:, 0, start:start + self.hop * frames]


class VocoderGraph(nn.Module):
    def __init__(self, vocoder: Vocoder) -> None:
        super().__init__()
        c = vocoder.config
        self.vocoder = vocoder
        self.istft = OverlapAddISTFT(c.n_fft, c.hop, vocoder.window)

    def forward(self, mel_norm: Tensor) -> Tensor:
        return self.istft(*self.vocoder.spectrum_parts(mel_norm))  # ONNX holds no complex tensors


def vocoder_graph(vocoder: Vocoder, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    example = (_randn(sizes.batch, vocoder.config.n_mels, MELS_PER_FRAME * sizes.frames),)
    return GraphSpec("vocoder", VocoderGraph(vocoder), example, ("mel_norm",), ("wav",),
                     {"mel_norm": {0: "batch", 2: "mel_frames"}, "wav": {0: "batch", 1: "samples"}},
                     sizes.bounds())


# ---------------------------------------------------------------- asr


class ASRGraph(nn.Module):
    def __init__(self, asr: ASR) -> None:
        super().__init__()
        self.asr = asr

    def forward(self, mel: Tensor, t: Tensor) -> Tensor:
        return self.asr(mel, t)


def asr_graph(asr: ASR, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    b = sizes.batch
    example = (_randn(b, asr.config.n_mels, MELS_PER_FRAME * sizes.frames), torch.linspace(0.0, 50.0, b))
    return GraphSpec("asr", ASRGraph(asr), example, ("mel", "t"), ("log_probs",),
                     {"mel": {0: "batch", 2: "mel_frames"}, "t": {0: "batch"},
                      "log_probs": {0: "batch", 1: "asr_frames"}}, sizes.bounds())


# ---------------------------------------------------------------- phone aligner and mel prior


def aligner_graph(aligner: PhoneAligner, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    example = (_randn(sizes.batch, sizes.frames, aligner.config.feature_dim),)
    return GraphSpec("aligner", aligner, example, ("features",), ("log_posteriors",),
                     {"features": BT, "log_posteriors": {0: "batch", 1: "mel_frames"}}, sizes.bounds())


def prior_graph(prior: MelPrior, sizes: GraphSizes = DEFAULT_SIZES) -> GraphSpec:
    c, b = prior.config, sizes.batch
    steps = MELS_PER_FRAME * sizes.frames
    labels = torch.arange(b * steps).reshape(b, steps) % c.classes  # every class, in runs of one step
    example = (labels, _randn(b, c.identity_dim))
    return GraphSpec("prior", prior, example, ("labels", "identity"), ("mel",),
                     {"labels": {0: "batch", 1: "mel_frames"}, "identity": {0: "batch"},
                      "mel": {0: "batch", 2: "mel_frames"}}, sizes.bounds())


# ---------------------------------------------------------------- per model

#: the graphs of each exportable model kind (a lip reader gives three: per frame, over time, the GRU)
MODEL_GRAPHS: dict[str, tuple[Callable[[nn.Module, GraphSizes], GraphSpec], ...]] = {
    "lipreader": (lambda m, s: frame_graph(m.frontend, s), lambda m, s: temporal_graph(m.frontend, s),
                  reader_graph),
    "melgen": (denoiser_graph,),
    "vocoder": (vocoder_graph,),
    "asr": (asr_graph,),
    "aligner": (aligner_graph,),
    "prior": (prior_graph,),
}


def model_graphs(kind: str, model: nn.Module, sizes: GraphSizes = DEFAULT_SIZES) -> list[GraphSpec]:
    """The GraphSpecs of a model of kind `kind` (a checkpoint's kind: lipreader, melgen, vocoder, asr,
    aligner, prior)."""
    if kind not in MODEL_GRAPHS:
        raise ValueError(f"no graphs for a {kind!r} model; exportable: {', '.join(MODEL_GRAPHS)}")
    return [build(model, sizes) for build in MODEL_GRAPHS[kind]]
