"""Building the typed config from the validated dicts (`from_dict`) and back (`to_dict`).

The one place where the config's 1/255 budgets become `Eps` in pixel units, and where they
go back to the config's units for the records a stage writes of its configuration.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline.budget import PER_255, Eps
from pipeline.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys, missing keys and wrong types.

    Fields marked PER_255 (Linf budgets, written in units of 1/255) become `Eps` here, the
    one place where 1/255 units turn into pixel units.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    missing = sorted(names - set(data))
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {name: fields[name].metadata["parse"](data[name], f"{where}.{name}") if "parse" in fields[name].metadata
              else _coerce(hints[name], data[name], f"{where}.{name}") for name in names}
    return cls(**{name: _to_pixels(v) if fields[name].metadata.get("unit") == PER_255["unit"] else v
                  for name, v in values.items()})


def _to_pixels(value: float | list[float]) -> Eps | list[Eps]:
    """A 1/255 budget (or list of them) as Eps in pixel units; coerced to float already."""
    return [Eps(v) for v in value] if isinstance(value, list) else Eps(value)


def to_dict(obj: Any) -> Any:
    """The inverse of `from_dict`: plain JSON-ready values, budgets back in the config's 1/255 units.

    For records of the configuration a stage ran with (metrics, robustness.json), which read
    like the config file. `to_dict(from_dict(cls, d)) == d` for a complete, schema-valid `d`.
    """
    if isinstance(obj, Eps):
        return obj.per_255
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(value) for value in obj]
    return obj


def from_json(cls: type[T], text: str, where: str = "config") -> T:
    return from_dict(cls, json.loads(text), where)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def parse_entries(class_of: Callable[[str], type | None], data: Any, where: str) -> dict[str, Any]:
    """A mapping name -> entry, each entry built into `class_of(name)` (None: not a known name)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    unknown = sorted(name for name in data if class_of(name) is None)
    if unknown:
        raise ConfigError(f"{where}: unknown name(s) {unknown}")
    return {name: from_dict(class_of(name), entry, f"{where}.{name}") for name, entry in data.items()}
