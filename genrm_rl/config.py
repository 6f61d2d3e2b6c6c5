"""One config system for every job: typed dataclasses, YAML files in `configs/`, CLI overrides.

Why it exists: the same job runs on a laptop and, via `ray job submit`, on a cluster. A misspelt key
or a value of the wrong type must fail on the submitting machine with a message naming the key,
not an hour later inside a worker. Every job config is a dataclass whose fields carry `help` text
(shown by `--help`) and whose `__post_init__` raises `ValueError` for impossible combinations.

Precedence: dataclass defaults < YAML file (`--config`, after any file it `include`s) < CLI overrides. Overrides are either
`--some.key value` / `--some-key=value` flags or bare `some.key=value` words.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null", "~"}


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with help text; mutable defaults are wrapped in a factory."""
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{origin.__name__}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert `value` (from YAML or a CLI string) to type `tp`, or raise ValueError naming `key`."""

    def fail(extra: str = "") -> ValueError:
        return ValueError(
            f"config key '{key}': expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}"
        )

    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
            raise fail()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ValueError:
                continue
        raise fail()
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise fail(f"; choose one of {list(choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `1e-4` as a string
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric run name from the CLI
        raise fail()
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        (item_tp,) = get_args(tp)[:1] or (Any,)
        if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
            import yaml  # CLI form key=[a, b]: the YAML flow list a user would write in a config file

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise fail(f"; not a YAML list ({err.__class__.__name__})") from None
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        key_tp, val_tp = get_args(tp) or (str, Any)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):  # CLI form: name=value words
            parsed = {}
            for item in value:
                if not isinstance(item, str) or "=" not in item:
                    raise fail("; use name=value")
                name, _, val = item.partition("=")
                parsed[name.strip()] = val.strip()
            value = parsed
        if not isinstance(value, dict):
            raise fail()
        return {_coerce(key_tp, k, key): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise fail("; expected a mapping of its fields")
        return from_dict(tp, value, prefix=f"{key}.")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail()


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ValueError(f"config '{prefix.rstrip('.') or cls.__name__}': expected a mapping, got {type(data).__name__}")
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ValueError(
                f"unknown config key '{prefix}{key}'{hint}; valid keys for {cls.__name__}: {sorted(fields)}"
            )
        _, tp = fields[key]
        kwargs[key] = _coerce(tp, value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field without a value
        missing = [n for n, (f, _) in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ValueError(f"config {cls.__name__}: missing required key(s) {[prefix + m for m in missing]}") from err


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for YAML dumps, logging, passing to Ray workers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, cls: type) -> None:
    """Put `value` at `a.b.c` in `tree`, checking each part names a real field as it goes."""
    parts = dotted.split(".")
    node, node_cls = tree, cls
    for depth, part in enumerate(parts):
        fields = _fields(node_cls) if node_cls is not None else {}
        if node_cls is not None and part not in fields:
            path = ".".join(parts[: depth + 1])
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f" (did you mean '{'.'.join(parts[:depth] + [close[0]])}'?)" if close else ""
            raise ValueError(f"unknown config key '{path}'{hint}")
        if depth == len(parts) - 1:
            node[part] = value
            return
        tp = fields[part][1] if node_cls is not None else None
        nested = node.get(part)
        if not isinstance(nested, dict):
            nested = {} if nested is None or dataclasses.is_dataclass(tp) else nested
            node[part] = nested
        node = nested
        node_cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a dict. A top-level `include: other.yaml` (relative to this file) reads that
    file first and lays this one over it, so a variant (e.g. three seeds of the quickstart) states only
    what differs and a setting lives in one file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}" + (f" (included from {_seen[-1]})" if _seen else ""))
    if path.resolve() in _seen:
        raise ValueError(f"config include cycle: {' -> '.join(str(p) for p in (*_seen, path.resolve()))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    if "include" in data:
        include = data.pop("include")
        if not isinstance(include, str) or not include:
            raise ValueError(f"config file {path}: include must be a file name, got {include!r}")
        data = _merge(read_yaml(path.parent / include, (*_seen, path.resolve())), data)
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Defaults < YAML at `path` < `key=value` overrides -> validated `cls` instance."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    over: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, _, value = item.partition("=")
        _set_dotted(over, key.strip().replace("-", "_"), value, cls)
    return from_dict(cls, _merge(data, over))


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    out = []
    for name, (f, tp) in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", tp, f))
    return out


def _is_multi(tp: Any) -> bool:
    tp = next((a for a in get_args(tp) if a is not type(None)), tp) if get_origin(tp) in (Union, types.UnionType) else tp
    return get_origin(tp) in (list, dict) or tp in (list, dict)


def build_parser(cls: type, prog: str, description: str = "") -> argparse.ArgumentParser:
    """argparse parser with `--config` plus one flag per (nested) field, help from field metadata."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--config", default=None, help="YAML file with values for the keys below")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="extra overrides")
    for dotted, tp, f in _leaf_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        flags = [f"--{dotted}"]
        if "_" in dotted:
            flags.append(f"--{dotted.replace('_', '-')}")
        choices = [str(c) for c in get_args(tp)] if get_origin(tp) is Literal else None
        parser.add_argument(
            *flags,
            dest=f"opt::{dotted}",
            default=argparse.SUPPRESS,
            action="append" if _is_multi(tp) else "store",
            choices=choices,
            metavar=None if choices else _type_name(tp).upper(),
            # argparse expands %-formats in help: a literal "12%" in a help text broke --help
            help=f"{f.metadata.get('help', '')} [default: {default!r}]".replace("%", "%%"),
        )
    return parser


def parse_cli(cls: type[T], argv: Sequence[str] | None, prog: str, description: str = "") -> T:
    """Parse `--config FILE`, flags and key=value words into a validated `cls`.

    Errors in values exit with status 2 and a one-line message naming the key (like argparse)."""
    parser = build_parser(cls, prog, description)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        known = [o for a in parser._actions for o in a.option_strings]
        flag = unknown[0].split("=")[0]
        close = difflib.get_close_matches(flag, known, n=1)
        parser.error(f"unrecognized argument {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    overrides = list(args.overrides)
    for dest, value in vars(args).items():
        if not dest.startswith("opt::"):
            continue
        key = dest[len("opt::"):]
        if isinstance(value, list):  # repeated/multi flags: keep them as one comma/equals list
            if value and all("=" in v for v in value):
                overrides.append(f"{key}=" + "\x1f".join(value))
            else:
                overrides.append(f"{key}=" + ",".join(value))
        else:
            overrides.append(f"{key}={value}")
    try:
        data: dict[str, Any] = read_yaml(args.config) if args.config else {}
        over: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value")
            key, _, value = item.partition("=")
            value_obj: Any = value.split("\x1f") if "\x1f" in value else value
            _set_dotted(over, key.strip().replace("-", "_"), value_obj, cls)
        return from_dict(cls, _merge(data, over))
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def dump_yaml(obj: Any, path: str | Path) -> None:
    import yaml

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
