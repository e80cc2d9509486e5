"""ONNX export and the ONNX Runtime backend.

Export uses the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`): it honours `dynamic_axes`
and needs no onnxscript. Exported files are cached (engines.backends.cache, kind "onnx") under the
digest of everything the graph depends on: the values of the module's parameters and buffers, its
structure (repr), the source of its own (non-torch) classes, the torch version, the example inputs'
shapes and dtypes, the names, the dynamic axes and the opset. Changed weights or code therefore
re-export; an unchanged model reuses the file.

Execution providers: by default the first of TensorRT, CUDA, CPU that this onnxruntime build has (on a
CPU device only the CPU one), with the CPU provider always last for nodes a GPU provider cannot take.
FP16 is honoured by the TensorRT provider only (`trt_fp16_enable`, with the profiles of the spec and its
own engine cache under CACHE/ort-tensorrt); elsewhere the graph runs in fp32 and says so. Inputs and
outputs cross the host (numpy); on a GPU an IO binding would save those copies.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engines.backends.base import (
    BackendError,
    BackendOptions,
    GraphSpec,
    Profile,
    check_precision,
    graph_inputs,
    graph_outputs,
)
from engines.backends.cache import ArtifactCache, CacheEntry, digest

log = logging.getLogger(__name__)

NAME = "onnxruntime"
TENSORRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
DEFAULT_PROVIDERS = (TENSORRT_EP, CUDA_EP, CPU_EP)


# ---------------------------------------------------------------- export


def tensors_digest(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (non-persistent ones too): names, dtypes, shapes, values."""
    h = hashlib.sha256()
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def code_digest(module: nn.Module) -> str:
    """Digest of the structure and of the source of the module's own classes (torch's are covered by
    the torch version), so an edited forward re-exports even when the weights are the same."""
    sources = {}
    for sub in module.modules():
        cls = type(sub)
        if cls.__module__.split(".")[0] != "torch":
            try:
                sources[f"{cls.__module__}.{cls.__qualname__}"] = inspect.getsource(cls)
            except (OSError, TypeError):  # defined where no source is at hand: its name has to do
                sources[f"{cls.__module__}.{cls.__qualname__}"] = ""
    return digest({"repr": repr(module), "sources": sources})


def onnx_cache_key(spec: GraphSpec, opset: int) -> str:
    """The export's cache key (module docstring)."""
    return digest({
        "tensors": tensors_digest(spec.module),
        "code": code_digest(spec.module),
        "torch": torch.__version__,
        "inputs": [[name, list(x.shape), str(x.dtype)]
                   for name, x in zip(spec.input_names, spec.example_inputs, strict=True)],
        "outputs": list(spec.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()},
        "opset": opset,
    })


def export_onnx(spec: GraphSpec, path: Path | str, opset: int = BackendOptions.opset) -> Path:
    """Write `spec` as an ONNX file at `path`, traced at the example inputs with the dynamic axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next((p.device for p in spec.module.parameters()), torch.device("cpu"))
    with warnings.catch_warnings():
        # The exporter's deprecation notice, and tracer notes on shapes read as Python numbers: a graph
        # frozen to its example's shapes is caught by running it at other shapes (the parity checks).
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # and its notes on constant folding and on RNNs without initial state inputs (ours take one)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        with torch.no_grad():
            torch.onnx.export(spec.module, tuple(x.to(device) for x in spec.example_inputs), str(path),
                              dynamo=False, input_names=list(spec.input_names),
                              output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                              opset_version=opset, do_constant_folding=True)
    return path


def cached_onnx(spec: GraphSpec, cache_dir: Path, opset: int = BackendOptions.opset) -> CacheEntry:
    """The spec's ONNX file from the cache, exported first when its key misses."""
    cache = ArtifactCache(cache_dir, "onnx")
    key = onnx_cache_key(spec, opset)
    entry = cache.lookup(spec.name, key)
    if entry is None:
        log.info("exporting %s to ONNX (opset %d)", spec.name, opset)
        entry = cache.store(spec.name, key, slot=spec.name, write=lambda p: export_onnx(spec, p, opset),
                            record={"opset": opset, "torch": torch.__version__,
                                    "inputs": {n: list(x.shape) for n, x in
                                               zip(spec.input_names, spec.example_inputs, strict=True)}})
    return entry


# ---------------------------------------------------------------- ONNX Runtime


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(f"onnxruntime is not installed ({exc})") from exc
    return onnxruntime


def choose_providers(device: torch.device, available: Sequence[str],
                     requested: Sequence[str] = ()) -> list[str]:
    """The execution providers to ask for, best first (module docstring); BackendError when a CUDA
    device is asked for and this onnxruntime has no GPU provider."""
    wanted = list(requested) or list(DEFAULT_PROVIDERS)
    missing = [p for p in wanted if p not in available]
    if requested and missing:
        log.warning("this onnxruntime lacks %s (it has %s)", ", ".join(missing), ", ".join(available))
    chosen = [p for p in wanted if p in available and (device.type == "cuda" or p == CPU_EP)]
    if device.type == "cuda" and all(p == CPU_EP for p in chosen):
        raise BackendError(f"no GPU execution provider among {', '.join(wanted)} in this onnxruntime "
                           f"(it has {', '.join(available)}; onnxruntime-gpu has CUDA and TensorRT)")
    if CPU_EP not in chosen:
        chosen.append(CPU_EP)  # nodes a GPU provider cannot take run on the CPU
    return chosen


def shapes_text(profiles: dict[str, Profile], which: str) -> str:
    """A TensorRT provider profile option: "name:1x80x4,other:1x4"."""
    return ",".join(f"{name}:{'x'.join(map(str, getattr(p, which)))}" for name, p in profiles.items())


def provider_options(provider: str, spec: GraphSpec, device: torch.device, precision: str,
                     cache_dir: Path) -> dict[str, str]:
    index = str(device.index or 0)
    if provider == CUDA_EP:
        return {"device_id": index}
    if provider != TENSORRT_EP:
        return {}
    options = {"device_id": index, "trt_fp16_enable": str(precision == "fp16"),
               "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir / "ort-tensorrt")}
    try:
        profiles = spec.input_profiles()
    except ValueError:  # undeclared bounds: the provider builds an engine per new shape instead
        return options
    return {**options, **{f"trt_profile_{which}_shapes": shapes_text(profiles, which)
                          for which in ("min", "opt", "max")}}


def session(path: Path | str, providers: Sequence[str], threads: int = 0,
            options: Sequence[dict[str, str]] | None = None) -> Any:
    ort = _import_ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: its notes on folded initialisers are noise here
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=list(providers),
                                provider_options=list(options) if options is not None else None)


class OnnxGraph:
    """A spec running in an ONNX Runtime session (engines.backends.base.Graph)."""

    backend = NAME

    def __init__(self, spec: GraphSpec, sess: Any, device: torch.device, precision: str) -> None:
        self.name, self.device, self.precision = spec.name, device, precision
        self.providers: list[str] = sess.get_providers()
        self._spec, self._session = spec, sess

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        xs = graph_inputs(self._spec, inputs, torch.device("cpu"))
        feed = {name: x.numpy() for name, x in zip(self._spec.input_names, xs, strict=True)}
        outs = self._session.run(list(self._spec.output_names), feed)
        return graph_outputs([torch.from_numpy(np.asarray(o)).to(self.device) for o in outs])

    def __repr__(self) -> str:
        return f"OnnxGraph({self.name}, {self.device}, {self.precision}, {', '.join(self.providers)})"


def check(device: torch.device) -> str:
    """What ONNX Runtime can run here; BackendError when it cannot serve `device`."""
    ort = _import_ort()
    available = ort.get_available_providers()
    providers = choose_providers(device, available)
    return f"onnxruntime {ort.__version__} ({', '.join(providers)})"


def load(spec: GraphSpec, device: torch.device, precision: str, cache_dir: Path,
            options: BackendOptions) -> OnnxGraph:
    """The spec exported (or taken from the cache) and loaded in an ONNX Runtime session."""
    ort = _import_ort()
    check_precision(precision)
    providers = choose_providers(device, ort.get_available_providers(), options.providers)
    entry = cached_onnx(spec, cache_dir, options.opset)
    if TENSORRT_EP in providers:
        (cache_dir / "ort-tensorrt").mkdir(parents=True, exist_ok=True)
    sess = session(entry.path, providers, options.threads,
                   [provider_options(p, spec, device, precision, cache_dir) for p in providers])
    active = sess.get_providers()
    if device.type == "cuda" and active == [CPU_EP]:
        raise BackendError(f"onnxruntime could not start {', '.join(providers[:-1])} on {device}")
    if precision == "fp16" and TENSORRT_EP not in active:
        log.warning("graph %s: fp16 in onnxruntime needs the TensorRT provider (active: %s); running fp32",
                    spec.name, ", ".join(active))
        precision = "fp32"
    return OnnxGraph(spec, sess, device, precision)


def parity(spec: GraphSpec, onnx_path: Path | str, input_sets: Sequence[Sequence[Tensor]],
           threads: int = 1) -> dict[str, float]:
    """Max |PyTorch − ONNX Runtime (CPU)| per output over the input sets; inf where shapes differ."""
    sess = session(onnx_path, [CPU_EP], threads)
    worst = dict.fromkeys(spec.output_names, 0.0)
    for inputs in input_sets:
        with torch.no_grad():
            ref = spec.module(*inputs)
        refs = (ref,) if isinstance(ref, Tensor) else tuple(ref)
        feed = {name: x.detach().cpu().numpy() for name, x in zip(spec.input_names, inputs, strict=True)}
        got = sess.run(list(spec.output_names), feed)
        for name, r, g in zip(spec.output_names, refs, got, strict=True):
            r = r.detach().float().cpu().numpy()
            diff = float(np.abs(r - g).max()) if r.shape == g.shape else float("inf")
            worst[name] = max(worst[name], diff)
    return worst
