"""`compile_graph`: a GraphSpec compiled by the best backend that can run it here.

The chain is TensorRT → ONNX Runtime → PyTorch. `backend="auto"` starts at TensorRT on a CUDA device
and at ONNX Runtime on the CPU (TensorRT needs a GPU); a named backend starts the chain there. A backend
that cannot be used (package missing, no GPU, export or build failure, a failing first run) logs a
WARNING saying why and the next one is tried; the Graph returned says in `.backend` which one runs.
Every graph has run once on the example inputs before it is returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from engines.backends import onnx_backend, tensorrt_backend, torch_backend
from engines.backends.base import (
    BACKENDS,
    BackendError,
    BackendOptions,
    Graph,
    GraphSpec,
    check_precision,
    default_cache_dir,
)

log = logging.getLogger(__name__)

MODULES: dict[str, ModuleType] = {"tensorrt": tensorrt_backend, "onnxruntime": onnx_backend,
                                  "torch": torch_backend}
CHOICES = ("auto", *BACKENDS)


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    detail: str  # what it would run on, or why it cannot run


def fallback_chain(backend: str, device: torch.device | str) -> list[str]:
    """The backends to try, in order, for `backend` on `device` (module docstring)."""
    if backend not in CHOICES:
        raise ValueError(f"backend must be one of {', '.join(CHOICES)}, got {backend!r}")
    if backend == "auto":
        backend = "tensorrt" if torch.device(device).type == "cuda" else "onnxruntime"
    return list(BACKENDS[BACKENDS.index(backend):])


def compile_graph(spec: GraphSpec, backend: str = "auto", device: torch.device | str = "cpu",
                  precision: str = "fp32", cache_dir: Path | str | None = None,
                  options: BackendOptions | None = None) -> Graph:
    """The spec compiled by the first backend of the chain that can run it; BackendError if none can."""
    device = torch.device(device)
    check_precision(precision)
    chain = fallback_chain(backend, device)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    options = options or BackendOptions()
    reasons = []
    for i, name in enumerate(chain):
        try:
            graph = MODULES[name].load(spec, device, precision, cache, options)
            graph(*spec.example_inputs)
            return graph
        except BackendError as exc:
            reason = str(exc)
        except Exception as exc:  # any failure to export, build or run means: not this backend, here
            reason = f"{type(exc).__name__}: {exc}"
        reasons.append(f"{name}: {reason}")
        then = f"trying {chain[i + 1]}" if i + 1 < len(chain) else "no backend left"
        log.warning("graph %s: the %s backend cannot run on %s (%s); %s", spec.name, name, device, reason,
                    then)
    raise BackendError(f"no backend can run graph {spec.name} on {device}: {'; '.join(reasons)}")


def available_backends(device: torch.device | str = "cpu") -> list[BackendStatus]:
    """Each backend, best first: whether it can run graphs on `device` here, and on what or why not."""
    statuses = []
    for name in BACKENDS:
        try:
            statuses.append(BackendStatus(name, True, MODULES[name].check(torch.device(device))))
        except BackendError as exc:
            statuses.append(BackendStatus(name, False, str(exc)))
    return statuses
