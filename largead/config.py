"""Typed configuration: YAML files with ``base:`` inheritance, ``key=value`` overrides, dataclass validation.

The one configuration system of the project (training configs, ``config.json`` of encoders, reader options). It
needs no torch.

- :func:`load_config` reads a YAML file (optionally inheriting from ``base: other.yaml``), applies ``key=value``
  overrides (dotted keys, values parsed as YAML, ``data.0.root=...`` edits item 0 of a list) and builds a typed
  dataclass with :func:`from_dict`: unknown or missing keys and wrong types raise :class:`ConfigError` naming the
  dotted key and the file. Types are checked, not coerced by truthiness: ``"no"`` is not a bool, ``"1"`` not an int.
- :func:`config_to_dict` goes back to plain JSON-able data; :func:`format_override` writes a value so that
  ``f"{key}={format_override(v)}"`` reads back as ``v``; :func:`parse_overrides` is the one ``key=value`` parser
  (config overrides, ``--option`` reader options, superpixel-source options).
- :func:`resolve_config_path` finds a config by path or by name in a folder.
- :func:`config_diff` lists the dotted leaf keys that differ between two configs; :func:`check_run_config` compares
  a run's config with the ``run_config.json`` stored in its output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

RUN_CONFIG = "run_config.json"


class ConfigError(ValueError):
    """A configuration file or override is malformed (unknown/missing key, wrong type)."""


class ConfigMismatchError(RuntimeError):
    """A resumed run was started with a configuration that differs from the one stored in ``run_config.json``."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check/convert ``value`` to annotation ``tp``; raise :class:`ConfigError` naming ``key`` and ``source``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{source}: key {key!r} must be {expected}, got {value!r} ({type(value).__name__})")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise fail(f"a mapping for {tp.__name__}")
        return from_dict(tp, value, source, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            with contextlib.suppress(ConfigError):
                return coerce(value, a, key, source)
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        word = "yes" if value is True else "no"
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in args) and word in args:
            value = word  # YAML 1.1 reads an unquoted no / yes (mixed_precision: no) as a bool
        if value not in args:
            raise fail(f"one of {list(args)}")
        return value
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        if args and args[-1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise fail(f"a list of {len(args)} items")
        return tuple(coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise fail(tp.__name__)
    return value


def from_dict(cls: type[T], data: dict[str, Any], source: str = "<config>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, missing required keys and wrong types raise
    :class:`ConfigError` naming the dotted key and ``source`` (a file name)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(repr(prefix + k) for k in unknown)}; "
                          f"allowed under {prefix.rstrip('.') or 'top level'}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], prefix + name, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key {prefix + name!r}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=list))


def parse_overrides(items: Iterable[str], what: str = "override") -> dict[str, Any]:
    """``["optim.lr=0.1", "data.0.root=/x"]`` -> nested dict; values parsed as YAML (numbers, bools, lists, ``null``);
    a numeric key edits that item of a list. The one ``key=value`` parser of the project: config overrides, reader
    options (``--option``), superpixel-source options; ``what`` names the flag in errors (e.g. ``"--option"``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{what} {item!r} must look like key=value (dotted keys, e.g. optim.lr=0.1)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{what} {item!r} conflicts with an earlier {what} that sets {p!r} to a value")
            node = child
        node[parts[-1]] = value
    return out


def format_override(value: Any) -> str:
    """``value`` as one-line YAML, the inverse of :func:`parse_overrides`' value parsing: ``f"{key}={...}"`` reads
    back as ``value`` (unlike ``json.dumps``, whose ``1e-05`` YAML reads as a string)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()


def _merge_value(old: Any, new: Any) -> Any:
    if isinstance(new, dict) and isinstance(old, dict):
        return deep_merge(old, new)
    if isinstance(new, dict) and isinstance(old, list) and new and all(str(k).isdigit() for k in new):
        out = list(old)  # "data.0.root=..." edits item 0 of a list
        for k, v in new.items():
            i = int(k)
            if i >= len(out):
                raise ConfigError(f"override index {i} is out of range for a list of {len(out)} items")
            out[i] = _merge_value(out[i], v)
        return out
    return new


def deep_merge(base: dict[str, Any], upd: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge_value(out.get(k), v)
    return out


def load_yaml(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; a top-level ``base: other.yaml`` (relative to the file) is loaded first and deep-merged
    under it, recursively."""
    import yaml

    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'base' chain {' -> '.join(map(str, _seen + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: key 'base' must be a file name, got {base!r}")
        data = deep_merge(load_yaml(path.parent / base, _seen + (path,)), data)
    return data


def resolve_config_path(name: str, config_dir: str | os.PathLike, prefixes: Sequence[str] = ()) -> Path:
    """``name`` as a YAML path, or the name of a config in ``config_dir`` (with or without ``.yaml``).

    Otherwise ``FileNotFoundError`` listing up to 12 configs of ``config_dir`` (names starting with ``_`` never;
    only those starting with one of ``prefixes`` when given).
    """
    folder = Path(config_dir)
    for cand in (Path(name), folder / name, folder / f"{name}.yaml"):
        if cand.is_file():
            return cand
    known = sorted(c.stem for c in folder.glob("*.yaml")
                   if not c.stem.startswith("_") and (not prefixes or c.stem.startswith(tuple(prefixes))))
    raise FileNotFoundError(f"config {name!r} is neither a file nor one of {folder.parent.name}/{folder.name}: "
                            f"{', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")


def load_config(cls: type[T], path: str | os.PathLike, overrides: Iterable[str] = ()) -> T:
    """Load YAML ``path`` (+ ``base`` chain) with ``key=value`` ``overrides`` into dataclass ``cls``."""
    data = deep_merge(load_yaml(path), parse_overrides(overrides))
    return from_dict(cls, data, source=str(path))


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values of a nested config by dotted key; list items get their index (``data.0.root``), so a difference
    is reported at the leaf that differs, not as a whole list."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(d, (list, tuple)) and d and any(isinstance(v, (dict, list, tuple)) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): list(d) if isinstance(d, tuple) else d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (added/removed keys included), sorted."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))


def check_run_config(output_dir: str | os.PathLike, config: dict[str, Any], force: bool = False,
                     write: bool = True) -> None:
    """Compare ``config`` with ``output_dir/run_config.json`` (if any) and, when ``write``, store it.

    A differing stored config raises :class:`ConfigMismatchError` naming the differing dotted leaf keys (e.g.
    ``data.0.root``) with both values, unless ``force`` (then the new config replaces the stored one). An unchanged
    file is never rewritten. Call it with ``write`` true on the main process only.
    """
    from largead.fileio import atomic_write_json

    path = Path(output_dir) / RUN_CONFIG
    config = json.loads(json.dumps(config, default=list))
    stored = None
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigMismatchError(f"{path}: not valid JSON ({err}); remove it or use a new output folder") from None
        diff = config_diff(stored, config)
        if diff and not force:
            old, new = flatten(stored), flatten(config)
            shown = "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in diff[:20])
            raise ConfigMismatchError(f"{path}: this run's config differs from the stored one in {len(diff)} key(s): "
                                      f"{shown}. Use a new --output-dir, or pass --force to resume anyway.")
    if write and stored != config:
        atomic_write_json(path, config, sort_keys=True)


__all__ = [
    "RUN_CONFIG",
    "ConfigError",
    "ConfigMismatchError",
    "check_run_config",
    "coerce",
    "config_diff",
    "config_to_dict",
    "deep_merge",
    "flatten",
    "format_override",
    "from_dict",
    "load_config",
    "load_yaml",
    "parse_overrides",
    "resolve_config_path",
]
