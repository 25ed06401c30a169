"""Typed configuration: dataclasses loadable from TOML, with command-line overrides.

A run's configuration has five sections, ``[model]``, ``[diffusion]``, ``[data]``, ``[train]``
and ``[sample]``, plus a run ``name``; a student made by ``ddpm distill`` also has ``[distill]``. Every field name is unique across sections, so every
field is also a flat command-line option (``--max-steps 2000``, ``--dim-mults 1,2,4``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class ModelConfig:
    """The Unet (see :class:`ddpm.models.Unet`)."""

    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 2
    full_attn: tuple[bool, ...] = ()  # empty: attention at the lowest resolution only
    attn_heads: int = 4
    attn_dim_head: int = 32
    dropout: float = 0.0
    learned_variance: bool = False
    resnet_block_groups: int = 8
    grad_checkpoint: bool = False
    attn_impl: str = "auto"  # auto, sdpa or math (see ddpm.models.layers.Attention)


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (see :class:`ddpm.GaussianDiffusion`)."""

    timesteps: int = 1000
    beta_schedule: str = "linear"
    zero_terminal_snr: bool = False
    objective: str = "pred_noise"
    loss_type: str = "l2"
    min_snr_gamma: float = 0.0  # 0 turns min-SNR weighting off
    offset_noise_strength: float = 0.0
    vlb_weight: float = 0.001
    p_uncond: float = 0.1


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = "digits"  # digits, mnist, fashion-mnist, cifar10 or folder:PATH
    data_dir: str = ""  # empty: the download cache
    download: bool = False
    cache_dir: str = ""  # empty: ~/.cache/torch-ddpm
    image_size: tuple[int, ...] = ()  # empty: the data set's own size; one value (square) or height, width
    channels: int = 0  # 0: the data set's own (1 grayscale, 3 colour)
    class_conditional: bool = False
    num_classes: int = 0  # filled in from the data set when class_conditional
    hflip: bool = False


@dataclass
class TrainConfig:
    """The optimisation and what a run writes."""

    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0  # 0 turns clipping off
    grad_accum: int = 1
    ema_decay: float = 0.995
    ema_warmup: bool = True
    max_steps: int = 3000  # the run's total optimizer steps, resumes included
    max_minutes: float = 0.0  # 0: no time limit
    seed: int = 0
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    bf16: bool | None = None  # None ("auto"): on with CUDA and with CPUs that have AVX512-BF16 or AMX
    compile: bool = False
    channels_last: bool = False
    log_every: int = 100
    sample_every: int = 1000
    save_every: int = 1000
    keep_last: int = 3
    num_samples: int = 64
    tensorboard: bool = True  # used when the tensorboard package is installed


@dataclass
class SampleConfig:
    """How images are drawn, for the grids written during training and for ``ddpm sample``."""

    sampler: str = "dpm++2m"
    steps: int = 0  # 0: the sampler's default (all T for ancestral, 50 for ddim, 20 for dpm++)
    eta: float = 0.0
    guidance_scale: float = 1.0
    clip: str = "static"
    grid: str = ""  # empty: the sampler's default timestep grid


@dataclass
class DistillConfig:
    """Progressive distillation (see :mod:`ddpm.distill`): what made a student run; empty otherwise."""

    teacher: str = ""  # the teacher's checkpoint directory; empty: not a distilled student
    to_steps: int = 4  # sampling steps of the final student
    rounds: int = 5  # halvings: the teacher's DDIM takes to_steps * 2**rounds steps
    steps_per_round: int = 2000  # optimizer steps per halving
    teacher_guidance: float = 1.0  # classifier-free guidance of the teacher's targets (class-conditional)
    student_objective: str = "pred_v"  # what the student predicts: pred_v, pred_x0 (or pred_noise)
    objective_from_steps: int = 0  # students of more steps keep the teacher's objective; 0: all use student_objective
    distill_weighting: str = "truncated-snr"  # x0 loss weight: truncated-snr (max(SNR, 1)) or snr+1


@dataclass
class RunConfig:
    name: str = ""  # empty: generated from the data set and the time
    runs_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


SECTIONS = ("model", "diffusion", "data", "train", "sample", "distill")


# ---- field access --------------------------------------------------------------------------


def field_index(cls: type = RunConfig) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    """Every field by name: (section or None for top-level, the field, its resolved type)."""
    index: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in SECTIONS:
            sub = hints[f.name]
            sub_hints = get_type_hints(sub)
            for g in fields(sub):
                if g.name in index:  # pragma: no cover - a programming error caught by the tests
                    raise RuntimeError(f"config field name {g.name!r} is not unique")
                index[g.name] = (f.name, g, sub_hints[g.name])
        else:
            index[f.name] = (None, f, hints[f.name])
    return index


AUTO = "auto"
"""How an automatic ``bool | None`` field (None: decided at run time) is written in TOML and on
the command line."""


def is_auto_bool(tp: Any) -> bool:
    """True for ``bool | None``: a switch that may also be left to the run ("auto")."""
    return get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {bool, type(None)}


def _describe(tp: Any) -> str:
    if is_auto_bool(tp):
        return f"true, false or {AUTO!r}"
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
    if origin in (Union, types.UnionType):
        raise AssertionError("the only optional config fields are bool | None")  # pragma: no cover
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
    try:
        return tp(text) if tp in (int, float) else text
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


def option_help(name: str) -> str:
    """The command-line help of a field: its section and default."""
    section, f, tp = field_index()[name]
    default = getattr(RunConfig(), name) if section is None else getattr(getattr(RunConfig(), section), name)
    if isinstance(default, tuple):
        default = ",".join(str(v) for v in default) or "(empty)"
    elif default is None:
        default = AUTO
    return f"[{section or 'run'}] default: {default}"


__all__ = [
    "AUTO",
    "DataConfig",
    "DiffusionConfig",
    "DistillConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "field_index",
    "from_dict",
    "is_auto_bool",
    "load_toml",
    "to_dict",
    "to_toml",
]
