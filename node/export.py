"""`voxsight export` and `voxsight engines`: the models' ONNX graphs and TensorRT engines.

    voxsight export [--out DIR] [--models lipreader,melgen,vocoder,asr,aligner,prior]
                    [--weights MODEL=NAME_OR_PATH ...]
                    [--checkpoint MODEL=PATH ...] [--opset N] [--tolerance 1e-3]
    voxsight engines build [--precision fp32|fp16] [--device cuda[:N]] [--cache DIR] [--models ...]
                           [--weights ...] [--checkpoint ...] [--batch N] [--frames N] [--max-batch N]
                           [--max-frames N]
    voxsight engines list [--cache DIR]

export: writes DIR/GRAPH.onnx for every graph of the chosen models (engines.synth.graphs: a lip reader
gives `frame`, `temporal` and `reader`, melgen `denoiser`, then `vocoder`, `asr`, `aligner`, `prior`) and
runs each in ONNX Runtime against PyTorch, at the example shape and at another batch and length,
printing the largest absolute difference per output; exit 1 if one exceeds the tolerance.
Weights: each model's shipped weights by its name (engines/weights/MODEL.pt); `--weights MODEL=REF` for
other shipped weights or a checkpoint file, `--checkpoint MODEL=PATH` for a training checkpoint (its
trained weights). Missing weights: exit 1, naming them.
engines build: TensorRT engines of the same graphs, built into the engine cache (~/.cache/voxsight/
engines, or $VOXSIGHT_CACHE/engines, or --cache), or found there; exit 1 where TensorRT cannot run.
engines list: the cache's entries (ONNX files and engines).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from engines.synth.graphs import MODEL_GRAPHS, GraphSizes

PARITY_SIZES = GraphSizes(batch=3, frames=23)  # a second shape, so a graph frozen to its example fails


def _model_list(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_GRAPHS]
    if unknown or not models:
        raise argparse.ArgumentTypeError(f"models are among {', '.join(MODEL_GRAPHS)}, got {text!r}")
    return models


def _assignment(text: str) -> tuple[str, str]:
    model, sep, ref = text.partition("=")
    if not sep or not ref or model not in MODEL_GRAPHS:
        raise argparse.ArgumentTypeError(f"expected MODEL=REF with MODEL among {', '.join(MODEL_GRAPHS)}, "
                                         f"got {text!r}")
    return model, ref


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=_model_list, default=list(MODEL_GRAPHS),
                        help=f"comma-separated, among {','.join(MODEL_GRAPHS)} (default: all)")
    parser.add_argument("--weights", type=_assignment, action="append", default=[],
                        metavar="MODEL=NAME_OR_PATH",
                        help="shipped weights by name, or a checkpoint file (default: the model's name)")
    parser.add_argument("--checkpoint", type=_assignment, action="append", default=[],
                        metavar="MODEL=PATH", help="a training checkpoint for MODEL")


class MissingWeights(ValueError):
    """Models whose weights could not be loaded: the message names each and why."""


def load_models(models: Sequence[str], weights: dict[str, str],
                checkpoints: dict[str, str]) -> dict[str, nn.Module]:
    """{kind: model in eval mode}; MissingWeights naming every model that could not be loaded."""
    from engines.train import checkpoint

    loaded, problems = {}, []
    for model in models:
        try:
            if model in checkpoints:
                path = Path(checkpoints[model])
                if not path.is_file():
                    raise FileNotFoundError(f"no checkpoint file {path}")
                ckpt = checkpoint.load(path)
            else:
                ref = weights.get(model, model)
                ckpt = checkpoint.load(ref) if Path(ref).is_file() else checkpoint.load_shipped(ref)
        except (OSError, ValueError) as exc:  # CheckpointError is a ValueError
            problems.append(f"{model}: {exc}")
            continue
        if ckpt.kind != model:
            problems.append(f"{model}: {ckpt.path} holds a {ckpt.kind!r} model")
            continue
        loaded[model] = ckpt.model.eval()
    if problems:
        raise MissingWeights("missing or unusable weights:\n  " + "\n  ".join(problems) + "\n(train and ship "
                             "them with `voxsight train MODEL` and `voxsight models export`, or pass "
                             "--weights MODEL=NAME_OR_PATH or --checkpoint MODEL=PATH)")
    return loaded


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------- export


def main_export(argv: list[str]) -> int:
    from engines.backends.base import BackendOptions
    from engines.backends.onnx_backend import export_onnx, parity
    from engines.synth.graphs import DEFAULT_SIZES, model_graphs

    parser = argparse.ArgumentParser(prog="voxsight export", description="Write the models' ONNX graphs "
                                     "and check them in ONNX Runtime against PyTorch.")
    add_model_args(parser)
    parser.add_argument("--out", type=Path, default=Path("out/onnx"), help="folder for GRAPH.onnx")
    parser.add_argument("--opset", type=int, default=BackendOptions.opset, help="ONNX opset")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest max |torch − onnxruntime|")
    args = parser.parse_args(argv)
    try:
        loaded = load_models(args.models, dict(args.weights), dict(args.checkpoint))
    except MissingWeights as exc:
        print(f"voxsight export: {exc}", file=sys.stderr)
        return 1
    rows, failed = [("graph", "output", "max |diff|", "")], False
    for kind, model in loaded.items():
        others = model_graphs(kind, model, PARITY_SIZES)
        for spec, other in zip(model_graphs(kind, model), others, strict=True):
            try:
                path = export_onnx(spec, args.out / f"{spec.name}.onnx", args.opset)
                diffs = parity(spec, path, [spec.example_inputs, other.example_inputs])
            except Exception as exc:  # one graph's failure is reported in its row; the others still export
                rows.append((spec.name, "-", "-", f"FAIL: {type(exc).__name__}: {exc}"))
                failed = True
                continue
            for output, diff in diffs.items():
                ok = diff <= args.tolerance
                failed |= not ok
                rows.append((spec.name, output, f"{diff:.2e}", "ok" if ok else "FAIL"))
    print(_table(rows))
    print(f"ONNX graphs (opset {args.opset}) in {args.out}; ONNX Runtime (CPU) vs PyTorch at batch "
          f"{DEFAULT_SIZES.batch} × {DEFAULT_SIZES.frames} frames and batch {PARITY_SIZES.batch} × "
          f"{PARITY_SIZES.frames} frames, tolerance {args.tolerance:g}: "
          f"{'FAILED' if failed else 'all within'}")
    return 1 if failed else 0


# ---------------------------------------------------------------- engines


def _engines_build(argv: list[str]) -> int:
    import torch

    from engines.backends.base import PRECISIONS, BackendError, BackendOptions, default_cache_dir
    from engines.backends.tensorrt_backend import check, load
    from engines.synth.graphs import model_graphs

    parser = argparse.ArgumentParser(prog="voxsight engines build", description="Build TensorRT engines "
                                     "of the models' graphs into the cache.")
    add_model_args(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    parser.add_argument("--cache", type=Path, help="engine cache (default: ~/.cache/voxsight/engines)")
    parser.add_argument("--opset", type=int, default=BackendOptions.opset)
    for field in dataclasses.fields(GraphSizes):  # the TensorRT profiles' sizes
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=field.default,
                            help=field.metadata["help"])
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device)
        sizes = GraphSizes(args.batch, args.frames, args.max_batch, args.max_frames)
        print(check(device))
        loaded = load_models(args.models, dict(args.weights), dict(args.checkpoint))
    except (BackendError, ValueError, RuntimeError) as exc:
        print(f"voxsight engines build: {exc}", file=sys.stderr)
        return 1
    cache = args.cache or default_cache_dir()
    failed = False
    for kind, model in loaded.items():
        for spec in model_graphs(kind, model, sizes):
            try:
                graph = load(spec, device, args.precision, cache, BackendOptions(opset=args.opset))
            except (BackendError, ValueError, RuntimeError) as exc:
                print(f"{spec.name}: FAILED: {exc}", file=sys.stderr)
                failed = True
                continue
            print(f"{spec.name}: {'built' if graph.built else 'cached'} {graph.engine_path} "
                  f"({graph.precision}, cuda graph: {'yes' if graph.cuda_graph else 'no'})")
    return 1 if failed else 0


def _detail(record: dict) -> str:
    if "tensorrt" in record and "sm" in record:
        sm = "".join(map(str, record["sm"]))
        return f"{record.get('precision')}, sm_{sm} {record.get('gpu', '')}, TensorRT {record['tensorrt']}"
    return f"opset {record.get('opset')}, torch {record.get('torch')}"


def _engines_list(argv: list[str]) -> int:
    from engines.backends.base import default_cache_dir
    from engines.backends.cache import cache_entries

    parser = argparse.ArgumentParser(prog="voxsight engines list", description="The engine cache's entries.")
    parser.add_argument("--cache", type=Path, help="engine cache (default: ~/.cache/voxsight/engines)")
    args = parser.parse_args(argv)
    root = args.cache or default_cache_dir()
    entries = cache_entries(root)
    if not entries:
        print(f"no cached graphs in {root}")
        return 0
    rows = [("kind", "graph", "MB", "created", "built for", "file")]
    rows += [(e.kind, e.name, f"{e.size_mb:.2f}", e.record.get("created", "?"), _detail(e.record),
              e.path.name) for e in entries]
    print(_table(rows))
    print(f"{len(entries)} entries in {root}")
    return 0


ENGINES_USAGE = """usage: voxsight engines {build,list} [-h] ...

  build  build TensorRT engines of the models' graphs into the cache
  list   the cache's entries"""


def main_engines(argv: list[str]) -> int:
    commands = {"build": _engines_build, "list": _engines_list}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    asked = argv[:1] in (["-h"], ["--help"])
    print(ENGINES_USAGE, file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2
