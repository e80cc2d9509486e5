"""The generic trainer: it learns, writes curves and checkpoints, resumes after a hard kill exactly where
an uninterrupted run would be, and trains data-parallel under torchrun (2 CPU processes on gloo).

Run as a module (`python -m tests.engines.test_train OUT ...`), this file is the training process the
kill and torchrun tests start.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from engines.params import param
from engines.train import checkpoint, distributed, recipes
from engines.train.cli import CONFIGS, main_train
from engines.train.curves import Curves, read_csv
from engines.train.loop import TrainConfig, Trainer
from engines.train.recipes.aligner import AlignerOptions, moved_labels
from engines.train.recipes.conditions import ConditionCache
from engines.train.recipes.lipreader import SpeakerAdversary
from engines.train.recipes.melgen import phonetic_loss
from engines.train.recipes.prior import StreamedPhones
from engines.train.recipes.vocoder import PriorSegments
from tests.helpers import REPO, SHARED


@dataclasses.dataclass
class TinyConfig:
    n_in: int = param(4, "inputs")
    hidden: int = param(16, "hidden units")
    dropout: float = param(0.0, "dropout (draws from the global generator)")
    input_noise: float = param(0.0, "std of noise added to the inputs in training (global generator)")


class TinyNet(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.n_in, config.hidden), nn.Tanh(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden, 1))
        self.unused = nn.Parameter(torch.ones(1))  # no gradient ever: must stay as it is, in any process

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.config.input_noise:
            x = x + self.config.input_noise * torch.randn_like(x)
        return self.net(x)


class Points(torch.utils.data.Dataset):
    """y = tanh(w·x) at 64 fixed random points."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.tanh(self.x @ torch.tensor([[0.8], [-0.5], [0.3], [0.1]]))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def mse(batch: dict[str, torch.Tensor], model: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    err = model(batch["x"]) - batch["y"]
    return err.square().mean(), {"mae": err.abs().mean()}


def make_trainer(out: Path, *, max_steps: int, batch_size: int = 8, noisy: bool = True, ema: float = 0.9,
                 ckpt_every: int = 10, on_step=None) -> Trainer:
    config = TinyConfig(dropout=0.1, input_noise=0.05) if noisy else TinyConfig()
    torch.manual_seed(0)
    train = TrainConfig(batch_size=batch_size, lr=1e-2, max_steps=max_steps, log_every=5,
                        ckpt_every=ckpt_every, keep_checkpoints=2, ema_decay=ema, seed=7, out_dir=str(out),
                        device="cpu", progress=False, warmup_steps=3, schedule="cosine")
    return Trainer(TinyNet(config), mse, Points(), train, model_config=config, kind="tiny",
                   validate=lambda model: {"mse": mse(Points()[:], model)[0].item()},
                   data_summary={"source": "Points", "items": 64}, command="pytest tiny", on_step=on_step)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-5, msg=k)


def worker(argv: list[str]) -> int:
    """One training process: --kill-at kills itself (SIGKILL, no cleanup) right after that step."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--plain", action="store_true", help="no dropout, input noise or EMA")
    args = parser.parse_args(argv)

    def on_step(trainer: Trainer) -> None:
        if trainer.step == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer = make_trainer(args.out, max_steps=args.max_steps, batch_size=args.batch_size,
                           noisy=not args.plain, ema=0.0 if args.plain else 0.9, on_step=on_step)
    trainer.fit(resume=True)
    distributed.teardown(trainer.ctx)
    return 0


def run_module(*args: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    python = [sys.executable, "-m"]
    if torchrun:
        python += ["torch.distributed.run", "--nproc_per_node", str(torchrun), "--standalone", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*python, "tests.engines.test_train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


# ---------------------------------------------------------------- tests


def test_training_reduces_the_loss_and_writes_curves_and_checkpoints(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=60, ckpt_every=20)
    metrics = trainer.fit()
    rows = read_csv(tmp_path / "curves.csv")
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert {"loss", "mae", "grad_norm", "lr", "val_mse"} <= set().union(*rows)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert metrics["val_mse"] < rows[0]["loss"]
    # latest + the 2 newest step checkpoints; latest is the last one; no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".pt") == [
        "latest.pt", "step-0000040.pt", "step-0000060.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    raw = checkpoint.read(tmp_path / "latest.pt")
    assert raw["step"] == 60 and raw["command"] == "pytest tiny" and raw["data_seed"] == 7
    assert raw["kind"] == "tiny" and raw["data"] == {"source": "Points", "items": 64}
    assert raw["metrics"]["val_mse"] == pytest.approx(metrics["val_mse"])
    assert raw["extra"]["train_config"]["lr"] == 1e-2 and raw["extra"]["world_size"] == 1
    ckpt = checkpoint.load(tmp_path / "latest.pt", packages=("tests",))
    assert ckpt.config == trainer.model_config and not ckpt.model.training
    assert_same(params(ckpt.model), params(trainer.ema.model))  # a run with an EMA loads its EMA weights


def test_a_folder_holding_a_run_is_only_resumed(tmp_path: Path) -> None:
    make_trainer(tmp_path, max_steps=10).fit()
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(tmp_path, max_steps=20).fit()


def test_a_new_run_can_start_from_trained_weights_of_the_same_config(tmp_path: Path) -> None:
    make_trainer(tmp_path / "first", max_steps=10).fit()
    trained = params(checkpoint.load(tmp_path / "first" / "latest.pt", packages=("tests",)).model)
    tuned = make_trainer(tmp_path / "tuned", max_steps=4)
    tuned.config = dataclasses.replace(tuned.config, init_from=str(tmp_path / "first" / "latest.pt"), lr=0.0)
    tuned.fit()
    assert tuned.step == 4 and checkpoint.read(tmp_path / "tuned" / "latest.pt")["step"] == 4
    assert_same(params(tuned.model), trained)  # learning rate 0: the weights it started from
    assert_same(params(tuned.ema.model), trained)
    other = make_trainer(tmp_path / "other", max_steps=4, noisy=False)  # another model config
    other.config = dataclasses.replace(other.config, init_from=str(tmp_path / "first" / "latest.pt"))
    with pytest.raises(checkpoint.CheckpointError, match="another model config"):
        other.fit()


def test_a_deeper_melgen_run_starts_from_a_shallower_trained_one(tmp_path: Path) -> None:
    from engines.models.melgen import MelGen
    from tests.engines.test_models import TINY_MELGEN

    mels = [{"x": torch.randn(80, 8, generator=torch.Generator().manual_seed(i))} for i in range(4)]

    def loss(batch: dict[str, torch.Tensor], model: nn.Module) -> tuple[torch.Tensor, dict[str, Any]]:
        x = batch["x"]
        return (model(x, 5, model.null_condition(len(x), 2)) - x).abs().mean(), {}

    def run(config: Any, out: str, init_from: str = "") -> Trainer:
        torch.manual_seed(0)
        train = TrainConfig(batch_size=2, lr=0.0 if init_from else 1e-2, max_steps=2, ema_decay=0.9,
                            out_dir=str(tmp_path / out), device="cpu", progress=False, init_from=init_from)
        trainer = Trainer(MelGen(config), loss, mels, train, model_config=config, kind="melgen",
                          data_summary={"source": "noise"}, command="pytest melgen")
        trainer.fit()
        return trainer

    small = run(TINY_MELGEN, "small").ema.model  # what its checkpoint holds
    trained = str(tmp_path / "small" / "latest.pt")
    deep = run(dataclasses.replace(TINY_MELGEN, num_res_layers=5), "deep", trained)
    x = torch.randn(1, 80, 8)
    with torch.no_grad():  # learning rate 0: the small model's function, in the model and in its EMA
        for model in (deep.model.eval(), deep.ema.model):
            torch.testing.assert_close(model(x, 9, model.null_condition(1, 2)),
                                       small(x, 9, small.null_condition(1, 2)), atol=1e-5, rtol=1e-4)
    with pytest.raises(checkpoint.CheckpointError, match="deeper"):
        run(dataclasses.replace(TINY_MELGEN, res_channels=8), "wide", trained)


def test_kill_and_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = make_trainer(tmp_path / "straight", max_steps=30)
    straight.fit()

    killed = run_module(str(tmp_path / "resumed"), "--max-steps", "30", "--kill-at", "17")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert checkpoint.read(tmp_path / "resumed" / "latest.pt")["step"] == 10
    assert max(Curves(tmp_path / "resumed" / "curves.csv").rows) == 15  # logged after the checkpoint

    resumed = make_trainer(tmp_path / "resumed", max_steps=30)
    resumed.fit(resume=True)
    assert resumed.step == 30
    assert_same(params(resumed.model), params(straight.model))
    assert_same(params(resumed.ema.model), params(straight.ema.model))
    state_a, state_b = resumed.optimizer.state_dict()["state"], straight.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:
        assert_same(state_a[i], state_b[i])
    a, b = read_csv(tmp_path / "straight" / "curves.csv"), read_csv(tmp_path / "resumed" / "curves.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)


def test_torchrun_two_processes_train_like_one_process_with_twice_the_batch(tmp_path: Path) -> None:
    single = make_trainer(tmp_path / "single", max_steps=20, batch_size=8, noisy=False, ema=0.0)
    single.fit()

    ddp = run_module(str(tmp_path / "ddp"), "--max-steps", "20", "--batch-size", "4", "--plain", torchrun=2)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    files = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert files == ["curves.csv", "curves.png", "latest.pt", "step-0000010.pt", "step-0000020.pt"]
    raw = checkpoint.read(tmp_path / "ddp" / "latest.pt")
    assert raw["step"] == 20 and raw["extra"]["world_size"] == 2
    a, b = read_csv(tmp_path / "single" / "curves.csv"), read_csv(tmp_path / "ddp" / "curves.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4)
    assert b[-1]["loss"] < b[0]["loss"]
    assert_same(raw["state_dict"], params(single.model), atol=1e-5)
    assert raw["state_dict"]["unused"].item() == 1.0


def test_processes_split_each_global_batch_and_resume_mid_epoch() -> None:
    one = list(distributed.ShardedBatchSampler(20, 4, distributed.Context(), seed=3, epoch=1))
    two = [list(distributed.ShardedBatchSampler(20, 2, distributed.Context(rank=r, world_size=2), seed=3,
                                                epoch=1)) for r in range(2)]
    assert [a + b for a, b in zip(*two, strict=True)] == one  # global batch = rank 0's slice, rank 1's
    assert len(one) == 5 and len({i for b in one for i in b}) == 20
    assert list(distributed.ShardedBatchSampler(20, 4, distributed.Context(), 3, 1, start=2)) == one[2:]
    assert list(distributed.ShardedBatchSampler(20, 4, distributed.Context(), 3, 2)) != one
    with pytest.raises(ValueError, match="fewer than one global batch"):
        distributed.ShardedBatchSampler(3, 2, distributed.Context(rank=0, world_size=2), 0, 0)


def test_curves_grow_columns_and_drop_rows_after_a_resume_point(tmp_path: Path) -> None:
    curves = Curves(tmp_path / "c.csv")
    curves.add(5, {"loss": 2.0})
    curves.add(10, {"loss": 1.0})
    curves.add(10, {"val_cer": 0.5})
    curves.add(15, {"loss": 0.5})
    curves.write()
    again = Curves(tmp_path / "c.csv")
    assert again.columns == ["step", "loss", "val_cer"]
    assert again.series("val_cer") == ([10], [0.5])
    again.truncate(10)
    assert sorted(again.rows) == [5, 10]
    assert again.plot(tmp_path / "c.png").stat().st_size > 1000


GRID_DEV = SHARED / "real" / "grid-dev"


@pytest.mark.skipif(not GRID_DEV.is_dir(), reason=f"{GRID_DEV} (real GRID clips) is absent")
def test_voxsight_train_records_its_command_and_config_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["vocoder", "--config", "smoke/vocoder", "--data", str(GRID_DEV), "--out", str(out),
            "--no-progress"]
    assert main_train([*args, "--max-steps", "2"]) == 0
    raw = checkpoint.read(out / "latest.pt")
    assert raw["step"] == 2 and raw["command"] == "voxsight train " + " ".join(args) + " --max-steps 2"
    assert raw["extra"]["config"]["recipe"] == {"segment_frames": 16}
    assert raw["extra"]["config"]["config_file"].endswith("configs/smoke/vocoder.yaml")
    assert raw["data"]["clips"] == 3 and raw["data"]["layout"] == "grid" and raw["data_seed"] == 0
    assert {"train_loss", "val_mel", "val_stft"} <= set(raw["metrics"])
    assert main_train([*args, "--resume"]) == 0
    assert checkpoint.read(out / "latest.pt")["step"] == 4  # the config's max_steps


def test_voxsight_train_explains_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert main_train(["vocoder", "--config", "smoke/vocoder", "--out", str(tmp_path / "a")]) == 2
    assert "no training data" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: {}\ntrian: {}\n")
    assert main_train(["vocoder", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown section(s) ['trian']" in capsys.readouterr().err
    missing = dataclasses.replace(recipes.RECIPES["vocoder"], module="engines.models.nonexistent")
    monkeypatch.setitem(recipes.RECIPES, "vocoder", missing)
    assert main_train(["vocoder", "--config", "smoke/vocoder", "--out", str(tmp_path / "b")]) == 2
    assert "needs engines.models.nonexistent" in capsys.readouterr().err



@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_shipped_training_config_reads_into_its_recipe(path: Path) -> None:
    """A config is named MODEL or MODEL-VARIANT; each of its sections must fill its dataclass."""
    import importlib

    from engines.train.cli import read_config

    spec = recipes.RECIPES[path.stem.split("-")[0]]
    sections = read_config(path)
    checkpoint.config_from_dict(TrainConfig, sections["train"])
    checkpoint.config_from_dict(recipes.DataOptions, sections["data"])
    checkpoint.config_from_dict(getattr(importlib.import_module(spec.module), spec.config), sections["model"])
    if spec.options is not None:
        checkpoint.config_from_dict(spec.options, sections["recipe"])
    else:
        assert not sections["recipe"]


def smoke_config(tmp_path: Path, model: str, **recipe: str) -> Path:
    """The smoke config of MODEL with its feature cache in tmp_path, one extraction process and `recipe`
    options replaced."""
    sections = yaml.safe_load((CONFIGS / "smoke" / f"{model}.yaml").read_text())
    sections["data"] = {**sections["data"], "cache": str(tmp_path / "features"), "jobs": 1}
    if recipe:
        sections["recipe"] = {**sections.get("recipe", {}), **recipe}
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.mark.skipif(not GRID_DEV.is_dir(), reason=f"{GRID_DEV} (real GRID clips) is absent")
def test_melgen_trains_on_a_trained_lip_reader_and_identity_encoder_and_records_which(tmp_path: Path) -> None:
    from engines.synth.models import SynthModels

    data = tmp_path / "grid"  # the clips under GRID speaker folders: the identity encoder needs two
    for i, video in enumerate(sorted(GRID_DEV.glob("*.mpg"))):
        link = data / f"s{1 + i % 2}" / video.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(video.resolve())
    runs = {model: tmp_path / "runs" / model for model in ("lipreader", "identity", "melgen")}
    trained = {kind: str(runs[kind] / "latest.pt") for kind in ("lipreader", "identity")}
    variants = {"condition_variants": 2, "augment": {"brightness": 0.3, "shift": 0.05}, "phonetic_loss": 0.5}
    adversary = {"speaker_adversary": 0.5, "flip": 0.5}
    for model, recipe in (("lipreader", adversary), ("identity", {}), ("melgen", {**trained, **variants})):
        config = smoke_config(tmp_path, model, **recipe)
        assert main_train([model, "--config", str(config), "--data", str(data), "--out", str(runs[model]),
                           "--device", "cpu", "--no-progress"]) == 0

    reader = checkpoint.read(runs["lipreader"] / "latest.pt")
    assert reader["data"]["faces"] == 2 and 0 <= reader["metrics"]["train_face_acc"] <= 1
    assert reader["training"]["aux"] is not None  # the face classifier resumes with the reader
    raw = checkpoint.read(runs["melgen"] / "latest.pt")
    assert raw["step"] == 4 and raw["data"]["features"] == "reader" and raw["data"]["clips"] == 3
    for kind, path in trained.items():
        assert raw["data"][kind] == path
        assert raw["data"][f"{kind}_digest"] == checkpoint.weights_digest(checkpoint.load(path).model)
    assert math.isfinite(raw["metrics"]["train_loss"]) and math.isfinite(raw["metrics"]["val_loss"])
    models = SynthModels.load(trained["lipreader"], str(runs["melgen"] / "latest.pt"), trained["identity"],
                              asr=None, vocoder="griffin-lim")  # strict: the digests match
    assert models.features == "reader"

    # Its conditions: per clip the plain one and one from augmented lips, the plain one as inference has it.
    from engines.data import loaders
    from engines.train.augment import LipAugment

    samples = loaders.load(str(data), str(tmp_path / "features"), split=None)
    cache = ConditionCache(samples, models.lipreader, models.identity, "reader", progress=False,
                                   variants=2, augment=LipAugment(brightness=0.3, shift=0.05))
    clip = samples.clips[0].id
    plain = ConditionCache(samples, models.lipreader, models.identity, "reader", progress=False)
    frames = plain.conds[clip][0].shape[0]
    assert [c.shape for c in cache.conds[clip]] == [(frames, raw["config"]["cond_dim"])] * 2
    assert cache.moved[clip] == [(0, 0), (0, 0)]
    torch.testing.assert_close(cache.window([clip], [0], frames, [0]), plain.window([clip], [0], frames))
    assert not torch.allclose(cache.window([clip], [0], frames, [1]), plain.window([clip], [0], frames))
    with pytest.raises(recipes.RecipeError, match="augmentations"):
        ConditionCache(samples, models.lipreader, models.identity, "reader", False, variants=2)
    with pytest.raises(recipes.RecipeError, match="aligned"):
        ConditionCache(samples, models.lipreader, models.identity, "reader", False, variants=2,
                               augment=LipAugment(brightness=0.3, onset_hold=4))
    # The phone aligner's cache may move the clip's start and end: each variant then has its own length.
    moving = ConditionCache(samples, models.lipreader, None, "reader", False, variants=4,
                                    augment=LipAugment(onset_trim=3, onset_hold=3, end_hold=2), seed=1,
                                    moves=True)
    for clip in moving.conds:
        base = moving.conds[clip][0].shape[0]
        assert moving.moved[clip][0] == (0, 0)
        for cond, (lead, tail) in zip(moving.conds[clip], moving.moved[clip], strict=True):
            assert -3 <= lead <= 3 and 0 <= tail <= 2 and cond.shape[0] == base + lead + tail
    assert any(m != (0, 0) for moved in moving.moved.values() for m in moved[1:])
    with pytest.raises(recipes.RecipeError, match="tempo"):
        ConditionCache(samples, models.lipreader, None, "reader", False, variants=2,
                               augment=LipAugment(tempo=0.1), moves=True)


def test_conditions_are_kept_on_disk_and_found_again(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    from engines.data import loaders
    from engines.models.identity import IdentityConfig, IdentityEncoder
    from engines.models.lipreader import LipReader, LipReaderConfig
    from engines.train.augment import LipAugment

    # Three clips' features put straight into a real feature cache (their media need only be bytes).
    rng = np.random.default_rng(0)
    refs = []
    for i in range(3):
        video = tmp_path / f"clip{i}.mp4"
        video.write_bytes(f"clip {i}".encode())
        refs.append(loaders.ClipRef(f"c{i}", "list", video, video))
    samples = loaders.SampleSet(refs, tmp_path / "features")
    for ref, frames in zip(refs, (9, 12, 7), strict=True):
        samples.cache.get(ref.files, lambda frames=frames: {
            "mouth_rois": rng.integers(0, 256, (frames, 88, 88), dtype=np.uint8),
            "lip_geometry": rng.standard_normal((frames, 82)).astype(np.float32),
            "valid": np.ones(frames, dtype=bool),
            "face_crop": rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
            "mel": rng.standard_normal((80, 4 * frames)).astype(np.float32)})
    torch.manual_seed(0)
    reader, identity = LipReader(LipReaderConfig()).eval(), IdentityEncoder(IdentityConfig()).eval()
    augment = LipAugment(brightness=0.3, shift=0.05)

    def build() -> ConditionCache:
        return ConditionCache(samples, reader, identity, "reader", False, 2, augment)

    first = build()
    assert (first.stored.hits, first.stored.misses) == (0, 3)
    # Built again with the same networks, the networks do not run; with other weights, they do.
    calls: list[int] = []
    hook = reader.register_forward_hook(lambda *_: calls.append(1))
    again = build()
    assert calls == [] and (again.stored.hits, again.stored.misses) == (3, 0)
    for clip, conds in first.conds.items():
        assert all(torch.equal(a, b) for a, b in zip(conds, again.conds[clip], strict=True))
    assert again.moved == first.moved
    with torch.no_grad():
        next(reader.parameters()).add_(1e-3)
    changed = build()
    assert len(calls) == 2 * 3 and changed.stored.misses == 3
    hook.remove()
    # A disk that cannot take them (here: a file where the folder goes) only costs the saving.
    shutil.rmtree(samples.cache.root / "conditions")
    (samples.cache.root / "conditions").write_text("in the way")
    with caplog.at_level(logging.WARNING, logger="engines.train.recipes"):
        unkept = build()
    assert set(unkept.conds) == {"c0", "c1", "c2"} and caplog.text.count("not kept on disk") == 1
    for clip, conds in changed.conds.items():
        assert all(torch.equal(a, b) for a, b in zip(conds, unkept.conds[clip], strict=True))


def test_moved_labels_follow_the_frames() -> None:
    labels = torch.tensor([0, 0, 5, 5, 7, 0])
    assert moved_labels(labels, 2, 1).tolist() == [0, 0, 0, 0, 5, 5, 7, 0, 0]
    assert moved_labels(labels, -3, 0).tolist() == [5, 7, 0]
    assert moved_labels(labels, 0, 0).tolist() == labels.tolist()


def test_streamed_phones_are_what_a_stream_reads_at_each_window_end() -> None:
    from engines.models.aligner import PhoneAligner, PhoneAlignerConfig

    torch.manual_seed(0)
    aligner = PhoneAligner(PhoneAlignerConfig(layers=3)).eval()
    features = torch.randn(13, 320)
    streamed = StreamedPhones(aligner, features)
    past = aligner.receptive_field()[0]
    for start, frames in [(0, 13), (0, 4), (2, 9), (5, 3), (7, 20), (12, 1)]:
        cut = min(start + frames, 13)
        lo = max(0, start - past)  # a stream reads from the aligner's past before its window
        with torch.no_grad():
            read = aligner(features[None, lo:cut]).argmax(dim=-1)[0][4 * (start - lo):]
        assert torch.equal(streamed.window(start, frames), read), (start, frames)
    with torch.no_grad():
        whole = aligner(features[None]).argmax(dim=-1)[0]
    assert not torch.equal(streamed.window(0, 4), whole[:16])  # a cut reads its end differently
    # Committed hop by hop: a look-ahead as long as the aligner's reads as the whole clip does.
    assert torch.equal(streamed.committed(5, aligner.receptive_field()[1]), whole)
    committed = streamed.committed(5, 0)
    assert len(committed) == len(whole) and torch.equal(committed[:16], streamed.window(0, 5)[:16])
    assert not torch.equal(committed, whole)


def test_stream_cuts_is_a_share() -> None:
    assert AlignerOptions(stream_cuts=0.5).stream_cuts == 0.5
    with pytest.raises(recipes.RecipeError, match="stream_cuts"):
        AlignerOptions(stream_cuts=1.5)


@pytest.mark.skipif(not GRID_DEV.is_dir(), reason=f"{GRID_DEV} (real GRID clips) is absent")
def test_the_phone_aligner_trains_on_phone_timelines_and_records_its_reader(tmp_path: Path) -> None:
    from engines.models.aligner import PhoneAligner
    from engines.text.phones import N_CLASSES

    data = tmp_path / "grid" / "s1"
    data.mkdir(parents=True)
    videos = sorted(GRID_DEV.glob("*.mpg"))
    for video in videos:
        (data / video.name).symlink_to(video.resolve())
    # variants whose start and end moved: their labels move with them
    moving = {"condition_variants": 3, "augment": {"onset_trim": 2, "onset_hold": 3, "end_hold": 1,
                                                   "brightness": 0.2}, "stream_cuts": 0.5}
    config = smoke_config(tmp_path, "aligner", **moving)
    run = tmp_path / "runs" / "aligner"
    argv = ["aligner", "--config", str(config), "--data", str(data.parent), "--out", str(run),
            "--device", "cpu", "--no-progress"]
    assert main_train(argv) == 2  # GRID clips carry no phone timeline: said, not guessed

    timeline = [["_", 0.0, 0.3], ["b", 0.3, 0.06], ["I", 0.36, 0.08], ["n", 0.44, 0.1], ["_", 0.54, 0.4]]
    for video in videos:
        (data / video.name).with_suffix(".json").write_text(json.dumps({"phones": timeline}))
    assert main_train(argv) == 0
    raw = checkpoint.read(run / "latest.pt")
    assert raw["step"] == 4 and raw["data"]["lipreader"] == "lipreader"
    assert raw["data"]["features"] == "reader"
    assert raw["data"]["lipreader_digest"] == checkpoint.weights_digest(checkpoint.load_model("lipreader"))
    assert math.isfinite(raw["metrics"]["train_loss"]) and 0.0 <= raw["metrics"]["val_step_accuracy"] <= 1.0
    aligner = checkpoint.load(run / "latest.pt").model
    assert isinstance(aligner, PhoneAligner)
    assert aligner(torch.zeros(1, 5, 320)).shape == (1, 20, N_CLASSES)

    # The mel prior learns to speak the transcripts as that aligner times them.
    prior_run = tmp_path / "runs" / "prior"
    config = smoke_config(tmp_path, "prior", aligner=str(run / "latest.pt"))
    assert main_train(["prior", "--config", str(config), "--data", str(data.parent), "--out", str(prior_run),
                       "--device", "cpu", "--no-progress"]) == 0
    raw = checkpoint.read(prior_run / "latest.pt")
    assert raw["step"] == 4 and raw["data"]["aligner"] == str(run / "latest.pt")
    assert raw["data"]["aligner_digest"] == checkpoint.weights_digest(aligner)
    assert math.isfinite(raw["metrics"]["train_loss"]) and math.isfinite(raw["metrics"]["val_loss"])
    prior = checkpoint.load(prior_run / "latest.pt").model
    mel = prior(torch.zeros(1, 12, dtype=torch.long), torch.zeros(1, 128))
    assert mel.shape == (1, 80, 12) and mel.abs().max() <= 1.0

    # Or on the clips' true timelines, needing no aligner; and a vocoder fine-tuned to voice its mel.
    truth_run = tmp_path / "runs" / "prior-truth"
    config = smoke_config(tmp_path, "prior", aligner=str(run / "latest.pt"), timing="truth")
    assert main_train(["prior", "--config", str(config), "--data", str(data.parent), "--out", str(truth_run),
                       "--device", "cpu", "--no-progress"]) == 0
    truth_data = checkpoint.read(truth_run / "latest.pt")["data"]
    assert truth_data["timing"] == "truth" and "aligner_digest" not in truth_data  # tied to no aligner

    # Or on the aligner's phones as a stream reads them, tied to that aligner.
    stream_run = tmp_path / "runs" / "prior-stream"
    config = smoke_config(tmp_path, "prior", aligner=str(run / "latest.pt"), timing="stream")
    assert main_train(["prior", "--config", str(config), "--data", str(data.parent), "--out", str(stream_run),
                       "--device", "cpu", "--no-progress"]) == 0
    stream_data = checkpoint.read(stream_run / "latest.pt")["data"]
    assert stream_data["timing"] == "stream"
    assert stream_data["aligner_digest"] == checkpoint.weights_digest(aligner)
    vocoder_run = tmp_path / "runs" / "vocoder"
    config = smoke_config(tmp_path, "vocoder", prior=str(truth_run / "latest.pt"), prior_fraction=0.5)
    assert main_train(["vocoder", "--config", str(config), "--data", str(data.parent), "--out",
                       str(vocoder_run), "--device", "cpu", "--no-progress"]) == 0
    raw = checkpoint.read(vocoder_run / "latest.pt")
    assert raw["data"]["prior"] == str(truth_run / "latest.pt")
    truth_prior = checkpoint.load(truth_run / "latest.pt").model
    assert raw["data"]["prior_digest"] == checkpoint.weights_digest(truth_prior)
    assert math.isfinite(raw["metrics"]["train_loss"]) and math.isfinite(raw["metrics"]["val_total"])


def test_prior_segments_pair_each_audio_segment_with_the_prior_mel_of_the_same_frames(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from engines.audio.mel import PEAK
    from engines.audio.torch_mel import HOP

    audio = np.linspace(-1.0, 1.0, 8 * 4 * HOP, dtype=np.float32)  # 8 video frames: 32 mel frames
    sf.write(tmp_path / "a.wav", audio, 16000)
    clip = argparse.Namespace(id="a", audio=tmp_path / "a.wav")
    mel = torch.arange(80 * 32, dtype=torch.float32).reshape(80, 32) / 5000
    starts = set()
    for seed in range(6):
        item = PriorSegments([clip], {"a": mel}, 10, seed)[0]
        start = round(float(item["mel"][0, 0]) * 5000)  # the mel's first column says where it starts
        starts.add(start)
        torch.testing.assert_close(item["mel"], mel[:, start:start + 10])
        segment = audio[start * HOP:(start + 10) * HOP] * PEAK  # peak-normalised, as the cache's mel
        np.testing.assert_allclose(item["wav"].numpy(), segment, atol=1e-4)
    assert len(starts) > 1
    assert item["prior"]  # every segment hears the prior's mel by default
    heard = {bool(PriorSegments([clip], {"a": mel}, 10, seed, 0.5)[0]["prior"]) for seed in range(20)}
    assert heard == {True, False}  # half of them the audio's own
    item = PriorSegments([clip], {"a": mel}, 40, None)[0]  # longer than the clip: padded
    torch.testing.assert_close(item["mel"][:, :32], mel)
    assert (item["mel"][:, 32:] == -1).all() and (item["wav"][32 * HOP:] == 0).all()


if __name__ == "__main__":
    from tests.engines.test_train import worker as _worker  # classes named by module, not __main__

    sys.exit(_worker(sys.argv[1:]))


def test_the_speaker_adversary_learns_faces_while_pushing_the_features_the_other_way() -> None:
    torch.manual_seed(0)
    visual = torch.randn(4, 7, 16, requires_grad=True)
    lengths = torch.tensor([7, 5, 3, 1])
    target = torch.tensor([0, 1, 2, 0])
    adversary = SpeakerAdversary(16, 3, weight=0.5)
    F.cross_entropy(adversary(visual, lengths), target).backward()
    reversed_grad = visual.grad.clone()
    head_grads = [p.grad.clone() for p in adversary.parameters()]
    # The same classifier without the reversal: its own gradients alike, the features' −1/0.5 times.
    visual.grad = None
    adversary.zero_grad()
    mask = (torch.arange(7)[None] < lengths[:, None]).float()[..., None]
    F.cross_entropy(adversary.net((visual * mask).sum(1) / mask.sum(1)), target).backward()
    torch.testing.assert_close(reversed_grad, -0.5 * visual.grad)
    for mine, plain in zip(head_grads, adversary.parameters(), strict=True):
        torch.testing.assert_close(mine, plain.grad)
    assert (reversed_grad[1, 5:] == 0).all() and (reversed_grad[3, 1:] == 0).all()  # padding is no face


def test_the_phonetic_loss_is_zero_on_the_reference_and_trains_only_the_clean_estimate() -> None:
    from engines.models.asr import ASR, ASRConfig

    asr = ASR(ASRConfig(channels=16, num_layers=2)).eval().requires_grad_(False)
    loss = phonetic_loss(asr, 2.0)
    x0 = torch.randn(3, 80, 40)
    assert float(loss(x0.clone(), x0, torch.ones(3))) == pytest.approx(0.0, abs=1e-5)
    x0_hat = (x0 + torch.randn_like(x0)).requires_grad_(True)
    value = loss(x0_hat, x0, torch.tensor([1.0, 0.5, 0.0]))
    value.backward()
    assert float(value.detach()) > 0 and float(x0_hat.grad[:2].abs().sum()) > 0
    assert float(x0_hat.grad[2].abs().sum()) == 0.0  # ᾱ_t = 0: pure noise teaches nothing
    assert all(p.grad is None for p in asr.parameters())
