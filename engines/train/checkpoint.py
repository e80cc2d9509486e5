"""Checkpoints: one torch file per model that says what it is and how it was made.

A checkpoint is a dict of plain values and tensors (so `torch.load(weights_only=True)` reads it and no
pickled object runs code on load):

    format          FORMAT
    kind            what the model is for ("lipreader", "melgen", ...)
    model_class     "engines.models.melgen.MelGen": built as model_class(config)
    config_class    "engines.models.melgen.MelGenConfig"
    config          the config dataclass as a dict (nested dataclasses as dicts)
    state_dict      the weights
    conventions     engines.conventions.current() when it was saved (mel, fps, ROI, ...)
    data            a summary of the training data (source, clips, speakers, corpus seed, ...)
    metrics         {name: value}: training losses, validation and evaluation results
    command         the command line that trained it
    data_seed       the seed of the data order and of every random draw in training
    step            optimisation steps taken
    git_commit      the code's commit ("-dirty" when the work tree had changes), or None
    created, torch_version
    extra           anything else, plain values only
    optimizer       (training checkpoints only) the optimizer's state dict, for resuming
    training        (training checkpoints only) the trainer's resume state (EMA weights, its config)

`export` turns a training checkpoint into a shipped one (EMA weights, no optimizer, float16 by default):
all shipped weights together must stay within SHIPPED_LIMIT_MB. Shipped weights live in
engines/weights/NAME.pt (or $VOXSIGHT_WEIGHTS) and are loaded by name.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import logging
import os
import subprocess
import sys
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines import conventions

log = logging.getLogger(__name__)

FORMAT = "voxsight-checkpoint/1"
MODEL_PACKAGES = ("engines",)  # model and config classes are only ever imported from these packages
WEIGHTS_ENV = "VOXSIGHT_WEIGHTS"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED_LIMIT_MB = 40.0
MB = 1e6


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint: the message says why."""


@dataclass
class Checkpoint:
    model: nn.Module
    config: Any
    kind: str
    step: int
    metrics: dict[str, Any]
    data_summary: dict[str, Any]
    command: str
    data_seed: int | None
    git_commit: str | None
    created: str
    torch_version: str
    conventions: dict[str, Any]
    extra: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class ShippedModel:
    name: str
    size_mb: float
    kind: str
    data_summary: dict[str, Any]
    metrics: dict[str, Any]


# ---------------------------------------------------------------- plain values


def plain(value: Any, where: str = "value") -> Any:
    """`value` as plain types only (dict with str keys, list, tuple, str, int, float, bool, None);
    numpy scalars and paths are converted, anything else is refused with its location."""
    if value is None:
        return value
    for kind in (bool, int, float, str):  # subclasses (torch.__version__ is one) would pickle as objects
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where}: {type(value).__name__} is not a plain value (a checkpoint holds no objects)")


def config_dict(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"a model config must be a dataclass instance, got {type(config).__name__}")
    return plain(dataclasses.asdict(config), "config")


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass; fields the dict lacks take their defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CheckpointError(f"the checkpoint's config has fields {unknown} that {cls.__qualname__} lacks: "
                              "it was written by other code")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kind = hints.get(name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = config_from_dict(kind, value)
        elif typing.get_origin(kind) is tuple:
            value = _tuples(value)  # YAML and JSON have lists only: keep configs equal to their defaults
        kwargs[name] = value
    return cls(**kwargs)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str, packages: tuple[str, ...] = MODEL_PACKAGES) -> type:
    """The class at `path`, imported only from `packages` (a checkpoint must not name arbitrary code)."""
    module_name, _, name = path.rpartition(".")
    if not any(module_name == p or module_name.startswith(p + ".") for p in packages):
        raise CheckpointError(f"refusing to import {path!r}: model classes come from {', '.join(packages)}")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint needs {path}, which this code base lacks ({exc})") from exc
    if not isinstance(cls, type):
        raise CheckpointError(f"{path} is not a class")
    return cls


@cache
def git_commit() -> str | None:
    """HEAD of the repository holding this code, "-dirty" when tracked files changed; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def command_line() -> str:
    """This process's command line, as a shell would take it."""
    import shlex

    return shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])


# ---------------------------------------------------------------- files


def write_atomic(payload: dict[str, Any], path: Path | str) -> Path:
    """torch.save to a temporary file beside `path`, flushed to disk, then renamed over it: a reader (or
    a resume after a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save(path: Path | str, model: nn.Module, config: Any, *, kind: str, metrics: dict[str, Any],
         data_summary: dict[str, Any], command: str, data_seed: int | None, step: int,
         optimizer: torch.optim.Optimizer | None = None, training: dict[str, Any] | None = None,
         extra: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint atomically (module docstring); `training` is the trainer's resume state."""
    meta = plain({
        "format": FORMAT,
        "kind": kind,
        "model_class": class_path(model),
        "config_class": class_path(config),
        "config": config_dict(config),
        "conventions": conventions.current(),
        "data": data_summary,
        "metrics": metrics,
        "command": command,
        "data_seed": data_seed,
        "step": step,
        "git_commit": git_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "extra": extra or {},
    }, "checkpoint")
    payload = {**meta, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if training is not None:
        payload["training"] = training
    return write_atomic(payload, path)


def read(path: Path | str, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """The raw checkpoint dict (plain values and tensors), checked to be one of ours."""
    path = Path(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a voxsight checkpoint (expected format {FORMAT!r})")
    return raw


def build_model(raw: dict[str, Any], packages: tuple[str, ...] = MODEL_PACKAGES) -> tuple[nn.Module, Any]:
    """The model (eval mode, weights loaded) and its config from a raw checkpoint dict; a training
    checkpoint that keeps an EMA gives the EMA weights, as its validation and its export do."""
    config = config_from_dict(import_class(raw["config_class"], packages), raw["config"])
    model = import_class(raw["model_class"], packages)(config)
    model.load_state_dict(weights(raw))  # float16 exports load as float32
    return model.eval(), config


def weights(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A raw checkpoint's model weights: the EMA's when a training checkpoint keeps one."""
    ema = (raw.get("training") or {}).get("ema")
    return ema if ema is not None else raw["state_dict"]


def load(path: Path | str, map_location: str | torch.device = "cpu", *,
         packages: tuple[str, ...] = MODEL_PACKAGES) -> Checkpoint:
    """A checkpoint with its model rebuilt from the recorded classes; warns when the media conventions it
    was trained under differ from this code's (its inputs would be wrong)."""
    path = Path(path)
    raw = read(path, map_location)
    diff = conventions.differences(raw["conventions"])
    if diff:
        log.warning("%s was trained under other media conventions: %s", path,
                    ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in diff.items()))
    model, config = build_model(raw, packages)
    return Checkpoint(model=model.to(map_location), config=config, kind=raw["kind"], step=raw["step"],
                      metrics=raw["metrics"], data_summary=raw["data"], command=raw["command"],
                      data_seed=raw["data_seed"], git_commit=raw["git_commit"], created=raw["created"],
                      torch_version=raw["torch_version"], conventions=raw["conventions"], extra=raw["extra"],
                      path=path)


# ---------------------------------------------------------------- shipped weights


def weights_dir() -> Path:
    """Where shipped weights live: $VOXSIGHT_WEIGHTS, else the package's engines/weights."""
    return Path(os.environ.get(WEIGHTS_ENV) or WEIGHTS_DIR)


def shipped_path(name: str, folder: Path | None = None) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad model name {name!r}")
    return (folder or weights_dir()) / f"{name}.pt"


def load_shipped(name: str, map_location: str | torch.device = "cpu",
                 folder: Path | None = None) -> Checkpoint:
    """The shipped checkpoint NAME (engines/weights/NAME.pt)."""
    path = shipped_path(name, folder)
    if not path.is_file():
        known = ", ".join(m.name for m in shipped(folder)) or "none"
        raise FileNotFoundError(f"no shipped weights named {name!r} in {path.parent} (shipped: {known})")
    return load(path, map_location)


def load_ref(ref: str | Path, kind: str | None = None,
             map_location: str | torch.device = "cpu") -> Checkpoint:
    """A checkpoint given as a file path or as the name of shipped weights; with `kind`, it must hold a
    model of that kind."""
    ckpt = load(ref, map_location) if Path(ref).is_file() else load_shipped(str(ref), map_location)
    if kind is not None and ckpt.kind != kind:
        raise CheckpointError(f"{ref} holds a {ckpt.kind!r} model, not a {kind!r}")
    return ckpt


def weights_digest(model: nn.Module, exact: bool = False) -> str:
    """A short hash of a model's weights at float16 precision, so a training checkpoint and its float16
    export hash alike: a MelGen records the digest of the lip reader whose features it was trained on.
    `exact` hashes every bit instead (a key for stored outputs of the model)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        value = tensor.detach().cpu()
        h.update((value.half() if value.is_floating_point() and not exact else value).numpy().tobytes())
    return h.hexdigest()[:16]


def load_model(name: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of the shipped checkpoint NAME, in eval mode."""
    return load_shipped(name, map_location).model


def shipped(folder: Path | None = None) -> list[ShippedModel]:
    """Every shipped checkpoint, by name; files that are not checkpoints are logged and skipped."""
    folder = folder or weights_dir()
    models = []
    for path in sorted(folder.glob("*.pt")):
        try:
            raw = read(path, mmap=True)
        except CheckpointError as exc:
            log.warning("skipping %s", exc)
            continue
        models.append(ShippedModel(path.stem, path.stat().st_size / MB, raw["kind"], raw["data"],
                                   raw["metrics"]))
    return models


def shipped_size_mb(folder: Path | None = None) -> float:
    return sum(p.stat().st_size for p in (folder or weights_dir()).glob("*.pt")) / MB


def check_shipped_size(folder: Path | None = None, limit_mb: float = SHIPPED_LIMIT_MB) -> float:
    """The total size of the shipped weights in MB; ValueError when it is over `limit_mb`."""
    total = shipped_size_mb(folder)
    if total > limit_mb:
        raise ValueError(f"shipped weights total {total:.1f} MB, over the {limit_mb:g} MB budget")
    return total


def export(src: Path | str, dst: Path | str, *, dtype: torch.dtype = torch.float16, use_ema: bool = True,
           metrics: dict[str, Any] | None = None, limit_mb: float | None = SHIPPED_LIMIT_MB) -> Path:
    """An inference-only copy of a (training) checkpoint: the EMA weights when it has them, floating
    tensors cast to `dtype`, no optimizer or resume state; `metrics` (e.g. evaluation results) are added
    to the recorded ones. With `limit_mb`, refuses to make the folder of `dst` exceed that total."""
    src, dst = Path(src), Path(dst)
    raw = read(src)
    ema = (raw.get("training") or {}).get("ema")
    weights = ema if use_ema and ema is not None else raw["state_dict"]
    out = {k: v for k, v in raw.items() if k not in ("optimizer", "training")}
    out["state_dict"] = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    out["metrics"] = {**raw["metrics"], **plain(metrics or {}, "metrics")}
    out["extra"] = {**raw["extra"], "exported_from": src.name, "weights": "ema" if weights is ema else "raw",
                    "dtype": str(dtype).removeprefix("torch.")}
    tmp = write_atomic(out, dst.with_name(f".{dst.name}.export"))
    try:
        if limit_mb is not None:
            others = sum(p.stat().st_size for p in dst.parent.glob("*.pt") if p.name != dst.name)
            total = (others + tmp.stat().st_size) / MB
            if total > limit_mb:
                raise ValueError(f"exporting {dst.name} would make the shipped weights {total:.1f} MB, "
                                 f"over the {limit_mb:g} MB budget")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
