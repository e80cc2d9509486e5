"""`voxsight export` (ONNX graphs of checkpoints and shipped weights, with their parity table; clear errors
for missing weights) and `voxsight engines` (build: refused here, naming TensorRT; list: the cache)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from engines.backends import BackendOptions, compile_graph
from engines.backends.cache import ArtifactCache
from engines.backends.tensorrt_backend import engine_record
from engines.models.frontend import VisualFrontendConfig
from engines.models.lipreader import LipReader, LipReaderConfig
from engines.models.vocoder import Vocoder, VocoderConfig
from engines.synth.graphs import vocoder_graph
from engines.train import checkpoint
from node.cli import main
from tests.helpers import voxsight


def tensorrt_installed() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def save(path: Path, model: nn.Module, kind: str) -> Path:
    return checkpoint.save(path, model, model.config, kind=kind, metrics={}, data_summary={},
                           command="test", data_seed=0, step=0)


@pytest.fixture
def tiny_vocoder() -> Vocoder:
    torch.manual_seed(0)
    return Vocoder(VocoderConfig(dim=32, intermediate=64, n_blocks=2)).eval()


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder of shipped weights."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv(checkpoint.WEIGHTS_ENV, str(folder))
    return folder


def parity_rows(out: str) -> dict[tuple[str, str], tuple[float, str]]:
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) == 4 and cells[0] != "graph":
            rows[cells[0], cells[1]] = (float(cells[2]), cells[3])
    return rows


def test_export_writes_the_graphs_of_a_checkpoint_and_of_shipped_weights_with_their_parity(
        tmp_path: Path, weights_dir: Path, tiny_vocoder: Vocoder, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    reader = LipReader(LipReaderConfig(frontend=VisualFrontendConfig(dim=32, geometry_hidden=16), hidden=24))
    trained = save(tmp_path / "runs" / "latest.pt", reader, "lipreader")
    save(weights_dir / "vocoder.pt", tiny_vocoder, "vocoder")  # shipped, found by name
    out = tmp_path / "onnx"

    code = main(["export", "--models", "lipreader,vocoder", "--checkpoint", f"lipreader={trained}",
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert sorted(p.name for p in out.glob("*.onnx")) == ["frame.onnx", "reader.onnx", "temporal.onnx",
                                                          "vocoder.onnx"]
    for path in out.glob("*.onnx"):
        onnx.checker.check_model(str(path))
    rows = parity_rows(printed)
    assert set(rows) == {("frame", "features"), ("temporal", "visual"), ("reader", "log_probs"),
                         ("reader", "hidden"), ("reader", "next_state"), ("vocoder", "wav")}
    assert all(diff <= 1e-3 and status == "ok" for diff, status in rows.values()), printed
    assert "tolerance 0.001: all within" in printed


def test_missing_weights_exit_1_naming_each_model_without_a_traceback(
        tmp_path: Path, weights_dir: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "onnx"
    assert main(["export", "--models", "melgen,asr", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "melgen: no shipped weights named 'melgen'" in err and "asr: no shipped weights named 'asr'" in err
    assert "--checkpoint MODEL=PATH" in err and "Traceback" not in err
    assert not out.exists()


def test_a_wrong_checkpoint_is_refused_with_the_reason(
        tmp_path: Path, weights_dir: Path, tiny_vocoder: Vocoder, capsys: pytest.CaptureFixture) -> None:
    vocoder = save(tmp_path / "vocoder.pt", tiny_vocoder, "vocoder")
    assert main(["export", "--models", "melgen", "--checkpoint", f"melgen={vocoder}"]) == 1
    assert f"melgen: {vocoder} holds a 'vocoder' model" in capsys.readouterr().err
    assert main(["export", "--models", "asr", "--checkpoint", f"asr={tmp_path / 'none.pt'}"]) == 1
    assert f"no checkpoint file {tmp_path / 'none.pt'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--models", "lipreader,identity"])
    assert exit_.value.code == 2
    assert "models are among lipreader, melgen, vocoder, asr" in capsys.readouterr().err


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")
def test_engines_build_says_tensorrt_is_not_installed(tmp_path: Path) -> None:
    proc = voxsight("engines", "build", "--cache", str(tmp_path))
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, output
    assert "voxsight engines build: TensorRT is not installed" in output and "Traceback" not in output


def test_engines_list_shows_the_cache(tmp_path: Path, tiny_vocoder: Vocoder,
                                      capsys: pytest.CaptureFixture) -> None:
    cache = tmp_path / "cache"
    assert main(["engines", "list", "--cache", str(cache)]) == 0
    assert f"no cached graphs in {cache}" in capsys.readouterr().out
    spec = vocoder_graph(tiny_vocoder)
    compile_graph(spec, cache_dir=cache, options=BackendOptions(threads=1))
    record = engine_record("0" * 64, (8, 9), "10.3.0", spec.input_profiles(), "fp16", "NVIDIA L4")
    ArtifactCache(cache, "tensorrt").store("vocoder", "1" * 64, "vocoder/sm89/fp16",
                                           lambda p: p.write_bytes(b"plan"), record)
    assert main(["engines", "list", "--cache", str(cache)]) == 0
    listing = capsys.readouterr().out
    [onnx_row] = [line for line in listing.splitlines() if line.startswith("onnx")]
    assert onnx_row.split()[:2] == ["onnx", "vocoder"] and "opset 17" in onnx_row
    [engine_row] = [line for line in listing.splitlines() if line.startswith("tensorrt")]
    assert "fp16, sm_89 NVIDIA L4, TensorRT 10.3.0" in engine_row and "2 entries" in listing
    assert main(["engines"]) == 2 and "build" in capsys.readouterr().err
