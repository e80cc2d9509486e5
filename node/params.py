"""Declared node parameters: a dataclass per node, each field with a default and help text.

Overrides come from a launch file (typed YAML values) or the command line (`name:=value`, parsed as
YAML so `true`, `3` and `0.5` get their types), and are checked against the declaration.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from engines.params import merge, param, part

__all__ = ["ParamError", "RawText", "build", "describe", "merge", "param", "parse_assignment", "part"]


class ParamError(ValueError):
    """A parameter that is unknown, of the wrong type, or not among its choices."""


@dataclasses.dataclass
class NoParams:
    pass


class RawText(str):
    """A value typed on a command line: it gets its type from the parameter's declaration, so
    `name:=true` is a bool for a bool parameter and the text 'true' for a string one."""


def parse_assignment(text: str) -> tuple[str, RawText]:
    """`name:=value` → (name, raw value text)."""
    name, sep, raw = text.partition(":=")
    if not sep or not name:
        raise ParamError(f"expected name:=value, got {text!r}")
    return name.strip(), RawText(raw)


def _from_text(raw: RawText, hint: Any) -> Any:
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if hint is str and not quoted:
        return str(raw)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return str(raw)
    return str(raw) if value is None else value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    if isinstance(value, RawText):
        value = _from_text(value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        if value in (0, 1):
            return bool(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif typing.get_origin(hint) is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        return [_coerce(f"{name}[]", v, item) for v in value]
    raise ParamError(f"parameter {name!r} expects {getattr(hint, '__name__', hint)}, got {value!r}")


def build(cls: type, overrides: Mapping[str, Any]) -> Any:
    """An instance of the params dataclass `cls` with `overrides` applied and checked."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "(none)"
        raise ParamError(f"unknown parameter(s) {', '.join(unknown)}; this node has: {known}")
    values = {}
    for name, value in overrides.items():
        value = _coerce(name, value, hints[name])
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise ParamError(f"parameter {name!r} must be one of {list(choices)}, got {value!r}")
        values[name] = value
    return cls(**values)


def describe(cls: type) -> str:
    """A table of the declared parameters, for `--help`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kind = getattr(hint, "__name__", str(hint))
        choices = f.metadata.get("choices")
        extra = f" (one of {', '.join(map(str, choices))})" if choices else ""
        rows.append(f"  {f.name} ({kind}, default {f.default!r}): {f.metadata.get('help', '')}{extra}")
    return "\n".join(rows) if rows else "  (no parameters)"
