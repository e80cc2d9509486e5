"""A generic resumable trainer: any model, any loss function, any map-style data set.

    trainer = Trainer(model, loss_fn, dataset, TrainConfig(...), model_config=cfg, kind="lipreader")
    metrics = trainer.fit(resume=True)

`loss_fn(batch, model) -> (loss, logs)`: the batch as the data loader collates it (already on the
device), the model itself (not a wrapper: the function may call any of its methods); `logs` are extra
floats to average and log. AdamW, linear warm-up then a constant or cosine learning rate, gradient-norm
clipping, an optional EMA of the weights (validation, checkpoints' exports and metrics use it).

Determinism and resuming: the data order of epoch e is a permutation drawn from (seed, e), and before
step s every random generator (torch, CUDA, numpy, random) of process r is seeded from (seed, r, s). So
a run's result is a function of its config alone, and a run resumed from a checkpoint at step s continues
exactly as the uninterrupted run did, with no generator state to save. (A data set that draws random
numbers itself, in its own generator, is repeatable across a resume only if it draws them from its
item index and `set_epoch(epoch)`, which the trainer calls when the data set has it.)

Files in `out_dir` (written by process 0 only): latest.pt and step-NNNNNNN.pt checkpoints (atomic;
`keep_checkpoints` newest step files kept), curves.csv and curves.png.

Under torchrun each process trains on its slice of every global batch and the gradients are averaged
(engines.train.distributed).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from engines.params import param
from engines.train import checkpoint, distributed
from engines.train.curves import Curves

log = logging.getLogger(__name__)

LossFn = Callable[[Any, nn.Module], tuple[torch.Tensor, Mapping[str, Any]]]
Validate = Callable[[nn.Module], Mapping[str, float]]
LATEST = "latest.pt"


@dataclass
class TrainConfig:
    batch_size: int = param(8, "samples per process and step (a global batch is this × processes)")
    lr: float = param(2e-4, "peak learning rate (AdamW)")
    weight_decay: float = param(0.0, "AdamW weight decay")
    betas: tuple[float, float] = param((0.9, 0.999), "AdamW betas")
    warmup_steps: int = param(0, "steps of linear learning-rate warm-up")
    schedule: str = param("constant", "learning rate after warm-up", choices=("constant", "cosine"))
    max_steps: int = param(1000, "optimisation steps to train for")
    grad_clip: float = param(1.0, "clip the gradient norm to this (0: no clipping)")
    ema_decay: float = param(0.0, "decay of the weights' exponential moving average (0: no EMA)")
    log_every: int = param(10, "steps per row of the loss curves")
    val_every: int = param(0, "steps between validations (0: at the end only)")
    ckpt_every: int = param(500, "steps between checkpoints (and at the end)")
    keep_checkpoints: int = param(3, "step-numbered checkpoints to keep besides latest.pt (0: all)")
    num_workers: int = param(0, "data-loading processes per training process")
    seed: int = param(0, "seed of the data order and of every random draw in training")
    init_from: str = param("", "start a new run from these weights (a checkpoint path or shipped name of the "
                               "same model config, of a shallower MelGen, or of a lip reader without "
                               "mean_window), to fine-tune them; optimizer and step start afresh")
    out_dir: str = param("runs/train", "folder of checkpoints and curves")
    device: str = param("auto", "auto (CUDA when present), cpu, cuda, cuda:N")
    precision: str = param("fp32", "autocast precision of the forward pass", choices=("fp32", "bf16"))
    progress: bool = param(True, "show a progress bar")


class EMA:
    """An exponential moving average of a model's weights, kept as a frozen copy of the model (its
    buffers copied as they are); the decay ramps up over the first steps ((1 + n) / (10 + n))."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _seed_worker(_: int) -> None:
    """Data-loader workers seed numpy and random from their torch seed (itself drawn from the loader's
    seeded generator), so they neither repeat each other nor depend on the parent's state."""
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`; everything else unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not isinstance(batch, str):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Trainer:
    """See the module docstring. A checkpoint's model is rebuilt as `type(model)(model_config)`
    (`model_config` defaults to `model.config`, `kind` to the class name). `validate(model) -> {name:
    value}` runs on process 0 (on the EMA model when there is one); its values are logged as val_NAME.
    `aux` is trained alongside the model but is not part of it (a classification head the loss function
    holds): optimised, saved for resuming, never exported. `extra` (plain values) is recorded in every
    checkpoint. `on_step(trainer)` runs after every step (tests use it to stop a run abruptly)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, dataset: Dataset, config: TrainConfig, *,
                 model_config: Any = None, kind: str | None = None,
                 collate: Callable[[list], Any] | None = None, validate: Validate | None = None,
                 aux: nn.Module | None = None,
                 data_summary: dict[str, Any] | None = None, command: str | None = None,
                 extra: dict[str, Any] | None = None,
                 on_step: Callable[[Trainer], None] | None = None) -> None:
        self.config = config
        self.ctx = distributed.setup(config.device)
        self.model = model.to(self.ctx.device)
        self.aux = aux.to(self.ctx.device) if aux is not None else None
        self.model_config = model_config if model_config is not None else model.config
        self.kind = kind or type(model).__name__.lower()
        self.loss_fn = loss_fn
        self.dataset = dataset
        self.collate = collate
        self.validate = validate
        self.data_summary = data_summary or {}
        self.command = command or checkpoint.command_line()
        self.extra = extra or {}
        self.on_step = on_step
        self.out_dir = Path(config.out_dir)
        trained = [self.model, *([self.aux] if self.aux is not None else [])]
        self.params = [p for m in trained for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        for m in trained:
            distributed.broadcast_module(m, self.ctx)
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.curves = Curves(self.out_dir / "curves.csv")

    # ------------------------------------------------------------ state

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.model

    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.schedule == "cosine":
            progress = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
            return c.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return c.lr

    def save(self, path: Path) -> Path:
        """A training checkpoint of the current state (process 0 only)."""
        training = {"ema": _cpu_state(self.ema.model) if self.ema is not None else None,
                    "aux": _cpu_state(self.aux) if self.aux is not None else None}
        # How it was trained stays with the weights, exported or not.
        extra = {**self.extra, "train_config": dataclasses.asdict(self.config),
                 "world_size": self.ctx.world_size}
        return checkpoint.save(path, self.model, self.model_config, kind=self.kind, metrics=self.metrics,
                               data_summary=self.data_summary, command=self.command,
                               data_seed=self.config.seed, step=self.step, optimizer=self.optimizer,
                               training=training, extra=extra)

    def restore(self, path: Path) -> None:
        """Continue from a training checkpoint: weights, optimizer, EMA, aux, step, metrics."""
        raw = checkpoint.read(path, self.ctx.device)
        if raw["kind"] != self.kind:
            raise checkpoint.CheckpointError(f"{path} holds a {raw['kind']!r} model, not {self.kind!r}")
        if raw["config"] != checkpoint.config_dict(self.model_config):
            raise checkpoint.CheckpointError(f"{path} was trained with another model config; "
                                             "use a new --out folder for a new model")
        if "optimizer" not in raw or "training" not in raw:
            raise checkpoint.CheckpointError(f"{path} is an exported checkpoint: it cannot be resumed")
        before = raw["extra"]["train_config"]
        now = dataclasses.asdict(self.config)
        changed = [k for k in ("batch_size", "seed") if before.get(k) != now[k]]
        if raw["extra"]["world_size"] != self.ctx.world_size:
            changed.append("process count")
        if changed:
            log.warning("resuming with another %s than the run began with: the data order changes",
                        ", ".join(changed))
        self.model.load_state_dict(raw["state_dict"])
        self.optimizer.load_state_dict(raw["optimizer"])
        if self.ema is not None:
            ema = raw["training"]["ema"]
            self.ema.model.load_state_dict(ema if ema is not None else raw["state_dict"])
        if self.aux is not None:
            if raw["training"]["aux"] is None:
                raise checkpoint.CheckpointError(f"{path} has no state for the auxiliary module")
            self.aux.load_state_dict(raw["training"]["aux"])
        self.step = int(raw["step"])
        self.metrics = dict(raw["metrics"])
        self.curves.truncate(self.step)

    def start_from(self, ref: str) -> None:
        """Load the weights of a trained model of the same kind and config (fine-tuning)."""
        path = Path(ref) if Path(ref).is_file() else checkpoint.shipped_path(ref)
        raw = checkpoint.read(path, self.ctx.device)
        if raw["kind"] != self.kind:
            raise checkpoint.CheckpointError(f"{ref} holds a {raw['kind']!r} model, not {self.kind!r}")
        weights = checkpoint.weights(raw)
        theirs = checkpoint.config_dict(checkpoint.config_from_dict(type(self.model_config), raw["config"]))
        if theirs != checkpoint.config_dict(self.model_config):
            mismatch = f"{ref} was trained with another model config than this run's"
            # some models take another config's weights as a starting point (MelGen: a shallower stack)
            adopt = getattr(self.model, "adopt_weights", None)
            if adopt is None:
                raise checkpoint.CheckpointError(mismatch)
            try:
                weights = adopt(weights, theirs)
            except ValueError as e:
                raise checkpoint.CheckpointError(f"{mismatch} ({e})") from e
        for model in (self.model, *([self.ema.model] if self.ema is not None else [])):
            model.load_state_dict(weights)
        log.info("starting from the weights of %s (step %d)", ref, raw["step"])

    def _checkpoint(self) -> None:
        if self.ctx.main:
            numbered = self.out_dir / f"step-{self.step:07d}.pt"
            self.save(numbered)
            _replace_with_link(numbered, self.out_dir / LATEST)
            self._prune()
            self.curves.write()
            self.curves.plot(self.out_dir / "curves.png", f"{self.kind}: {self.out_dir.name}")
        distributed.barrier(self.ctx)

    def _prune(self) -> None:
        keep = self.config.keep_checkpoints
        if keep > 0:
            for old in sorted(self.out_dir.glob("step-*.pt"))[:-keep]:
                old.unlink()

    # ------------------------------------------------------------ training

    def _loader(self, epoch: int, start: int) -> DataLoader:
        c = self.config
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sampler = distributed.ShardedBatchSampler(len(self.dataset), c.batch_size, self.ctx, c.seed, epoch,
                                                  start)
        # The loader's own generator (not the global one) seeds its workers, so building a loader
        # mid-epoch on resume draws nothing from the generators the training steps use.
        generator = torch.Generator().manual_seed(distributed.derive_seed(c.seed, self.ctx.rank, epoch))
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=c.num_workers,
                          collate_fn=self.collate, generator=generator, worker_init_fn=_seed_worker,
                          pin_memory=self.ctx.device.type == "cuda")

    def _train_step(self, batch: Any) -> dict[str, float]:
        c = self.config
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = to_device(batch, self.ctx.device)
        self.model.train()
        if self.aux is not None:
            self.aux.train()
        with torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16"):
            loss, logs = self.loss_fn(batch, self.model)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.kind}: the loss is {loss.item()} at step {self.step + 1}; "
                                     f"the last good checkpoint is {self.out_dir / LATEST}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(self.params, self.ctx)
        clip = c.grad_clip if c.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": lr,
                **{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in logs.items()}}

    def _log(self, sums: dict[str, float], count: int, bar: Any) -> None:
        means = distributed.mean_over_processes({k: v / count for k, v in sums.items()}, self.ctx)
        self.metrics.update({f"train_{k}": v for k, v in means.items() if k not in ("lr", "grad_norm")})
        if self.ctx.main:
            self.curves.add(self.step, means)
            self.curves.write()
            bar.set_postfix(loss=f"{means['loss']:.4g}", refresh=False)

    def _validate(self) -> None:
        if self.ctx.main and self.validate is not None:
            with torch.no_grad():
                values = {f"val_{k}": float(v) for k, v in self.validate(self.eval_model.eval()).items()}
            self.metrics.update(values)
            self.curves.add(self.step, values)
            log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def fit(self, resume: bool = False) -> dict[str, float]:
        """Train up to `max_steps` (continuing from out_dir/latest.pt when `resume` and it exists);
        returns the last metrics."""
        from tqdm import tqdm

        c = self.config
        latest = self.out_dir / LATEST
        if resume and latest.is_file():
            self.restore(latest)
            log.info("resumed %s from step %d", latest, self.step)
        else:
            if latest.is_file() or self.curves.rows:
                if not resume:
                    raise FileExistsError(f"{self.out_dir} holds a run already: resume it or use another "
                                          "folder")
                self.curves.truncate(0)  # the run stopped before its first checkpoint: it starts over
            if c.init_from:
                self.start_from(c.init_from)
        per_epoch = len(self.dataset) // (c.batch_size * self.ctx.world_size)
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=c.max_steps, initial=self.step, unit="step", desc=self.kind, dynamic_ncols=True,
                   disable=not (c.progress and self.ctx.main))
        try:
            while self.step < c.max_steps:
                epoch, start = divmod(self.step, max(1, per_epoch))
                for batch in self._loader(epoch, start):
                    seed_everything(distributed.derive_seed(c.seed, self.ctx.rank, self.step))
                    for k, v in self._train_step(batch).items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    self.step += 1
                    bar.update()
                    last = self.step >= c.max_steps
                    # Checkpoint steps are logged too, so a resumed run's rows match the uninterrupted one's.
                    if last or self.step % c.log_every == 0 or self.step % c.ckpt_every == 0:
                        self._log(sums, count, bar)
                        sums, count = {}, 0
                    if last or (c.val_every and self.step % c.val_every == 0):
                        self._validate()
                    if last or self.step % c.ckpt_every == 0:
                        self._checkpoint()
                    if self.on_step is not None:
                        self.on_step(self)
                    if last:
                        break
        finally:
            bar.close()
        return dict(self.metrics)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _replace_with_link(src: Path, dst: Path) -> None:
    """Make `dst` the same file as `src` atomically (a hard link renamed into place; a copy where the
    file system has no hard links)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        import shutil

        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)

