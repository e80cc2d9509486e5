"""Checkpoints: what they record, how they load (plain values only, classes only from allowed packages),
atomic writes, exported shipped weights, the shipped-weights budget, and `voxsight models`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import conventions
from engines.params import param
from engines.train import checkpoint
from engines.train.cli import main_models
from tests.engines.test_train import TinyConfig, TinyNet

TESTS = ("tests",)


@dataclasses.dataclass(frozen=True)
class Inner:
    widths: tuple[int, ...] = param((4, 8), "widths")


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    pairs: tuple[tuple[int, ...], ...] = param(((1, 2), (3,)), "nested tuples")
    name: str = param("x", "a string")


def save_tiny(path: Path, model: TinyNet | None = None, **overrides) -> tuple[Path, TinyNet]:
    torch.manual_seed(0)
    model = TinyNet(TinyConfig(hidden=8)) if model is None else model
    kwargs = dict(kind="tiny", metrics={"val_loss": np.float32(0.25), "wer": 0.1},
                  data_summary={"source": Path("/data/corpus"), "clips": 12}, command="voxsight train tiny",
                  data_seed=3, step=42)
    return checkpoint.save(path, model, model.config, **{**kwargs, **overrides}), model


def test_a_checkpoint_records_how_the_model_was_made_and_rebuilds_it(tmp_path: Path) -> None:
    path, model = save_tiny(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)  # plain values and tensors only
    assert raw["model_class"] == "tests.engines.test_train.TinyNet"
    assert raw["config"] == dataclasses.asdict(model.config)
    assert raw["metrics"] == {"val_loss": 0.25, "wer": 0.1} and type(raw["metrics"]["val_loss"]) is float
    assert raw["data"] == {"source": "/data/corpus", "clips": 12}
    assert raw["conventions"] == conventions.current()
    assert raw["conventions"]["hop"] == 160 and raw["conventions"]["mels_per_frame"] == 4
    assert type(raw["torch_version"]) is str and raw["created"].endswith("+00:00")
    commit = checkpoint.git_commit()
    assert raw["git_commit"] == commit and (commit is None or len(commit.removesuffix("-dirty")) == 40)

    ckpt = checkpoint.load(path, packages=TESTS)
    assert isinstance(ckpt.model, TinyNet) and not ckpt.model.training
    assert ckpt.config == model.config and ckpt.kind == "tiny" and ckpt.step == 42
    assert ckpt.command == "voxsight train tiny" and ckpt.data_seed == 3
    for a, b in zip(ckpt.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_classes_are_only_imported_from_allowed_packages(tmp_path: Path) -> None:
    path, _ = save_tiny(tmp_path / "m.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refusing to import"):
        checkpoint.load(path)  # engines only by default
    with pytest.raises(checkpoint.CheckpointError, match="refusing"):
        checkpoint.import_class("os.system")


def test_nested_configs_with_tuples_survive_the_round_trip() -> None:
    config = Outer(Inner((1, 2, 3)), ((5,), (6, 7)), "y")
    data = checkpoint.config_dict(config)
    assert checkpoint.config_from_dict(Outer, data) == config
    # YAML gives lists; they become the declared tuples, so configs compare equal to their defaults
    from_yaml = {"inner": {"widths": [4, 8]}, "pairs": [[1, 2], [3]]}
    assert checkpoint.config_from_dict(Outer, from_yaml) == Outer()
    with pytest.raises(checkpoint.CheckpointError, match="lacks"):
        checkpoint.config_from_dict(Outer, {"nope": 1})


def test_only_plain_values_are_recorded(tmp_path: Path) -> None:
    assert checkpoint.plain({"a": (np.int64(2), [Path("p")])}) == {"a": (2, ["p"])}
    with pytest.raises(TypeError, match=r"metrics\.bad"):
        save_tiny(tmp_path / "m.pt", metrics={"bad": object()})
    with pytest.raises(TypeError, match="not a string"):
        checkpoint.plain({1: 2})
    assert not (tmp_path / "m.pt").exists()


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = save_tiny(tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_tiny(path, step=43)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_files_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    for name in ("junk.pt", "foreign.pt"):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.read(tmp_path / name)


def test_other_media_conventions_are_reported_on_load(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    path, _ = save_tiny(tmp_path / "m.pt")
    raw = checkpoint.read(path)
    raw["conventions"] = {**raw["conventions"], "hop": 200}
    checkpoint.write_atomic(raw, path)
    with caplog.at_level(logging.WARNING, logger="engines.train.checkpoint"):
        checkpoint.load(path, packages=TESTS)
    assert "hop 200 (now 160)" in caplog.text


def test_export_ships_the_ema_weights_without_the_training_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyNet(TinyConfig(hidden=8))
    ema = TinyNet(TinyConfig(hidden=8))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    src, _ = save_tiny(tmp_path / "run" / "latest.pt", model, optimizer=optimizer,
                       training={"ema": ema.state_dict(), "aux": None})
    dst = checkpoint.export(src, tmp_path / "weights" / "tiny.pt", metrics={"whisper_wer": 0.2})
    raw = checkpoint.read(dst)
    assert "optimizer" not in raw and "training" not in raw
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values())
    assert raw["metrics"] == {"val_loss": 0.25, "wer": 0.1, "whisper_wer": 0.2}
    assert raw["extra"] == {"exported_from": "latest.pt", "weights": "ema", "dtype": "float16"}
    assert dst.stat().st_size < src.stat().st_size
    shipped = checkpoint.load(dst, packages=TESTS).model
    for a, b in zip(shipped.state_dict().values(), ema.state_dict().values(), strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


def test_shipped_weights_are_listed_and_loaded_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(checkpoint.WEIGHTS_ENV, str(tmp_path))
    assert checkpoint.shipped() == []
    assert main_models([]) == 0
    assert "no shipped weights yet" in capsys.readouterr().out

    src, _ = save_tiny(tmp_path / "run.ckpt")
    assert main_models(["export", str(src), "tiny", "--fp32"]) == 0
    (tmp_path / "broken.pt").write_bytes(b"junk")
    [entry] = checkpoint.shipped()
    assert entry.name == "tiny" and entry.kind == "tiny" and entry.data_summary["clips"] == 12
    assert entry.size_mb == pytest.approx((tmp_path / "tiny.pt").stat().st_size / 1e6)
    capsys.readouterr()
    assert main_models([]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "corpus (12 clips)" in table and "val_loss 0.25" in table
    assert "of the 40 MB budget" in table
    assert checkpoint.read(checkpoint.shipped_path("tiny"))["command"] == "voxsight train tiny"
    with pytest.raises(FileNotFoundError, match="shipped: tiny"):
        checkpoint.load_shipped("melgen")


def test_voxsight_models_is_a_voxsight_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from node.cli import main

    assert main(["models", "--folder", str(tmp_path)]) == 0
    assert "no shipped weights yet" in capsys.readouterr().out


def test_the_shipped_weights_fit_the_budget() -> None:
    total = checkpoint.check_shipped_size()  # the real engines/weights folder
    assert total <= checkpoint.SHIPPED_LIMIT_MB


def test_the_budget_is_enforced(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    with open(weights / "big.pt", "wb") as f:
        f.truncate(int(41e6))  # sparse: the apparent size is what ships
    with pytest.raises(ValueError, match="over the 40 MB budget"):
        checkpoint.check_shipped_size(weights)
    src, _ = save_tiny(tmp_path / "src.ckpt")
    with pytest.raises(ValueError, match="would make the shipped weights"):
        checkpoint.export(src, weights / "tiny.pt")
    assert sorted(p.name for p in weights.iterdir()) == ["big.pt"]
