"""The PyTorch backend: the spec's module, eager, in eval mode, without autograd; fp16 on CUDA only.

The graph runs a copy of the module (moved to the device, cast to half for fp16), so compiling never
changes the caller's model. Inputs are cast to the copy's dtype and outputs back to float32, as the other
backends do. It runs under `torch.no_grad()` rather than `inference_mode()`: its outputs are then
ordinary tensors, as ONNX Runtime's and TensorRT's are, which a caller may use in autograd later (ASR
guidance differentiates through values computed from the denoiser's output).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import Tensor

from engines.backends.base import (
    BackendError,
    BackendOptions,
    GraphSpec,
    check_precision,
    graph_inputs,
    graph_outputs,
)

log = logging.getLogger(__name__)

NAME = "torch"


class TorchGraph:
    """A spec's module running eagerly (engines.backends.base.Graph)."""

    backend = NAME

    def __init__(self, spec: GraphSpec, device: torch.device, precision: str) -> None:
        self.name, self.device, self.precision = spec.name, device, precision
        self._spec = spec
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._module = copy.deepcopy(spec.module).to(device=device, dtype=self._dtype).eval()

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        xs = [x.to(self._dtype) if x.is_floating_point() else x
              for x in graph_inputs(self._spec, inputs, self.device)]
        with torch.no_grad():
            out = self._module(*xs)
        outs = (out,) if isinstance(out, Tensor) else tuple(out)
        return graph_outputs([o.float() if o.is_floating_point() else o for o in outs])

    def __repr__(self) -> str:
        return f"TorchGraph({self.name}, {self.device}, {self.precision})"


def check(device: torch.device) -> str:
    """What PyTorch can run here; BackendError for a CUDA device it cannot see."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"torch {torch.__version__} sees no CUDA device")
        if (device.index or 0) >= torch.cuda.device_count():
            raise BackendError(f"no {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        return f"torch {torch.__version__} ({torch.cuda.get_device_name(device)})"
    if device.type != "cpu":
        raise BackendError(f"device {device} is neither cpu nor cuda")
    return f"torch {torch.__version__} (cpu)"


def load(spec: GraphSpec, device: torch.device, precision: str, cache_dir: Path,
         options: BackendOptions) -> TorchGraph:
    """The spec's module as a graph on `device` (cache_dir and options are not used by this backend)."""
    check(device)
    if check_precision(precision) == "fp16" and device.type != "cuda":
        log.warning("graph %s: fp16 in torch needs a CUDA device, %s runs fp32", spec.name, device)
        precision = "fp32"
    return TorchGraph(spec, device, precision)
