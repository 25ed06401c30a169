"""Checkpoints: one directory per saved step, written whole or not at all.

``runs/<name>/checkpoints/step_00001000/`` holds

- ``model.safetensors`` and ``ema.safetensors``: the weights (no pickle, safe to load from anywhere);
- ``state.pt``: optimizer, learning-rate schedule, step, EMA update count and the count of
  skipped non-finite steps, plain tensors and numbers that load with
  ``torch.load(weights_only=True)``. No RNG state is needed: every step's random numbers
  (batch order, t, noise, flips, label and dropout masks) come from generators seeded by the run's
  seed and the step number (``batches.py``), so a resumed run draws what the whole run would have;
- ``config.json``: the full run configuration and what wrote it.

The directory is assembled under a hidden temporary name, every file fsynced, then renamed into
place, so a reader never sees a half-written checkpoint; only the last ``keep_last`` are kept.
Hidden directories that a killed process left behind are never read and are removed by the next
save. A write that fails (full disk, file size limit, I/O error) raises ``OSError`` and leaves
the earlier checkpoints as they were.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..config import RunConfig, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from ..fileio import fsync_dir

FORMAT = "torch-ddpm checkpoint"
FORMAT_VERSION = 1
FILES = ("model.safetensors", "ema.safetensors", "state.pt", "config.json")
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# a checkpoint being written (.tmp), replaced (.old) or pruned (.del) by process <pid>
_HIDDEN_DIR = re.compile(r"^\.(tmp|old|del)-step_\d{8}-(\d+)$")


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
    try:
        write(path)
        with open(path, "rb+") as fh:
            os.fsync(fh.fileno())
    except OSError:
        raise
    except Exception as err:
        # torch.save and safetensors report a failed write (full disk, EFBIG) as their own
        # error types; the caller must see an OSError to tell it from a programming error.
        failure = _os_error_in(err, path)
        if failure is None:
            raise
        raise failure from None


def _os_error_in(err: BaseException, path: Path) -> OSError | None:
    """The OSError behind a library's write error: chained, or "(os error N)" in its text."""
    seen = err.__context__ or err.__cause__
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__context__ or seen.__cause__
    found = re.search(r"\(os error (\d+)\)", str(err))
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code), str(path))
    if "I/O error" in str(err):
        return OSError(errno.EIO, os.strerror(errno.EIO), str(path))
    return None


def _save_torch(obj: Any, path: Path) -> None:
    # a Python file object, so that a failed write surfaces as the OSError it is
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_abandoned(root: Path) -> None:
    """Delete hidden checkpoint directories left by processes that no longer run (killed mid-save)."""
    for entry in root.iterdir():
        found = _HIDDEN_DIR.match(entry.name)
        if found and int(found.group(2)) != os.getpid() and not _pid_alive(int(found.group(2))):
            shutil.rmtree(entry, ignore_errors=True)


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
    keep_steps: frozenset[int] | set[int] = frozenset(),
) -> Path:
    """Write checkpoint ``step`` of a run atomically and prune older ones, except those of
    ``keep_steps`` (a distillation keeps the student of every round); returns its directory."""
    if not _finite(model_state) or not _finite(ema_state):
        raise CheckpointError(f"refusing to write checkpoint {step}: the weights hold NaN or Inf values")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(root)
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
        _write_fsynced(tmp / "state.pt", lambda p: _save_torch(train_state, p))
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
        if int(_STEP_DIR.match(stale.name).group(1)) in keep_steps:
            continue
        # hide it first: a crash during the deletion must not leave a gutted step_ directory
        doomed = root / f".del-{stale.name}-{os.getpid()}"
        os.rename(stale, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
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
    unfinished = path.parent if path.is_file() else path
    if _HIDDEN_DIR.match(unfinished.name):
        raise CheckpointError(
            f"{unfinished} is a checkpoint that was being written, replaced or deleted, not a complete one; "
            f"give the run directory {unfinished.parent.parent} to use its latest complete checkpoint"
        )
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
    check_files(ckpt)
    return Checkpoint(path=ckpt, step=step, config=config, meta=meta)


def check_files(ckpt: str | Path) -> None:
    """A cheap look at every file of a checkpoint directory, so a damaged one is named when the
    checkpoint is opened (``ddpm sample`` reads only the EMA weights, and would never notice a
    broken ``model.safetensors`` that a later resume needs): each safetensors header must parse
    and cover the file exactly (a truncated or padded file fails), and ``state.pt`` must be the
    zip archive ``torch.save`` writes, holding its pickle. Tensor bytes are not read."""
    ckpt = Path(ckpt)
    for name in ("model.safetensors", "ema.safetensors"):
        weight_shapes(ckpt / name)
    path = ckpt / "state.pt"
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist()):
                raise zipfile.BadZipFile("no data.pkl inside")
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path} is not a loadable training state ({err})") from None


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
    if state.get("imported"):  # written by ddpm import: weights without an optimizer's history
        raise CheckpointError(f"{Path(path).parent} holds an imported model, which has no training state to resume; "
                              f"start a new run from its weights with ddpm train --init-from {Path(path).parent.parent.parent}")
    return state


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None


def check_fit(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]], source: str | Path) -> None:
    """One sentence if tensors named and shaped ``shapes`` cannot be loaded into ``model``.

    ``model`` may live on the meta device: checking a checkpoint against its config this way
    allocates nothing, so a config describing an absurdly large network is refused cheaply.
    """
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(
            f"the weights in {source} do not fit this model ({what}, {len(missing)} missing and "
            f"{len(unexpected)} unexpected tensors); was it written for another configuration?"
        )
    for k, shape in own.items():
        if tuple(shapes[k]) != shape:
            raise CheckpointError(
                f"the weights in {source} do not fit this model: {k} has shape {tuple(shapes[k])} "
                f"where the model needs {shape}"
            )


def load_model_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict`` with a one-sentence error when the shapes or names differ."""
    check_fit(model, {k: tuple(v.shape) for k, v in state.items()}, source)
    model.load_state_dict(state)
