"""Checkpoints: one directory per saved step, written whole or not at all.

``runs/<name>/checkpoints/step_00001000/`` holds

- ``model.safetensors`` and ``ema.safetensors``: the weights (no pickle, safe to load from anywhere);
- ``state.pt``: optimizer, learning-rate schedule, step and RNG states, plain tensors and
  numbers that load with ``torch.load(weights_only=True)``;
- ``config.json``: the full run configuration and what wrote it.

The directory is assembled under a hidden temporary name, every file fsynced, then renamed into
place, so a reader never sees a half-written checkpoint; only the last ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import RunConfig, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from ..fileio import fsync_dir

FORMAT = "torch-ddpm checkpoint"
FORMAT_VERSION = 1
FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.json")
_STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class Checkpoint:
    """A complete checkpoint directory and what its config.json says."""

    path: Path
    step: int
    config: RunConfig
    meta: dict[str, Any]

    def weights(self, ema: bool = True) -> dict[str, torch.Tensor]:
        return load_weights(self.path / ("ema.safetensors" if ema else "model.safetensors"))

    def state(self) -> dict[str, Any]:
        return load_state(self.path / "state.pt")


def _write_fsynced(path: Path, write) -> None:
    write(path)
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    train_state: dict[str, Any],
    config: RunConfig,
    keep_last: int = 3,
) -> Path:
    """Write checkpoint ``step`` of a run atomically and prune older ones; returns its directory."""
    if not _finite(model_state) or not _finite(ema_state):
        raise CheckpointError(f"refusing to write checkpoint {step}: the weights hold NaN or Inf values")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "torch_ddpm": __version__,
            "config": to_dict(config)}
    try:
        cpu = lambda sd: {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}  # noqa: E731
        _write_fsynced(tmp / "model.safetensors", lambda p: save_file(cpu(model_state), str(p)))
        _write_fsynced(tmp / "ema.safetensors", lambda p: save_file(cpu(ema_state), str(p)))
        _write_fsynced(tmp / "state.pt", lambda p: torch.save(train_state, p))
        _write_fsynced(tmp / "config.json", lambda p: p.write_text(json.dumps(meta, indent=2), encoding="utf-8"))
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (a resumed run stopping where it started)
            old = root / f".old-step_{step:08d}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (temporary ones are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and all((p / f).is_file() for f in FILES)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def resolve(path: str | Path) -> Path:
    """The checkpoint directory meant by a run directory (its latest), a checkpoint directory
    or one of a checkpoint's files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no run or checkpoint at {path}")
    if path.is_file():
        if path.name in FILES:
            return path.parent
        raise CheckpointError(
            f"{path} is not a torch-ddpm checkpoint; give a run directory, a checkpoint directory "
            "(runs/<name>/checkpoints/step_...) or its model.safetensors or ema.safetensors"
        )
    if all((path / f).is_file() for f in FILES):
        return path
    run_dir = path.parent if path.name == "checkpoints" else path
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{path} holds no complete torch-ddpm checkpoint")
    return found[-1]


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint (see :func:`resolve` for what ``path`` may be) and check it is ours."""
    ckpt = resolve(path)
    try:
        meta = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{ckpt / 'config.json'} is not readable JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt} is not a torch-ddpm checkpoint (its config.json lacks the format marker)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {meta.get('format_version')!r}; this torch-ddpm reads format {FORMAT_VERSION}"
        )
    try:
        config = from_dict(meta.get("config"), f"{ckpt / 'config.json'}")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    step = meta.get("step")
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{ckpt / 'config.json'} has no valid step")
    return Checkpoint(path=ckpt, step=step, config=config, meta=meta)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; any malformed file is a CheckpointError."""
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def load_state(path: str | Path) -> dict[str, Any]:
    """The training state; ``weights_only=True`` refuses anything but tensors and plain data."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a loadable training state ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a torch-ddpm training state")
    return state


def load_model_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict`` with a one-sentence error when the shapes or names differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(
            f"the weights in {source} do not fit this model ({what}, {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors); was it written for another configuration?"
        )
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"the weights in {source} do not fit this model: {k} has shape {tuple(state[k].shape)} "
                f"where the model needs {tuple(v.shape)}"
            )
    model.load_state_dict(state)
