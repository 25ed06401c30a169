"""Fine-tuning: a new run that starts from another run's weights.

``ddpm train --init-from runs/NAME --dataset folder:DIR`` (and ``Trainer(init_from=...)``) trains a
new, ordinary run. Its network, schedule, objective and sampling settings are the source run's, so
the source's weights fit it; its data and training settings are the caller's. What decides the
network (its widths, the image size and channels, the classes) cannot change, and a setting that
contradicts it is refused; a few settings that only change how it is trained (dropout, the loss
and its weighting, label dropout) and every [sample] setting may.

The network is built by :func:`ddpm.runs.build.build_unet` from the merged config, as
:func:`ddpm.load_run` rebuilds any run's, so whatever network a run's config describes can be
fine-tuned. The run records where it started in ``init.json`` (the checkpoint, its step, which
weights and their sha256) and in its config (``init_from``, the checkpoint directory); a resumed
fine-tune continues from its own checkpoints and never reads the source again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Collection

import torch

from ..config import RunConfig, register_choices
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_text
from .checkpoint import Checkpoint, check_fit, read_checkpoint

INIT_WEIGHTS = ("ema", "raw")
register_choices("init_weights", INIT_WEIGHTS)

INIT_RECORD = "init.json"

USER_DATA = frozenset({"dataset", "data_dir", "download", "cache_dir", "hflip", "stream", "num_workers", "cache_resized"})
"""[data] settings that are the new run's own: where its images come from and how they are read."""

MAY_DIFFER = frozenset({("model", "dropout"), ("model", "grad_checkpoint"), ("model", "attn_impl"),
                        ("diffusion", "loss_type"), ("diffusion", "min_snr_gamma"), ("diffusion", "offset_noise_strength"),
                        ("diffusion", "vlb_weight"), ("diffusion", "p_uncond")})
"""Settings taken from the source unless given, that may be given otherwise: how the same network,
schedule and objective are trained, not what they are. Every other field of every section but
[train], [sample] and [distill] (a section or field added later included) must be the source's."""

OWN_SECTIONS = ("train", "distill")  # the new run's own, never the source's
FREE_SECTIONS = ("sample",)  # the source's unless given, and may be given otherwise

# [data] fields whose empty value means "the data set's own": for a fine-tune, the source's
_AUTO_DATA = {"image_size": (), "channels": 0, "class_conditional": None, "num_classes": 0}


def open_source(path: str | Path, weights: str = "ema") -> Checkpoint:
    """The checkpoint a fine-tune starts from (a run directory: its latest), refusing what cannot
    be fine-tuned: a distilled student and a text-conditional run."""
    if weights not in INIT_WEIGHTS:
        raise ConfigError(f"--init-weights must be ema (the weights a run samples with) or raw (its training weights); "
                          f"got {weights!r}")
    if Path(path).is_file():  # which weights is --init-weights' choice, not a file name's
        raise ConfigError(f"--init-from takes a run directory or a checkpoint directory, not the file {path}; "
                          "add --init-weights raw to start from a checkpoint's model.safetensors")
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"--init-from {path}: {err}") from None
    source = ckpt.config
    if source.distill.teacher:
        raise ConfigError(f"{ckpt.path} is a student distilled from {source.distill.teacher}, and training it on the "
                          "diffusion loss would undo its few-step sampling; fine-tune its teacher, then distill the result")
    if source.data.text_conditional:
        raise ConfigError(f"{ckpt.path} is a text-conditional run, which --init-from does not take (its captions' "
                          "vocabulary and encoder would have to carry over); fine-tune an unconditional or "
                          "class-conditional run")
    return ckpt


def finetune_config(config: RunConfig, given: Collection[str] = ()) -> RunConfig:
    """``config`` (its ``train.init_from`` naming the source) completed from the source run: every
    field of [model], [diffusion], [sample] and the network's [data] fields (size, channels,
    classes) that is not in ``given`` (field names the caller set) is the source's; [train], the
    data set and how it is read stay ``config``'s. A given setting that contradicts the source's
    network, schedule or objective is one ConfigError sentence."""
    source = open_source(config.train.init_from, config.train.init_weights)
    parts: dict[str, Any] = {}
    for f in fields(RunConfig):
        mine = getattr(config, f.name)
        if not is_dataclass(mine) or f.name in OWN_SECTIONS:
            parts[f.name] = mine
            continue
        theirs = getattr(source.config, f.name)
        parts[f.name] = replace(mine, **{g.name: getattr(theirs, g.name) for g in fields(mine)
                                         if g.name not in given and not (f.name == "data" and g.name in USER_DATA)})
    return adopt_source(source, RunConfig(**parts))


def adopt_source(source: Checkpoint, config: RunConfig) -> RunConfig:
    """``config`` checked against the source's network: each field that must be the source's is,
    or one ConfigError sentence names it; the network's [data] fields left to the data set (empty
    or auto) become the source's, and ``init_from`` the source's checkpoint directory."""
    theirs = source.config
    for f in fields(RunConfig):
        mine = getattr(config, f.name)
        if not is_dataclass(mine) or f.name in OWN_SECTIONS + FREE_SECTIONS:
            continue
        settled = {}
        for g in fields(mine):
            a, b = getattr(mine, g.name), getattr(getattr(theirs, f.name), g.name)
            if f.name == "data" and g.name in USER_DATA or (f.name, g.name) in MAY_DIFFER:
                continue
            if f.name == "data" and (a == _AUTO_DATA.get(g.name, object()) or g.name == "image_size" and _square(a) == _square(b)):
                settled[g.name] = b
            elif a != b:
                flag = "--" + g.name.replace("_", "-")
                raise ConfigError(f"{flag} {_text(a)} contradicts the run being fine-tuned ({source.path}), which has "
                                  f"{f.name}.{g.name} = {_text(b)}; leave {flag} out to take the run's own, or train a new "
                                  "run without --init-from")
        config = replace(config, **{f.name: replace(mine, **settled)})
    return replace(config, train=replace(config.train, init_from=str(source.path.resolve())))


def check_data_fits(source_config: RunConfig, config: RunConfig) -> None:
    """After the data set is read: its classes are the source's (the class embedding has one row each)."""
    a, b = source_config.data, config.data
    if a.class_conditional and a.num_classes != b.num_classes:
        raise ConfigError(f"the run being fine-tuned has {a.num_classes} classes but data set {b.dataset!r} has "
                          f"{b.num_classes}; give it one sub-folder per class of that run ({a.num_classes})")


def read_initial_weights(source: Checkpoint, weights: str,
                         build_skeleton: Callable[[], torch.nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``weights`` ("ema" or "raw") of ``source`` that a fine-tune starts from, checked against
    the network ``build_skeleton()`` builds (on the meta device: nothing allocated), and the record
    of them (:data:`INIT_RECORD`): the checkpoint, its step, which weights and the sha256 of their file."""
    from safetensors.torch import load as load_safetensors

    name = "ema.safetensors" if weights == "ema" else "model.safetensors"
    path = source.path / name
    try:
        blob = path.read_bytes()  # hashed and loaded from the same bytes
        tensors = load_safetensors(blob)
    except OSError as err:
        raise CheckpointError(f"cannot read {path} ({err.strerror or err})") from None
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    with torch.device("meta"):
        check_fit(build_skeleton(), {k: tuple(v.shape) for k, v in tensors.items()}, path)
    record = {
        "source": str(source.path.parent.parent.resolve()),
        "checkpoint": str(source.path.resolve()),
        "step": source.step,
        "weights": weights,
        "file": name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "source_torch_ddpm": source.meta.get("torch_ddpm"),
    }
    earlier = source.path.parent.parent / INIT_RECORD
    if earlier.is_file():  # the source was itself fine-tuned: keep the chain
        try:
            record["source_init"] = json.loads(earlier.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
    return tensors, record


def write_init_record(run_dir: str | Path, record: dict[str, Any]) -> Path:
    return atomic_write_text(Path(run_dir) / INIT_RECORD, json.dumps(record, indent=2) + "\n")


def read_init_record(run_dir: str | Path) -> dict[str, Any] | None:
    """Where a fine-tuned run started (see :func:`read_initial_weights`); None for a run that did not."""
    path = Path(run_dir) / INIT_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def given_in_toml(path: str | Path) -> set[str]:
    """The field names a TOML config file sets (it has been read by ``load_toml`` already)."""
    from ..config.codec import tomllib  # the standard library's, or tomli before Python 3.11

    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    return {name for key, value in data.items() for name in (value if isinstance(value, dict) else [key])}


def _square(size: Any) -> Any:
    return (size[0], size[0]) if isinstance(size, tuple) and len(size) == 1 else size


def _text(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value) or "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "auto" if value is None else str(value)
