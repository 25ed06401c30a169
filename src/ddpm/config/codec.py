"""The configuration's codec: TOML and JSON in, TOML and JSON out, command-line text as field values,
and each field's command-line help (the schema is :mod:`ddpm.config.schema`)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from dataclasses import fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from ..errors import ConfigError
from .schema import AUTO, SECTIONS, DistillConfig, RunConfig, field_choices, field_help, field_index, is_auto_bool, is_auto_float

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _describe(tp: Any) -> str:
    if is_auto_bool(tp):
        return f"true, false or {AUTO!r}"
    if is_auto_float(tp):
        return f"a number or {AUTO!r}"
    if get_origin(tp) is tuple:
        item = get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", bool: "true/false values", str: "strings"}[item]
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML/JSON value against a field type, converting lists to tuples and ints to floats."""
    origin = get_origin(tp)
    if is_auto_bool(tp):
        if isinstance(value, bool):
            return value
        if value == AUTO:
            return None
        raise ConfigError(f"{where} must be {_describe(tp)}; got {value!r}")
    if is_auto_float(tp):
        if value == AUTO:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be {_describe(tp)}; got {value!r}")
    if origin in (Union, types.UnionType):
        raise AssertionError("the only optional config fields are bool | None and float | None")  # pragma: no cover
    if origin is tuple:
        if isinstance(value, (int, float)):  # a scalar is a list of one (image_size = 32)
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be {_describe(tp)}; got {value!r}")
        return tuple(coerce(v, get_args(tp)[0], where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where} must be {_describe(tp)}; got {value!r}")


def parse_text(text: str, tp: Any, where: str) -> Any:
    """A command-line string as a value of type ``tp`` ("1,2,4" for a list)."""
    if get_origin(tp) is tuple:
        parts = [p for p in text.replace(" ", "").split(",") if p]
        return tuple(parse_text(p, get_args(tp)[0], where) for p in parts)
    if tp is bool or is_auto_bool(tp):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        if lowered == AUTO and tp is not bool:
            return None
        raise ConfigError(f"{where} must be {_describe(tp)}; got {text!r}")
    if is_auto_float(tp) and text.strip().lower() == AUTO:
        return None
    try:
        return float(text) if is_auto_float(tp) else tp(text) if tp in (int, float) else text
    except ValueError:
        raise ConfigError(f"{where} must be {_describe(tp)}; got {text!r}") from None


# ---- loading, overriding, saving ---------------------------------------------------------------


def from_dict(data: dict[str, Any], source: str = "the config") -> RunConfig:
    """A RunConfig from nested dicts (TOML or JSON), refusing unknown or mistyped fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a table of sections; got {type(data).__name__}")
    index = field_index()
    config = RunConfig()
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"[{key}] in {source} must be a table; got {value!r}")
            section = getattr(config, key)
            for name, item in value.items():
                entry = index.get(name)
                if entry is None or entry[0] != key:
                    known = ", ".join(f.name for f in fields(section))
                    raise ConfigError(f"unknown field {name!r} in [{key}] of {source}; known fields: {known}")
                setattr(section, name, coerce(item, entry[2], f"{key}.{name} in {source}"))
        elif key in index and index[key][0] is None:
            setattr(config, key, coerce(value, index[key][2], f"{key} in {source}"))
        else:
            raise ConfigError(
                f"unknown section or field {key!r} in {source}; sections are {', '.join(SECTIONS)}, "
                "top-level fields are name and runs_dir"
            )
    return config


def load_toml(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return from_dict(data, str(path))


def apply_overrides(config: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Set fields from command-line text by flat field name (``{"max_steps": "2000"}``)."""
    index = field_index()
    config = dataclasses.replace(config, **{s: dataclasses.replace(getattr(config, s)) for s in SECTIONS})
    for name, text in overrides.items():
        if name not in index:
            raise ConfigError(f"unknown config field {name!r}")
        section, f, tp = index[name]
        target = getattr(config, section) if section else config
        setattr(target, name, parse_text(text, tp, f"--{name.replace('_', '-')}"))
    return config


def to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested plain dict (lists for tuples), for JSON and TOML."""

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else AUTO if v is None else v

    out: dict[str, Any] = {"name": config.name, "runs_dir": config.runs_dir}
    for s in SECTIONS:
        out[s] = {k: plain(v) for k, v in dataclasses.asdict(getattr(config, s)).items()}
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")  # pragma: no cover


def to_toml(config: RunConfig) -> str:
    d = to_dict(config)
    lines = [f"name = {_toml_value(d['name'])}", f"runs_dir = {_toml_value(d['runs_dir'])}"]
    for s in SECTIONS:
        if s == "distill" and config.distill == DistillConfig():
            continue  # only a distilled student has one
        lines.append(f"\n[{s}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in d[s].items())
    return "\n".join(lines) + "\n"


def _default(name: str) -> Any:
    section, _f, _tp = field_index()[name]
    return getattr(RunConfig(), name) if section is None else getattr(getattr(RunConfig(), section), name)


def option_help(name: str) -> str:
    """The command-line help of a field: its meaning, accepted values, default and section."""
    section, _f, tp = field_index()[name]
    default = _default(name)
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default) or "empty"
    elif default is None:
        default = AUTO
    elif default == "":
        default = "empty"
    elif isinstance(default, bool):
        default = "true" if default else "false"
    parts = [field_help(name) or "(no description)"]
    choices = field_choices(name)
    if choices:
        parts.append(f"one of: {', '.join(choices)}")
    elif get_origin(tp) is tuple:
        parts.append(_describe(tp) + ", comma-separated")
    return "; ".join(parts) + f" (default: {default}) [{section or 'run'}]"
