"""What every backend shares: the graph to compile (`GraphSpec`), the compiled graph (`Graph`), the
options, the TensorRT optimisation profiles derived from a spec, and the cache folder.

A `GraphSpec` is a PyTorch module with example inputs, names for its inputs and outputs, the axes that
may change size (batch, time) and the bounds those axes stay within. The example inputs fix every other
size; they are the shapes the ONNX exporter traces and the "opt" shapes of a TensorRT profile, whose
min/max come from the declared bounds (or an explicit `profiles` override).

A `Graph` is what a backend returns: called with torch tensors (moved to its device if they are not
there), it returns torch tensors on that device (one tensor, or a tuple when the spec has several
outputs), in float32 whatever precision it computes in. `.backend` says which backend actually runs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from engines.params import param

BACKENDS = ("tensorrt", "onnxruntime", "torch")  # the fallback chain, best first
PRECISIONS = ("fp32", "fp16")
CACHE_ENV = "VOXSIGHT_CACHE"

Shape = tuple[int, ...]


class BackendError(RuntimeError):
    """A backend that cannot run a graph here (package missing, no GPU, build failure): says why."""


@dataclass(frozen=True)
class BackendOptions:
    providers: tuple[str, ...] = param((), "ONNX Runtime execution providers in order of preference "
                                           "(empty: TensorRT, CUDA, CPU, those installed)")
    threads: int = param(0, "ONNX Runtime intra-op threads (0: its default)")
    opset: int = param(17, "ONNX opset of the exported graphs")
    warmup: int = param(3, "TensorRT runs on the example inputs before the graph is returned")
    cuda_graphs: bool = param(True, "TensorRT: capture a CUDA graph when every input shape is static")
    build_progress_s: float = param(15.0, "seconds between the log lines while a TensorRT engine builds")

    def __post_init__(self) -> None:
        object.__setattr__(self, "providers", tuple(self.providers))
        if self.threads < 0 or self.warmup < 0 or self.build_progress_s <= 0:
            raise ValueError(f"threads and warmup must be >= 0 and build_progress_s > 0, got {self}")


@dataclass(frozen=True)
class Profile:
    """One input's TensorRT optimisation profile: the smallest, typical and largest shapes."""

    min: Shape
    opt: Shape
    max: Shape

    @property
    def static(self) -> bool:
        return self.min == self.opt == self.max


_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class GraphSpec:
    """A network to compile (module docstring). `axis_bounds` maps a dynamic axis name to its (min, max)."""

    name: str
    module: nn.Module
    example_inputs: tuple[Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    axis_bounds: dict[str, tuple[int, int]] = field(default_factory=dict)
    profiles: dict[str, Profile] | None = None

    def __post_init__(self) -> None:
        self.example_inputs = tuple(self.example_inputs)
        self.input_names, self.output_names = tuple(self.input_names), tuple(self.output_names)
        if not _NAME.match(self.name):
            raise ValueError(f"a graph name is letters, digits, '_', '.', '-' (a file name), "
                             f"got {self.name!r}")
        if not all(isinstance(x, Tensor) for x in self.example_inputs):
            raise ValueError(f"graph {self.name}: example inputs must be tensors")
        if len(self.input_names) != len(self.example_inputs):
            raise ValueError(f"graph {self.name}: {len(self.input_names)} input names for "
                             f"{len(self.example_inputs)} example inputs")
        names = self.input_names + self.output_names
        if len(set(names)) != len(names) or not self.output_names:
            raise ValueError(f"graph {self.name}: input and output names must be distinct and outputs "
                             f"declared, got {names}")
        unknown = sorted(set(self.dynamic_axes) - set(names))
        if unknown:
            raise ValueError(f"graph {self.name}: dynamic axes for unknown tensors {unknown}")
        for name, example in zip(self.input_names, self.example_inputs, strict=True):
            for axis, axis_name in self.dynamic_axes.get(name, {}).items():
                if not 0 <= axis < example.ndim:
                    raise ValueError(f"graph {self.name}: input {name} has {example.ndim} axes, "
                                     f"no axis {axis}")
                lo, hi = self.axis_bounds.get(axis_name, (1, example.shape[axis]))
                if not 1 <= lo <= example.shape[axis] <= hi:
                    raise ValueError(f"graph {self.name}: axis {axis_name!r} bounds {(lo, hi)} must hold "
                                     f"the example's {example.shape[axis]} of input {name}, from 1 up")
        self.module.eval()  # the exporter restores the training flag it finds: keep it off

    def input_profiles(self) -> dict[str, Profile]:
        """The TensorRT profiles: the explicit ones, else derived (`derive_profiles`)."""
        return dict(self.profiles) if self.profiles is not None else derive_profiles(self)


def derive_profiles(spec: GraphSpec) -> dict[str, Profile]:
    """Per input: opt = the example's shape; a dynamic axis spans its declared (min, max) bounds, every
    other axis is fixed at the example's size. A dynamic axis without bounds is an error (TensorRT
    needs a largest shape, and guessing one makes an engine that refuses real inputs)."""
    profiles = {}
    for name, example in zip(spec.input_names, spec.example_inputs, strict=True):
        opt = tuple(example.shape)
        lo, hi = list(opt), list(opt)
        for axis, axis_name in spec.dynamic_axes.get(name, {}).items():
            if axis_name not in spec.axis_bounds:
                raise ValueError(f"graph {spec.name}: dynamic axis {axis_name!r} of input {name} has no "
                                 "declared bounds (GraphSpec.axis_bounds)")
            lo[axis], hi[axis] = spec.axis_bounds[axis_name]
        profiles[name] = Profile(tuple(lo), opt, tuple(hi))
    return profiles


@runtime_checkable
class Graph(Protocol):
    """A compiled graph: torch tensors in, torch tensors out, on `device` (module docstring)."""

    name: str
    backend: str
    device: torch.device
    precision: str

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]: ...


def graph_inputs(spec: GraphSpec, inputs: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """The call's inputs checked against the spec, on `device`, in the example inputs' dtypes."""
    if len(inputs) != len(spec.input_names):
        raise ValueError(f"graph {spec.name} takes {len(spec.input_names)} inputs "
                         f"({', '.join(spec.input_names)}), got {len(inputs)}")
    out = []
    for name, x, example in zip(spec.input_names, inputs, spec.example_inputs, strict=True):
        if not isinstance(x, Tensor) or x.ndim != example.ndim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"graph {spec.name}: input {name} must be a {example.ndim}-d tensor, got {got}")
        out.append(x.detach().to(device=device, dtype=example.dtype))
    return out


def graph_outputs(values: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
    return values[0] if len(values) == 1 else tuple(values)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def default_cache_dir() -> Path:
    """Where compiled graphs are cached: $VOXSIGHT_CACHE/engines, else ~/.cache/voxsight/engines."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "voxsight") / "engines"
