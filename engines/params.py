"""Declared parameters: dataclass fields with a default and help text.

Engines declare their configs with `param`, and nodes their parameters (node.params re-exports it), so
a node can expose an engine's parameters as its own with `merge` instead of declaring them twice.
"""

from __future__ import annotations

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
