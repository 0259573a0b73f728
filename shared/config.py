"""Stage configuration: one dataclass per stage, YAML presets, `--flag` overrides.

A stage declares its settings as a dataclass whose fields carry a `help` in
their metadata. `add_config_args` turns the fields into argparse flags (same
names as the fields, so the seed's flags carry over), `load_config` merges a
YAML file and the flags that were actually given, and `save_config` writes the
resolved result next to the outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from shared.errors import UserError

T = TypeVar("T")


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a help text (and an optional list/tuple default)."""
    meta = {"help": help}
    meta.update(kwargs.pop("metadata", {}))
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(element type, is_sequence) for a field annotation, unwrapping Optional."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return (args[0] if args else str), True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--name` flag per field of `cls`; defaults stay unset (None) so that
    only flags the user really gave override the YAML preset."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        tp, is_seq = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        flag = f"--{f.name}"
        if tp is bool:
            # `--flag` sets true, `--flag false` / `--no-flag` set false explicitly.
            parser.add_argument(flag, nargs="?", const=True, default=None, type=_parse_bool, help=help_text)
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", default=None,
                                help=argparse.SUPPRESS)
        elif is_seq:
            parser.add_argument(flag, nargs="+", type=tp, default=None, help=help_text)
        else:
            choices = f.metadata.get("choices")
            parser.add_argument(flag, type=tp, default=None, choices=choices, help=help_text)


def check_keys(cls: type, data: dict[str, Any], source: str) -> None:
    """One error naming every key of `data` that is not a field of `cls`, and the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(
            f"{source}: unknown config key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"valid keys: {', '.join(sorted(names))}"
        )


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (pass an existing YAML file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value at the top level")
    return data


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | argparse.Namespace | None = None,
    section: str | None = None,
) -> T:
    """Defaults <- YAML (optionally one `section:` of it) <- explicit overrides."""
    values: dict[str, Any] = {}
    if yaml_path:
        data = read_yaml(yaml_path)
        if section is not None:
            data = data.get(section, {}) or {}
        check_keys(cls, data, str(yaml_path))
        values.update(data)
    if overrides is not None:
        if isinstance(overrides, argparse.Namespace):
            overrides = vars(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in names and v is not None})
    return cls(**coerce_fields(cls, values))


def coerce_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `values` with each of `cls`'s fields in its declared type where the value is
    of a kindred one: numbers to int/float (YAML's 1e-4, a KFP struct's 40.0), tuples to lists.
    Keys that are not fields of `cls` pass through unchanged."""
    hints = typing.get_type_hints(cls)
    values = dict(values)
    for key, value in values.items():
        if key not in hints:
            continue
        tp, is_seq = _base_type(hints[key])
        if is_seq and isinstance(value, (list, tuple)):
            values[key] = list(value)
        elif tp in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = tp(value)
    return values


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def convert(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return {k: convert(v) for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config (YAML, or JSON for a .json path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(cfg)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2))
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
