"""Inference backends: cache keys, TensorRT profiles, CUDA-graph eligibility, the fallback chain with real
failing backends, the ONNX cache (reuse, invalidation), the TensorRT builder's call sequence against a
stand-in `tensorrt` module (TensorRT cannot be installed here), and the parity of every synthesizer graph
in ONNX Runtime against PyTorch at two batch sizes and lengths."""

from __future__ import annotations

import copy
import logging
import math
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from engines.backends import (
    BackendError,
    BackendOptions,
    Graph,
    GraphSpec,
    Profile,
    available_backends,
    compile_graph,
    derive_profiles,
)
from engines.backends import tensorrt_backend as trtb
from engines.backends.base import default_cache_dir
from engines.backends.cache import ArtifactCache
from engines.backends.onnx_backend import cached_onnx, choose_providers, export_onnx, onnx_cache_key, parity
from engines.backends.select import fallback_chain
from engines.models.aligner import PhoneAligner
from engines.models.asr import ASR
from engines.models.frontend import VisualFrontendConfig
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.mel_prior import MelPrior
from engines.models.melgen import MelGen
from engines.models.vocoder import Vocoder
from engines.synth.graphs import GraphSizes, OverlapAddISTFT, fixed_size_pools, model_graphs

ONE_THREAD = BackendOptions(threads=1)
TOL = 1e-3


def tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


class Mix(nn.Module):
    """A small two-input, two-output network."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm(self.proj(x) + y)
        return h, h.sum(dim=1)


class MixTwice(Mix):
    """The same weights, another forward: its code differs."""

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm(self.proj(x) + 2 * y)
        return h, h.sum(dim=1)


def mix_spec(module: nn.Module | None = None, batch: int = 2, frames: int = 5, name: str = "mix",
             bounds: dict[str, tuple[int, int]] | None = None) -> GraphSpec:
    torch.manual_seed(1)
    module = Mix() if module is None else module
    return GraphSpec(name, module, (torch.randn(batch, frames, 6), torch.randn(batch, frames, 6)), ("x", "y"),
                     ("h", "total"), {"x": {0: "batch", 1: "frames"}, "y": {0: "batch", 1: "frames"},
                                      "h": {0: "batch", 1: "frames"}, "total": {0: "batch"}},
                     {"batch": (1, 8), "frames": (1, 100)} if bounds is None else bounds)


# ---------------------------------------------------------------- cache keys


def test_the_engine_key_changes_with_each_ingredient_and_not_otherwise() -> None:
    profiles = {"x": Profile((1, 80, 4), (2, 80, 60), (8, 80, 1000))}
    base = dict(onnx_sha256="a" * 64, compute_capability=(8, 9), trt_version="10.3.0", profiles=profiles,
                precision="fp16")
    key = trtb.engine_cache_key(**base)
    assert key == trtb.engine_cache_key(**{**base, "profiles": copy.deepcopy(profiles)})
    variants = [
        {"onnx_sha256": "b" * 64},
        {"compute_capability": (9, 0)},
        {"trt_version": "10.4.0"},
        {"profiles": {"x": Profile((1, 80, 4), (2, 80, 60), (8, 80, 2000))}},
        {"profiles": {"x": Profile((1, 80, 4), (1, 80, 60), (8, 80, 1000))}},
        {"profiles": {"y": profiles["x"]}},
        {"precision": "fp32"},
    ]
    keys = {trtb.engine_cache_key(**{**base, **v}) for v in variants}
    assert len(keys) == len(variants) and key not in keys


def test_the_onnx_key_changes_with_weights_code_shapes_axes_names_and_opset_only() -> None:
    spec = mix_spec()
    key = onnx_cache_key(spec, 17)
    assert key == onnx_cache_key(mix_spec(copy.deepcopy(spec.module)), 17)  # same weights, new objects
    changed = copy.deepcopy(spec.module)
    with torch.no_grad():
        changed.proj.bias[0] += 1e-3
    twice = MixTwice()
    twice.load_state_dict(spec.module.state_dict())
    renamed = mix_spec(spec.module)
    renamed.output_names = ("h", "sum")
    renamed.dynamic_axes["sum"] = renamed.dynamic_axes.pop("total")
    static_time = mix_spec(spec.module)
    del static_time.dynamic_axes["x"][1]
    keys = {
        onnx_cache_key(mix_spec(changed), 17),
        onnx_cache_key(mix_spec(twice), 17),
        onnx_cache_key(mix_spec(spec.module, frames=6), 17),
        onnx_cache_key(renamed, 17),
        onnx_cache_key(static_time, 17),
        onnx_cache_key(spec, 18),
    }
    assert len(keys) == 6 and key not in keys


# ---------------------------------------------------------------- profiles and CUDA graphs


def test_profiles_span_the_declared_bounds_of_dynamic_axes_with_the_example_as_opt() -> None:
    spec = mix_spec(batch=2, frames=5)
    assert derive_profiles(spec) == {"x": Profile((1, 1, 6), (2, 5, 6), (8, 100, 6)),
                                     "y": Profile((1, 1, 6), (2, 5, 6), (8, 100, 6))}
    fixed = mix_spec(bounds={"batch": (2, 2), "frames": (5, 5)})
    assert all(p.static for p in fixed.input_profiles().values())
    explicit = {"x": Profile((2, 5, 6), (2, 5, 6), (2, 5, 6)), "y": Profile((1, 5, 6), (2, 5, 6), (4, 5, 6))}
    spec.profiles = explicit
    assert spec.input_profiles() == explicit


def test_a_dynamic_axis_without_bounds_has_no_profile_and_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="'frames' of input x has no declared bounds"):
        derive_profiles(mix_spec(bounds={"batch": (1, 8)}))
    with pytest.raises(ValueError, match="bounds"):
        mix_spec(bounds={"batch": (1, 8), "frames": (6, 100)})  # the example has 5 frames
    with pytest.raises(ValueError, match="unknown tensors"):
        GraphSpec("m", Mix(), (torch.randn(1, 2, 6),) * 2, ("x", "y"), ("h", "total"), {"z": {0: "batch"}})
    with pytest.raises(ValueError, match="no axis 3"):
        GraphSpec("m", Mix(), (torch.randn(1, 2, 6),) * 2, ("x", "y"), ("h", "total"), {"x": {3: "batch"}})
    with pytest.raises(ValueError, match="2 input names for 1"):
        GraphSpec("m", Mix(), (torch.randn(1, 2, 6),), ("x", "y"), ("h",))
    with pytest.raises(ValueError, match="file name"):
        GraphSpec("../m", Mix(), (torch.randn(1, 2, 6),) * 2, ("x", "y"), ("h",))


def test_cuda_graphs_only_where_every_input_shape_is_static() -> None:
    static = Profile((2, 80, 60), (2, 80, 60), (2, 80, 60))
    dynamic = Profile((1, 80, 60), (2, 80, 60), (8, 80, 60))
    assert trtb.cuda_graph_eligible({"x": static, "t": Profile((2,), (2,), (2,))})
    assert not trtb.cuda_graph_eligible({"x": static, "t": Profile((1,), (2,), (2,))})
    assert not trtb.cuda_graph_eligible({"x": dynamic})
    assert not trtb.cuda_graph_eligible({})


# ---------------------------------------------------------------- fallback chain


class NoONNX(nn.Module):
    """Runs in PyTorch, but ONNX has no inverse STFT: the ONNX Runtime backend fails to export it."""

    def forward(self, x: Tensor) -> Tensor:
        window = torch.hann_window(16)
        return torch.istft(torch.stft(x, 16, window=window, return_complex=True), 16, window=window)


def test_the_chain_starts_where_asked_and_auto_skips_tensorrt_on_the_cpu() -> None:
    assert fallback_chain("auto", "cpu") == ["onnxruntime", "torch"]
    assert fallback_chain("auto", "cuda:0") == ["tensorrt", "onnxruntime", "torch"]
    assert fallback_chain("tensorrt", "cpu") == ["tensorrt", "onnxruntime", "torch"]
    assert fallback_chain("torch", "cuda") == ["torch"]
    with pytest.raises(ValueError, match="backend must be one of"):
        fallback_chain("tvm", "cpu")


def test_auto_on_the_cpu_runs_onnxruntime_without_warnings(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    spec = mix_spec()
    with caplog.at_level(logging.WARNING):
        graph = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
    assert isinstance(graph, Graph) and graph.backend == "onnxruntime" and graph.precision == "fp32"
    assert graph.device == torch.device("cpu") and not caplog.records


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_an_explicit_tensorrt_request_falls_back_with_a_warning(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        graph = compile_graph(mix_spec(), backend="tensorrt", cache_dir=tmp_path, options=ONE_THREAD)
    assert graph.backend == "onnxruntime"
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.name == "engines.backends.select"
    assert "tensorrt backend cannot run" in record.message and "TensorRT is not installed" in record.message
    assert "trying onnxruntime" in record.message


def test_a_graph_onnx_cannot_export_falls_back_to_torch(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    x = torch.randn(2, 64)
    spec = GraphSpec("no_onnx", NoONNX(), (x,), ("x",), ("y",))
    with caplog.at_level(logging.WARNING):
        graph = compile_graph(spec, backend="onnxruntime", cache_dir=tmp_path, options=ONE_THREAD)
    assert graph.backend == "torch"
    assert any("onnxruntime backend cannot run" in r.message and "trying torch" in r.message
               for r in caplog.records)
    torch.testing.assert_close(graph(x), NoONNX()(x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_no_backend_left_is_an_error_that_gives_every_reason(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as info:
        compile_graph(mix_spec(), device="cuda", cache_dir=tmp_path)
    message = str(info.value)
    assert "tensorrt:" in message and "onnxruntime:" in message and "torch:" in message


def test_available_backends_say_what_runs_here_and_why_not() -> None:
    statuses = {s.name: s for s in available_backends("cpu")}
    assert list(statuses) == ["tensorrt", "onnxruntime", "torch"]
    assert statuses["torch"].available and statuses["onnxruntime"].available
    assert "CPUExecutionProvider" in statuses["onnxruntime"].detail
    if not tensorrt_installed():
        assert not statuses["tensorrt"].available and "not installed" in statuses["tensorrt"].detail


def test_providers_prefer_the_gpu_ones_that_exist_and_keep_the_cpu_last() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert choose_providers(cuda, everything) == everything
    assert choose_providers(cuda, everything[1:]) == everything[1:]
    assert choose_providers(cuda, everything, ["CUDAExecutionProvider"]) == everything[1:]
    assert choose_providers(cpu, everything) == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="no GPU execution provider"):
        choose_providers(cuda, ["CPUExecutionProvider"])


def test_fp16_without_a_gpu_runs_fp32_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = mix_spec()
    for backend in ("onnxruntime", "torch"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            graph = compile_graph(spec, backend=backend, precision="fp16", cache_dir=tmp_path,
                                  options=ONE_THREAD)
        assert graph.backend == backend and graph.precision == "fp32"
        assert any("fp16" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="precision"):
        compile_graph(spec, precision="int8", cache_dir=tmp_path)


def test_graphs_check_their_inputs_and_leave_the_callers_model_alone(tmp_path: Path) -> None:
    spec = mix_spec()
    before = {k: v.clone() for k, v in spec.module.state_dict().items()}
    for backend in ("onnxruntime", "torch"):
        graph = compile_graph(spec, backend=backend, cache_dir=tmp_path, options=ONE_THREAD)
        with pytest.raises(ValueError, match="takes 2 inputs"):
            graph(spec.example_inputs[0])
        with pytest.raises(ValueError, match="must be a 3-d tensor"):
            graph(spec.example_inputs[0][0], spec.example_inputs[1])
    assert all(torch.equal(v, before[k]) for k, v in spec.module.state_dict().items())


def test_the_cache_folder_defaults_under_the_home_and_follows_voxsight_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VOXSIGHT_CACHE", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "voxsight" / "engines"
    monkeypatch.setenv("VOXSIGHT_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "engines"


# ---------------------------------------------------------------- the ONNX cache


def _onnx_files(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob("*.onnx"))


def test_the_onnx_cache_reuses_an_export_and_replaces_it_when_the_weights_change(tmp_path: Path) -> None:
    spec = mix_spec()
    first = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
    [path] = _onnx_files(tmp_path)
    stamp = path.stat().st_mtime_ns
    again = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
    assert _onnx_files(tmp_path) == [path] and path.stat().st_mtime_ns == stamp  # not exported again
    torch.testing.assert_close(again(*spec.example_inputs), first(*spec.example_inputs))

    with torch.no_grad():
        spec.module.proj.weight.mul_(-1.0)
    changed = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
    [new_path] = _onnx_files(tmp_path)  # the superseded export is evicted
    assert new_path != path
    with torch.no_grad():
        expected = spec.module(*spec.example_inputs)
    for got, want in zip(changed(*spec.example_inputs), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_damaged_cache_entry_is_discarded_and_rebuilt(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    spec = mix_spec()
    entry = cached_onnx(spec, tmp_path)
    entry.path.write_bytes(entry.path.read_bytes()[:100])  # a half-written file
    with caplog.at_level(logging.WARNING):
        graph = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
    assert any("discarding the damaged" in r.message for r in caplog.records)
    assert graph.backend == "onnxruntime" and cached_onnx(spec, tmp_path).sha256 == entry.sha256


def test_engine_entries_build_once_then_load_and_rebuild_when_the_key_changes(tmp_path: Path) -> None:
    cache, builds = ArtifactCache(tmp_path, "tensorrt"), []

    def entry(key: str, slot: str, data: bytes) -> tuple:
        return trtb.engine_entry(cache, "denoiser", key * 32, f"denoiser/sm89/{slot}",
                                 lambda: builds.append(data) or data, {})

    first, built = entry("k1", "fp16", b"one")
    assert built and first.path.read_bytes() == b"one"
    again, built = entry("k1", "fp16", b"x")
    assert not built and again.path == first.path and builds == [b"one"]
    fp32, _ = entry("k2", "fp32", b"two")
    newer, built = entry("k3", "fp16", b"three")
    assert built and {e.path for e in cache.entries()} == {fp32.path, newer.path}  # "one" superseded
    newer.path.write_bytes(b"thre")  # damaged
    rebuilt, built = entry("k3", "fp16", b"three")
    assert built and rebuilt.path.read_bytes() == b"three" and builds == [b"one", b"two", b"three", b"three"]


# ---------------------------------------------------------------- TensorRT against a stand-in module


def fake_tensorrt(calls: list, *, version: str = "10.3.0", parses: bool = True,
                  engine: bytes | None = b"PLAN",
                  during_build: Callable[[], None] = lambda: None) -> types.ModuleType:
    """A stand-in for the `tensorrt` module, which cannot be installed here: it records the calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level: str) -> None:
            calls.append(("Logger", level))

    class Profile_:
        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def add_optimization_profile(self, profile: Profile_) -> None:
            calls.append(("add_optimization_profile",))

        def set_flag(self, flag: str) -> None:
            calls.append(("set_flag", flag))

    class Builder:
        def __init__(self, logger: Logger) -> None:
            calls.append(("Builder",))

        def create_network(self, flags: int) -> str:
            calls.append(("create_network", flags))
            return "network"

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile_:
            return Profile_()

        def build_serialized_network(self, network: str, config: Config) -> bytes | None:
            calls.append(("build_serialized_network", network))
            during_build()
            return engine

    class OnnxParser:
        num_errors = 0 if parses else 1

        def __init__(self, network: str, logger: Logger) -> None:
            calls.append(("OnnxParser", network))

        def parse(self, data: bytes) -> bool:
            calls.append(("parse", data))
            return parses

        def get_error(self, i: int) -> str:
            return "In node 3 (Foo): UNSUPPORTED_NODE"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    return trt


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"onnx bytes")
    return path


def test_the_builder_gets_the_network_the_profiles_and_fp16(onnx_file: Path) -> None:
    profiles = derive_profiles(mix_spec())
    calls: list = []
    plan = trtb.build_engine(fake_tensorrt(calls), onnx_file, profiles, "fp16", "mix")
    assert plan == b"PLAN"
    assert calls == [("Logger", "WARNING"), ("Builder",), ("create_network", 0), ("OnnxParser", "network"),
                     ("parse", b"onnx bytes"),
                     ("set_shape", "x", (1, 1, 6), (2, 5, 6), (8, 100, 6)),
                     ("set_shape", "y", (1, 1, 6), (2, 5, 6), (8, 100, 6)),
                     ("add_optimization_profile",), ("set_flag", "FP16"),
                     ("build_serialized_network", "network")]
    calls.clear()
    trtb.build_engine(fake_tensorrt(calls), onnx_file, profiles, "fp32", "mix")
    assert not any(c[0] == "set_flag" for c in calls)


def test_a_build_is_announced_loudly_and_reminded_until_it_ends(onnx_file: Path) -> None:
    records: list[logging.LogRecord] = []
    reminded = threading.Event()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            if "still building" in record.getMessage():
                reminded.set()

    logger, handler = logging.getLogger(trtb.__name__), Collect()
    logger.addHandler(handler)
    try:
        trt = fake_tensorrt([], during_build=lambda: reminded.wait(30))  # a build that lasts until reminded
        trtb.build_engine(trt, onnx_file, derive_profiles(mix_spec()), "fp16", "mix", progress_s=0.01)
    finally:
        logger.removeHandler(handler)
    assert reminded.is_set()
    messages = [r.getMessage() for r in records]
    assert all(r.levelno == logging.WARNING for r in records)
    assert messages[0].startswith("building the TensorRT engine for mix (fp16, x [1, 1, 6]..[8, 100, 6]")
    assert "still building the TensorRT engine for mix" in messages[1]
    assert messages[-1].startswith("built the TensorRT engine for mix")


def test_parser_and_builder_failures_are_backend_errors(onnx_file: Path) -> None:
    profiles = derive_profiles(mix_spec())
    with pytest.raises(BackendError, match=r"cannot parse .*UNSUPPORTED_NODE"):
        trtb.build_engine(fake_tensorrt([], parses=False), onnx_file, profiles, "fp32", "mix")
    with pytest.raises(BackendError, match="could not build the engine for mix"):
        trtb.build_engine(fake_tensorrt([], engine=None), onnx_file, profiles, "fp32", "mix")


def test_tensorrt_missing_old_or_without_a_gpu_is_refused_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails: not installed
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        trtb.check(torch.device("cuda"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([], version="8.6.1"))
    with pytest.raises(BackendError, match="too old"):
        trtb.check(torch.device("cuda"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([]))
    with pytest.raises(BackendError, match="runs on a CUDA device, not cpu"):
        trtb.check(torch.device("cpu"))


def test_an_installed_tensorrt_on_the_cpu_falls_back_to_onnxruntime(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([]))
    with caplog.at_level(logging.WARNING):
        graph = compile_graph(mix_spec(), backend="tensorrt", cache_dir=tmp_path, options=ONE_THREAD)
    assert graph.backend == "onnxruntime"
    assert any("runs on a CUDA device" in r.message for r in caplog.records)


# ---------------------------------------------------------------- the synthesizer's graphs


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    """Default-size models, randomly initialised (MelGen's zero-initialised output layer too, or its ε
    would be 0 and prove nothing)."""
    torch.manual_seed(0)
    melgen = MelGen()
    nn.init.normal_(melgen.final_conv.weight, std=0.1)
    nn.init.normal_(melgen.final_conv.bias, std=0.1)
    # a window shorter than the longer example (23 frames), so both a filling and a full window run
    mean = LipReader(LipReaderConfig(frontend=VisualFrontendConfig(mean_window=10)))
    built = {"lipreader": LipReader(), "lipreader-mean": mean, "melgen": melgen, "vocoder": Vocoder(),
             "asr": ASR(), "aligner": PhoneAligner(), "prior": MelPrior()}
    for model in built.values():
        assert sum(p.numel() for p in model.parameters()) < 2_500_000
    return {kind: model.eval() for kind, model in built.items()}


OTHER = GraphSizes(batch=3, frames=23)  # another batch and length than the traced 2 × 15


def as_tuple(out: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (out,) if isinstance(out, Tensor) else tuple(out)


@pytest.mark.parametrize("name", ["lipreader", "lipreader-mean", "melgen", "vocoder", "asr", "aligner",
                                  "prior"])
def test_every_graph_matches_pytorch_in_onnxruntime_at_two_batches_and_lengths(
        name: str, models: dict[str, nn.Module], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    kind = name.split("-")[0]
    specs, others = model_graphs(kind, models[name]), model_graphs(kind, models[name], OTHER)
    for spec, other in zip(specs, others, strict=True):
        path = export_onnx(spec, tmp_path / f"{spec.name}.onnx")
        diffs = parity(spec, path, [spec.example_inputs, other.example_inputs])
        assert max(diffs.values()) <= TOL, (spec.name, diffs)

        graph = compile_graph(spec, cache_dir=tmp_path, options=ONE_THREAD)
        assert graph.backend == "onnxruntime"
        with torch.no_grad():
            expected = as_tuple(spec.module(*other.example_inputs))
        for got, want in zip(as_tuple(graph(*other.example_inputs)), expected, strict=True):
            assert got.shape == want.shape and (got - want).abs().max() <= TOL


def test_the_graphs_compute_what_their_models_do(models: dict[str, nn.Module]) -> None:
    reader, melgen, vocoder, asr = (models[k] for k in ("lipreader", "melgen", "vocoder", "asr"))
    frame, temporal, lip = model_graphs("lipreader", reader)
    roi, lips = frame.example_inputs
    frames, state = lip.example_inputs
    x, t, cond = model_graphs("melgen", melgen)[0].example_inputs
    [voc] = model_graphs("vocoder", vocoder)
    [asr_spec] = model_graphs("asr", asr)
    with torch.no_grad():
        torch.testing.assert_close(frame.module(roi, lips), reader.frontend.frame_features(roi, lips))
        visual = reader.frontend.temporal(frames)
        torch.testing.assert_close(temporal.module(frames), visual)
        out = reader.read(visual, state)
        torch.testing.assert_close(lip.module(visual, state), (out.log_probs, out.hidden, out.state))
        torch.testing.assert_close(model_graphs("melgen", melgen)[0].module(x, t, cond), melgen(x, t, cond))
        mel = voc.example_inputs[0]
        torch.testing.assert_close(voc.module(mel), vocoder(mel), atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(asr_spec.module(*asr_spec.example_inputs), asr(*asr_spec.example_inputs))
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in reader.modules())  # the caller's model unchanged


def test_the_overlap_add_istft_equals_torch_istft_on_loud_spectra() -> None:
    n_fft, hop, frames = 640, 160, 37
    window = torch.hann_window(n_fft, periodic=True)
    magnitude = torch.exp(3 * torch.rand(2, n_fft // 2 + 1, frames))
    phase = 2 * math.pi * torch.rand(2, n_fft // 2 + 1, frames)
    real, imag = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
    expected = torch.istft(torch.complex(real, imag), n_fft, hop, n_fft, window, center=True,
                           length=hop * frames)
    got = OverlapAddISTFT(n_fft, hop, window)(real, imag)
    assert got.shape == expected.shape == (2, hop * frames)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_fixed_size_pools_refuse_a_pool_that_is_not_a_plain_average() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(3))  # 9 − 2 = 7 is no multiple of 3
    with pytest.raises(ValueError, match="no plain average pool"):
        fixed_size_pools(net, lambda m: m(torch.randn(1, 1, 9, 9)))
    fixed = fixed_size_pools(net, lambda m: m(torch.randn(1, 1, 11, 11)))  # 9 = 3 × 3
    x = torch.randn(2, 1, 11, 11)
    assert isinstance(fixed[1], nn.AvgPool2d) and isinstance(net[1], nn.AdaptiveAvgPool2d)
    torch.testing.assert_close(fixed(x), net(x))
