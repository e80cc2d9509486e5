"""Native TensorRT: an engine built from the spec's ONNX file, cached, warmed up, CUDA-graphed when static.

- Build: the ONNX file (engines.backends.onnx_backend, cached) is parsed into a TensorRT network with one
  optimisation profile (each input's min/opt/max from `GraphSpec.input_profiles`), FP16 when asked, and
  serialised. It takes minutes, so it is announced with a WARNING and a reminder every
  `build_progress_s` seconds until it ends.
- Cache: engines are cached (engines.backends.cache, kind "tensorrt") under the digest of the GPU's
  compute capability, the TensorRT version, the profiles, the precision and the ONNX file's SHA-256
  (`engine_cache_key`); one entry per (graph, compute capability, precision) slot survives.
- Run: torch owns the CUDA context, memory and streams. Inputs and outputs are torch tensors on the
  device, bound to the engine by address (no copies); the engine runs on its own stream, ordered after
  and before the caller's current stream. Warm-up runs on the example inputs come before the graph is
  returned; when every input's profile is static (min = opt = max) the run is captured once as a CUDA
  graph and replayed for calls at that shape.

`tensorrt` is imported only when this backend is used. The cache key, the profiles, the cache lookup and
the CUDA-graph decision are plain functions, tested without TensorRT; the build is tested against a
stand-in `tensorrt` module. What needs a GPU (building, loading and running engines, CUDA graphs) is
untested without one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engines.backends import onnx_backend, torch_backend
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

NAME = "tensorrt"
MIN_MAJOR = 10  # the name-based tensor API (set_input_shape, set_tensor_address, execute_async_v3)
INSTALL_HINT = "pip install 'voxsight[tensorrt]' on a machine with an NVIDIA GPU"


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed ({exc}; {INSTALL_HINT})") from exc
    major = int(str(tensorrt.__version__).split(".")[0])
    if major < MIN_MAJOR:
        raise BackendError(f"TensorRT {tensorrt.__version__} is too old: {MIN_MAJOR} or later is needed")
    return tensorrt


# ---------------------------------------------------------------- plain logic


def engine_cache_key(onnx_sha256: str, compute_capability: tuple[int, int], trt_version: str,
                     profiles: Mapping[str, Profile], precision: str) -> str:
    """The engine's cache key: everything an engine is specific to."""
    return digest({
        "onnx": onnx_sha256,
        "sm": list(compute_capability),
        "tensorrt": trt_version,
        "profiles": {name: [list(p.min), list(p.opt), list(p.max)] for name, p in profiles.items()},
        "precision": precision,
    })


def engine_record(onnx_sha256: str, compute_capability: tuple[int, int], trt_version: str,
                  profiles: Mapping[str, Profile], precision: str, gpu: str) -> dict[str, Any]:
    """What an engine's cache record says it was built from and for (`voxsight engines list`)."""
    return {"onnx_sha256": onnx_sha256, "sm": list(compute_capability), "tensorrt": trt_version,
            "precision": precision, "gpu": gpu,
            "profiles": {n: [list(p.min), list(p.opt), list(p.max)] for n, p in profiles.items()}}


def engine_slot(name: str, compute_capability: tuple[int, int], precision: str) -> str:
    """Engines that supersede one another: the same graph on the same GPU arch at the same precision."""
    return f"{name}/sm{compute_capability[0]}{compute_capability[1]}/{precision}"


def cuda_graph_eligible(profiles: Mapping[str, Profile]) -> bool:
    """A CUDA graph replays fixed addresses and shapes: only when every input's shape is static."""
    return bool(profiles) and all(p.static for p in profiles.values())


def engine_entry(cache: ArtifactCache, name: str, key: str, slot: str, build: Callable[[], bytes],
                 record: Mapping[str, Any]) -> tuple[CacheEntry, bool]:
    """The cached engine for `key`, built with `build()` and stored when it misses; (entry, built)."""
    entry = cache.lookup(name, key)
    if entry is not None:
        return entry, False
    data = build()
    return cache.store(name, key, slot, write=lambda p: p.write_bytes(data), record=record), True


@contextmanager
def announce_build(name: str, what: str, every_s: float) -> Iterator[None]:
    """The loud log of a build: a WARNING now, another every `every_s` seconds, and one at the end."""
    log.warning("building the TensorRT engine for %s (%s): this takes minutes, once per GPU arch, "
                "TensorRT version, shapes and precision; the engine is cached", name, what)
    start, done = time.monotonic(), threading.Event()

    def remind() -> None:
        while not done.wait(every_s):
            log.warning("still building the TensorRT engine for %s (%.0f s so far)", name,
                        time.monotonic() - start)

    reminder = threading.Thread(target=remind, name=f"tensorrt-build-{name}", daemon=True)
    reminder.start()
    try:
        yield
    finally:
        done.set()
        reminder.join()
    log.warning("built the TensorRT engine for %s in %.0f s", name, time.monotonic() - start)


def build_engine(trt: Any, onnx_path: Path, profiles: Mapping[str, Profile], precision: str, name: str,
                 progress_s: float = BackendOptions.build_progress_s) -> bytes:
    """A serialised engine of the ONNX file with one optimisation profile; BackendError on failure."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode from TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for input_name, p in profiles.items():
        profile.set_shape(input_name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = ", ".join(f"{n} {list(p.min)}..{list(p.max)}" for n, p in profiles.items())
    with announce_build(name, f"{precision}, {shapes}", progress_s):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build the engine for {name} (its log above says why)")
    return bytes(serialized)


# ---------------------------------------------------------------- runtime

_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
           "INT64": torch.int64, "INT8": torch.int8, "BOOL": torch.bool}


class TensorRTGraph:
    """A TensorRT engine behind the Graph interface (engines.backends.base.Graph)."""

    backend = NAME

    def __init__(self, trt: Any, spec: GraphSpec, engine_path: Path, device: torch.device, precision: str,
                 built: bool = False) -> None:
        self.name, self.device, self.precision = spec.name, device, precision
        self.engine_path, self.built = engine_path, built  # built now, or loaded from the cache
        self.cuda_graph = False
        self._spec, self._profiles = spec, spec.input_profiles()
        with torch.cuda.device(device):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self._engine is None:
                raise BackendError(f"TensorRT could not load the engine of {spec.name} (its log says why)")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(device)
        self._out_dtypes = [_DTYPES[self._engine.get_tensor_dtype(n).name] for n in spec.output_names]
        self._captured: tuple[tuple[tuple[int, ...], ...], torch.cuda.CUDAGraph, list[Tensor],
                              list[Tensor]] | None = None

    def _bind(self, xs: list[Tensor]) -> list[Tensor]:
        """Set the input shapes and addresses; allocate and bind the outputs."""
        for name, x in zip(self._spec.input_names, xs, strict=True):
            if not self._context.set_input_shape(name, tuple(x.shape)):
                p = self._profiles[name]
                raise ValueError(f"graph {self.name}: input {name} of shape {tuple(x.shape)} is outside the "
                                 f"engine's profile {p.min} .. {p.max}")
            self._context.set_tensor_address(name, x.data_ptr())
        outs = []
        for name, dtype in zip(self._spec.output_names, self._out_dtypes, strict=True):
            out = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=dtype, device=self.device)
            self._context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        return outs

    def _enqueue(self) -> None:
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise BackendError(f"TensorRT failed to run {self.name}")
        current.wait_stream(self._stream)

    def __call__(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        xs = [x.contiguous() for x in graph_inputs(self._spec, inputs, self.device)]
        with torch.cuda.device(self.device):
            shapes = tuple(tuple(x.shape) for x in xs)
            if self._captured is not None and self._captured[0] == shapes:
                _, graph, static_in, static_out = self._captured
                for buffer, x in zip(static_in, xs, strict=True):
                    buffer.copy_(x)
                graph.replay()
                outs = [o.clone() for o in static_out]
            else:
                outs = self._bind(xs)
                self._enqueue()
        return graph_outputs([o.float() if o.is_floating_point() else o for o in outs])

    def warm_up(self, runs: int) -> None:
        for _ in range(runs):
            self(*self._spec.example_inputs)
        torch.cuda.synchronize(self.device)

    def capture_cuda_graph(self) -> None:
        """Capture one run at the (static) example shapes; later calls at those shapes replay it."""
        with torch.cuda.device(self.device):
            examples = graph_inputs(self._spec, self._spec.example_inputs, self.device)
            static_in = [x.contiguous() for x in examples]
            static_out = self._bind(static_in)
            self._enqueue()  # an ordinary run first: TensorRT allocates lazily on its first one
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self._stream):
                self._context.execute_async_v3(self._stream.cuda_stream)
            self._captured = (tuple(tuple(x.shape) for x in static_in), graph, static_in, static_out)
        self.cuda_graph = True

    def __repr__(self) -> str:
        return f"TensorRTGraph({self.name}, {self.device}, {self.precision}, cuda_graph={self.cuda_graph})"


# ---------------------------------------------------------------- backend


def check(device: torch.device) -> str:
    """What TensorRT can run here; BackendError (not installed, too old, no CUDA device) otherwise."""
    trt = import_tensorrt()
    if device.type != "cuda":
        raise BackendError(f"TensorRT runs on a CUDA device, not {device}")
    torch_backend.check(device)
    sm = torch.cuda.get_device_capability(device)
    return f"TensorRT {trt.__version__} on {torch.cuda.get_device_name(device)} (sm_{sm[0]}{sm[1]})"


def load(spec: GraphSpec, device: torch.device, precision: str, cache_dir: Path,
         options: BackendOptions) -> TensorRTGraph:
    """The spec's engine (from the cache, or built into it), warmed up, CUDA-graphed when static."""
    check(device)
    trt = import_tensorrt()
    check_precision(precision)
    profiles = spec.input_profiles()
    onnx = onnx_backend.cached_onnx(spec, cache_dir, options.opset)
    sm = torch.cuda.get_device_capability(device)
    key = engine_cache_key(onnx.sha256, sm, trt.__version__, profiles, precision)
    record = engine_record(onnx.sha256, sm, trt.__version__, profiles, precision,
                           torch.cuda.get_device_name(device))
    entry, built = engine_entry(
        ArtifactCache(cache_dir, "tensorrt"), spec.name, key, engine_slot(spec.name, sm, precision),
        lambda: build_engine(trt, onnx.path, profiles, precision, spec.name, options.build_progress_s),
        record)
    log.info("%s TensorRT engine %s", "built" if built else "cached", entry.path)
    graph = TensorRTGraph(trt, spec, entry.path, device, precision, built)
    graph.warm_up(options.warmup)
    if options.cuda_graphs and cuda_graph_eligible(profiles):
        try:
            graph.capture_cuda_graph()
        except RuntimeError as exc:  # the engine still runs, one launch per layer
            log.warning("graph %s: no CUDA graph (%s)", spec.name, exc)
    return graph
