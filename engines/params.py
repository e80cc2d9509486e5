"""Declared parameters: dataclass fields with a default and help text.

Engines declare their configs with `param`, and nodes their parameters (node.params re-exports it), so
a node can expose an engine's parameters as its own with `merge` instead of declaring them twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from typing import Any


def param(default: Any, help: str, *, choices: Sequence[Any] | None = None) -> Any:
    """Declare a parameter field: `rate: float = param(25.0, "frames per second")`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def merge(name: str, *parts: type) -> type:
    """One flat params dataclass with every field of `parts`, defaults and help kept."""
    specs, seen = [], set()
    for part in parts:
        hints = typing.get_type_hints(part)
        for f in dataclasses.fields(part):
            if f.name in seen:
                raise TypeError(f"parameter {f.name!r} declared twice")
            seen.add(f.name)
            specs.append((f.name, hints[f.name], dataclasses.field(default=f.default, metadata=f.metadata)))
    return dataclasses.make_dataclass(name, specs)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per field of a params dataclass (argparse), typed, with its default, help and choices."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        flag = f"--{f.name.replace('_', '-')}"
        # argparse %-formats help text: a literal "%" (our help quotes WERs) must be doubled
        text = str(f.metadata.get("help", "")).replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
            continue
        parser.add_argument(flag, type=kind if kind in (int, float, str) else str, default=f.default,
                            choices=f.metadata.get("choices"), help=f"{text} (default: {f.default})")


def part(params: Any, cls: type) -> Any:
    """The params dataclass `cls` from any object holding its fields: a `merge`d params instance, or
    arguments parsed by `add_arguments`."""
    return cls(**{f.name: getattr(params, f.name) for f in dataclasses.fields(cls)})
