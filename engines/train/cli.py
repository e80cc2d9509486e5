"""`voxsight train` and `voxsight models`.

    voxsight train MODEL [--config FILE] [--data DIR] [--out DIR] [--resume] [--max-steps N] [--device D]
    torchrun --nproc_per_node N -m node train MODEL ...        (one process per GPU, or CPU processes)
    voxsight models [--folder DIR]
    voxsight models export CHECKPOINT NAME [--fp32] [--raw] [--metrics FILE.json] [--folder DIR]

train: MODEL is one of engines.train.recipes.RECIPES; the config (default engines/train/configs/
MODEL.yaml; a bare name such as smoke/lipreader is looked up there) has the sections model, train,
data, recipe (engines/train/recipes/, a module per model). Every checkpoint records this command, the
effective config, the data seed and the metrics. `--resume` continues from OUT/latest.pt.
models: the shipped weights (engines/weights, or $VOXSIGHT_WEIGHTS): name, kind, size, training data,
metrics. export: an inference-only copy of a training checkpoint as shipped weights NAME (EMA weights,
float16 unless --fp32, evaluation metrics from a JSON object merged in), within the size budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

CONFIGS = Path(__file__).resolve().parent / "configs"
SECTIONS = ("model", "train", "data", "recipe")


def config_path(model: str, given: str | None) -> Path:
    """The config file: as given, else a name under engines/train/configs, else MODEL's default."""
    if given is None:
        return CONFIGS / f"{model}.yaml"
    path = Path(given)
    if path.is_file():
        return path
    named = CONFIGS / (given if given.endswith((".yaml", ".yml")) else f"{given}.yaml")
    if named.is_file():
        return named
    raise FileNotFoundError(f"no training config {given!r} (nor {named})")


def read_config(path: Path) -> dict[str, dict[str, Any]]:
    sections = yaml.safe_load(path.read_text()) or {}
    if not isinstance(sections, dict):
        raise ValueError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    for name, value in sections.items():
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: section {name!r} must be a mapping")
    return {name: sections.get(name) or {} for name in SECTIONS}


def main_train(argv: list[str]) -> int:
    from engines.train import checkpoint, distributed, recipes
    from engines.train.loop import TrainConfig, Trainer

    parser = argparse.ArgumentParser(prog="voxsight train", description="Train a model from a YAML config.")
    parser.add_argument("model", choices=sorted(recipes.RECIPES))
    parser.add_argument("--config", help="config YAML, or a name under engines/train/configs "
                                         "(default: MODEL)")
    parser.add_argument("--data", help="clips to train on (overrides data.source)")
    parser.add_argument("--out", help="run folder for checkpoints and curves (overrides train.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt")
    parser.add_argument("--max-steps", type=int, help="train up to this step (overrides train.max_steps)")
    parser.add_argument("--device", help="auto, cpu, cuda (overrides train.device)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    ctx = None
    try:
        path = config_path(args.model, args.config)
        sections = read_config(path)
        defaults = {"out_dir": f"runs/{args.model}"}
        train = checkpoint.config_from_dict(TrainConfig, {**defaults, **sections["train"]})
        overrides = {"out_dir": args.out, "max_steps": args.max_steps, "device": args.device,
                     "progress": False if args.no_progress else None}
        train = dataclasses.replace(train, **{k: v for k, v in overrides.items() if v is not None})
        data = checkpoint.config_from_dict(recipes.DataOptions, sections["data"])
        if args.data:
            data = dataclasses.replace(data, source=args.data)
        ctx = distributed.setup(train.device)
        launcher = f"torchrun --nproc_per_node {ctx.world_size} -m node" if ctx.enabled else "voxsight"
        recipe = recipes.build(args.model, sections, data, train, ctx)
        effective = {"config_file": str(path), "model": sections["model"],
                     "train": dataclasses.asdict(train), "data": dataclasses.asdict(data),
                     "recipe": sections["recipe"]}
        trainer = Trainer(recipe.model, recipe.loss_fn, recipe.dataset, train,
                          model_config=recipe.model_config, kind=args.model, collate=recipe.collate,
                          validate=recipe.validate, aux=recipe.aux,
                          data_summary=recipe.data_summary, command=f"{launcher} train {shlex.join(argv)}",
                          extra={"config": effective})
        metrics = trainer.fit(resume=args.resume)
    except (ValueError, OSError, FloatingPointError) as exc:
        print(f"voxsight train: {exc}", file=sys.stderr)
        return 2
    finally:
        if ctx is not None:
            distributed.teardown(ctx)
    if ctx.main:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
        print(f"{args.model}: step {trainer.step} in {train.out_dir} (latest.pt, curves.csv, curves.png); "
              f"{shown}")
    return 0


# ---------------------------------------------------------------- models


def _data_text(summary: dict[str, Any]) -> str:
    if not summary:
        return "-"
    text = "+".join(Path(folder).name for folder in str(summary.get("source", "?")).split(","))
    if "split" in summary:
        text += f"/{summary['split']}"
    facts = [f"{summary[k]} {k}" for k in ("clips", "speakers") if k in summary]
    hours = summary.get("hours")
    if isinstance(hours, (int, float)):
        facts.append(f"{hours:.2f} h" if hours >= 1 else f"{60 * hours:.1f} min")
    return f"{text} ({', '.join(facts)})" if facts else text


def _metrics_text(metrics: dict[str, Any]) -> str:
    shown = [f"{k} {v:.4g}" for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(shown) or "-"


def models_table(folder: Path | None = None) -> str:
    """The shipped weights as a table, and their total against the budget."""
    from engines.train import checkpoint

    models = checkpoint.shipped(folder)
    where = folder or checkpoint.weights_dir()
    if not models:
        return f"no shipped weights yet (in {where})"
    rows = [("name", "kind", "MB", "training data", "metrics")]
    rows += [(m.name, m.kind, f"{m.size_mb:.2f}", _data_text(m.data_summary), _metrics_text(m.metrics))
             for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in rows]
    total = checkpoint.shipped_size_mb(folder)
    lines.append(f"{len(models)} model(s), {total:.1f} MB of the {checkpoint.SHIPPED_LIMIT_MB:g} MB budget "
                 f"({where})")
    return "\n".join(lines)


def main_models(argv: list[str]) -> int:
    import torch

    from engines.train import checkpoint

    if argv[:1] == ["export"]:
        parser = argparse.ArgumentParser(prog="voxsight models export",
                                         description="Ship a training checkpoint as inference-only weights.")
        parser.add_argument("checkpoint", type=Path)
        parser.add_argument("name", help="shipped name (the models load it by this name)")
        parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16)")
        parser.add_argument("--raw", action="store_true", help="the trained weights, not their EMA")
        parser.add_argument("--metrics", type=Path, help="JSON file: evaluation metrics to record")
        parser.add_argument("--folder", type=Path, help="weights folder (default engines/weights)")
        args = parser.parse_args(argv[1:])
        try:
            metrics = json.loads(args.metrics.read_text()) if args.metrics else None
            if metrics is not None and not isinstance(metrics, dict):
                raise ValueError(f"{args.metrics}: expected a JSON object of metrics")
            dst = checkpoint.export(args.checkpoint, checkpoint.shipped_path(args.name, args.folder),
                                    dtype=torch.float32 if args.fp32 else torch.float16, use_ema=not args.raw,
                                    metrics=metrics)
        except (ValueError, OSError) as exc:
            print(f"voxsight models export: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {dst} ({dst.stat().st_size / checkpoint.MB:.1f} MB)")
        return 0
    parser = argparse.ArgumentParser(prog="voxsight models", description="List the shipped model weights "
                                     "(`voxsight models export -h`: ship a trained checkpoint).")
    parser.add_argument("--folder", type=Path, help="weights folder (default engines/weights)")
    args = parser.parse_args(argv)
    print(models_table(args.folder))
    return 0

