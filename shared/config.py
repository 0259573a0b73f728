"""Stage configuration: one dataclass per stage, YAML presets, `--flag` overrides.

A stage declares its settings as a dataclass whose fields carry a `help` in
their metadata (and, where it matters, `choices`, `min`/`max`, or `output` for a
path the stage writes). `add_config_args` turns the fields into argparse flags
(same names as the fields, so the seed's flags carry over), `load_config` merges
a YAML file and the flags that were actually given, and `save_config` writes the
resolved result next to the outputs.

Every value, whether it comes from a flag, a YAML file or `--set`, goes through one
validation path (`build_config` -> `convert_field`): unknown keys, types, ranges and
choices are checked before any work starts, and a bad value is one `UserError` naming
where it came from, the key, the value and what was expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from shared.errors import UserError

T = TypeVar("T")
FLAGS = "flags"  # the source name of command-line values in error messages


def option(default: Any, help: str, *, choices: Any = None, min: float | None = None,  # noqa: A002 - mirrors argparse
           max: float | None = None, output: str | None = None, check: Callable[[Any], Any] | None = None,
           **kwargs: Any) -> Any:
    """A dataclass field with a help text (and an optional list/tuple default).

    choices: the allowed values; min / max: an inclusive range for numbers (and for every
    number of a list); output: "dir" or "file" for a path the stage writes (checked by
    `check_outputs` before the stage starts); check: a function that converts or rejects
    the value (raises ValueError with what it expected).
    """
    meta: dict[str, Any] = {"help": help}
    meta.update(kwargs.pop("metadata", {}))
    for key, value in (("choices", choices), ("min", min), ("max", max), ("output", output), ("check", check)):
        if value is not None:
            meta[key] = list(value) if key == "choices" else value
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def option_like(cls: type, name: str, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:  # noqa: A002
    """The field `name` of config `cls` again, for a stage that passes the setting on: the same
    help, range, choices and default (or `default` / `help` where this stage differs), so each
    setting keeps one home."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = dict(f.metadata)
    text = meta.pop("help", "")
    if help is not None:
        text = help
    if default is dataclasses.MISSING:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return option(default, text, metadata=meta)


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


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


# ---------------------------------------------------------------------------------------------- values
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_NAMES = {int: "int", float: "float", bool: "bool (true/false)", str: "str", dict: "a mapping (key: value)"}


def _parse_bool(text: Any) -> bool:
    low = str(text).lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _range_text(meta: dict[str, Any]) -> str:
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def expected_text(tp: Any, meta: dict[str, Any] | None = None) -> str:
    """What a field accepts, in words: 'int >= 1', 'list of float', 'one of light, standard'."""
    meta = meta or {}
    if getattr(meta.get("check"), "expects", None):
        return meta["check"].expects
    if meta.get("choices"):
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    base, is_seq = _base_type(tp)
    name = _NAMES.get(typing.get_origin(base) or base, getattr(base, "__name__", str(base)))
    text = (f"a list of {name}" if is_seq else name) + _range_text(meta)
    return text + (" or null" if _optional(tp) else "")


def _scalar(base: Any, value: Any) -> Any:
    """`value` as `base` (int, float, bool, str, dict), or ValueError. Strings (flags, `--set`,
    environment) are parsed; kindred values convert (YAML's 1e-4 for an int field is not kindred,
    40.0 is; a number for a str field becomes its text)."""
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError
    if base is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                number = float(text)  # "1e3", "40.0"
                if number.is_integer():
                    return int(number)
        raise ValueError
    if base is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            number = float(value.strip())
        else:
            raise ValueError
        if not math.isfinite(number):
            raise ValueError
        return number
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `devices: 2` or `version: 6` as numbers
        raise ValueError
    if base is dict or typing.get_origin(base) is dict:
        if isinstance(value, str):  # a flag or `--set` carries JSON / YAML text
            try:
                value = yaml.safe_load(value) if value.strip() else {}
            except yaml.YAMLError:
                raise ValueError from None
        if not isinstance(value, dict):
            raise ValueError
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is not Any:
            return {k: _scalar(args[1], v) for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(base) or base is Any:
        return value
    if isinstance(base, type) and not isinstance(value, base):
        raise ValueError
    return value


def _in_range(value: Any, meta: dict[str, Any]) -> bool:
    lo, hi = meta.get("min"), meta.get("max")
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def convert_field(cls: type, key: str, value: Any, source: str = FLAGS) -> Any:
    """`value` for field `key` of `cls` in the field's type, or a UserError naming the source,
    the key, the value and what the field expects."""
    field = {f.name: f for f in dataclasses.fields(cls)}[key]
    tp = typing.get_type_hints(cls)[key]
    meta = dict(field.metadata)
    base, is_seq = _base_type(tp)

    def bad(detail: str = "") -> UserError:
        if source == FLAGS:  # as typed: --num_images -5
            shown = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            return UserError(f"--{key} {shown}: expected {expected_text(tp, meta)}{detail}")
        return UserError(f"{source}: {key} = {value!r}: expected {expected_text(tp, meta)}{detail}")

    if value is None:
        if _optional(tp):
            return None
        raise bad()
    if is_seq:
        items = value
        if isinstance(value, str) and source != FLAGS:
            try:
                items = yaml.safe_load(value)
            except yaml.YAMLError:
                raise bad() from None
        if isinstance(items, tuple):
            items = list(items)
        if not isinstance(items, list):
            raise bad()
        out = []
        for i, item in enumerate(items):
            try:
                item = _scalar(base, item)
            except (ValueError, TypeError):
                raise bad(f" (item {i + 1}: {item!r})") from None
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not _in_range(item, meta):
                raise bad(f" (item {i + 1}: {item!r})")
            out.append(item)
        converted: Any = out
    else:
        if source == FLAGS and isinstance(value, list) and len(value) == 1:
            value = value[0]
        try:
            converted = _scalar(base, value)
        except (ValueError, TypeError):
            raise bad() from None
        if isinstance(converted, (int, float)) and not isinstance(converted, bool) and not _in_range(converted, meta):
            raise bad()
    choices = meta.get("choices")
    if choices and not is_seq and converted not in choices:
        raise bad()
    check = meta.get("check")
    if check is not None:
        try:
            converted = check(converted)
        except ValueError as exc:
            raise bad(f" ({exc})" if str(exc) else "") from None
    return converted


def check_gates(gates: dict) -> dict:
    """Quality gates: metric name -> minimum, or {'max': v} / {'min': v}; numbers only."""
    out: dict[str, Any] = {}
    for name, rule in gates.items():
        if isinstance(rule, dict):
            if not rule or set(rule) - {"min", "max"}:
                raise ValueError(f"gate {name!r}: a rule is a number or {{'min': v}} / {{'max': v}}, got {rule!r}")
            try:
                out[str(name)] = {k: _scalar(float, v) for k, v in rule.items()}
            except ValueError:
                raise ValueError(f"gate {name!r}: {rule!r} is not a number") from None
            continue
        try:
            out[str(name)] = _scalar(float, rule)
        except ValueError:
            raise ValueError(f"gate {name!r}: {rule!r} is not a number") from None
    return out


check_gates.expects = "a mapping of metric -> minimum (a number, or {'max': number} when lower is better)"


# ---------------------------------------------------------------------------------------------- building
def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one `--name` flag per field of `cls`. Flags are read as text and converted by the
    same `convert_field` as YAML and `--set` values (in `load_config` / `build_config`);
    defaults stay unset (None) so that only flags the user really gave override the YAML."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        tp, is_seq = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata.get('help', '')} ({expected_text(hints[f.name], dict(f.metadata))}; " \
                    f"default: {default})".replace("%", "%%")
        flag = f"--{f.name}"
        if tp is bool:
            # `--flag` sets true, `--flag false` / `--no-flag` set false explicitly.
            parser.add_argument(flag, nargs="?", const=True, default=None, help=help_text)
            parser.add_argument(f"--no-{f.name}", dest=f.name, action="store_false", default=None,
                                help=argparse.SUPPRESS)
        elif is_seq:
            parser.add_argument(flag, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)


def check_keys(cls: type, data: dict[str, Any], source: str) -> None:
    """One error naming every key of `data` that is not a field of `cls`, and the valid ones."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - names)
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
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; pass a YAML file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value at the top level")
    return data


def build_config(cls: type[T], layers: list[tuple[str, dict[str, Any] | argparse.Namespace | None]]) -> T:
    """Dataclass defaults <- each (source, values) layer in turn, every value validated.

    `source` names where the values came from in error messages: a YAML path, `--set`, or
    `FLAGS` (an argparse namespace or dict of flags: keys that are not fields, and flags not
    given (None), are ignored there; elsewhere an unknown key is an error)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, data in layers:
        if data is None:
            continue
        if isinstance(data, argparse.Namespace):
            data = vars(data)
        if source == FLAGS:
            data = {k: v for k, v in data.items() if k in names and v is not None}
        else:
            if not isinstance(data, dict):
                raise UserError(f"{source}: expected a mapping of key: value, got {type(data).__name__}")
            check_keys(cls, data, source)
        for key, value in data.items():
            values[str(key)] = value
            origin[str(key)] = source
    converted = {key: convert_field(cls, key, value, origin[key]) for key, value in values.items()}
    try:
        return cls(**converted)
    except TypeError as exc:  # a required field without a value
        raise UserError(f"{cls.__name__}: {exc}") from None


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | argparse.Namespace | None = None,
    section: str | None = None,
) -> T:
    """Defaults <- YAML (optionally one `section:` of it) <- explicit overrides (flags)."""
    layers: list[tuple[str, Any]] = []
    if yaml_path:
        data = read_yaml(yaml_path)
        if section is not None:
            data = data.get(section, {}) or {}
        layers.append((str(yaml_path), data))
    layers.append((FLAGS, overrides))
    return build_config(cls, layers)


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


# ---------------------------------------------------------------------------------------------- outputs
def check_writable(path: str | Path, what: str, kind: str = "dir") -> Path:
    """`path` can be written (a folder to create or fill, or a file to create or replace), or one
    UserError naming it. Leaves nothing behind: the probe file it writes is removed."""
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: exists and is not a folder; pass a folder path")
    if kind == "file" and path.is_dir():
        raise UserError(f"{what} {path}: is a folder; pass a file path (e.g. {path / 'model.onnx'})")
    probe = path if kind == "dir" else path.parent
    probe = probe if str(probe) else Path(".")
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"{what} {path}: {probe} is a file, not a folder; pass a path under a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".handops-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write there ({exc.strerror or exc} in {probe}); "
                        f"pass a writable path") from None
    return path


def check_outputs(cfg: Any) -> None:
    """Check every field of `cfg` marked `output="dir"|"file"` (non-empty) with `check_writable`."""
    for f in dataclasses.fields(cfg):
        kind = f.metadata.get("output")
        value = getattr(cfg, f.name)
        if kind and value:
            check_writable(value, f"--{f.name}", kind)


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
