"""A diffusers model folder read into its UNet config, its scheduler config and its weights.

Three layouts are read: a pipeline folder (``model_index.json`` naming a ``UNet2DModel`` and its
scheduler, each in its own sub-folder, as ``DDPMPipeline.save_pretrained`` and the Hub write them), a
flat folder (the UNet's ``config.json`` and weights beside ``scheduler_config.json``), and a bare
``unet/`` folder (its scheduler then comes from ``--scheduler`` settings, or a sibling
``scheduler/`` folder). Weights are ``diffusion_pytorch_model.safetensors`` or, failing that, the
``.bin`` file, which is read with ``torch.load(weights_only=True)`` only: a pickle that could run
code is refused, never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, first_line

WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# diffusers' early attention blocks (the google DDPMs were written with diffusers 0.0.x) named their
# projections query/key/value/proj_attn; today's Attention calls them to_q/to_k/to_v/to_out.0
_OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass
class DiffusersFolder:
    """What an import needs from a folder: the UNet's config and weights file, and the scheduler's
    config (None: not in the folder)."""

    root: Path
    unet_dir: Path
    unet_config: dict[str, Any]
    weights_path: Path
    scheduler_config: dict[str, Any] | None


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def component(index: dict[str, Any], classes: tuple[str, ...]) -> str | None:
    """The name of the pipeline component whose class is one of ``classes`` (model_index.json
    maps a name to [library, class])."""
    for name, value in index.items():
        if isinstance(value, list) and len(value) == 2 and value[1] in classes:
            return name
    return None


def scheduler_component(index: dict[str, Any]) -> str | None:
    """The name of the pipeline component that is a scheduler (its class name ends in Scheduler)."""
    return next((name for name, value in index.items() if isinstance(value, list) and len(value) == 2
                 and isinstance(value[1], str) and value[1].endswith("Scheduler")), None)


def _unet_config(unet_dir: Path) -> dict[str, Any]:
    path = unet_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{unet_dir} holds no UNet: it lacks config.json (a diffusers UNet2DModel folder has "
                          "config.json and diffusion_pytorch_model.safetensors)")
    config = read_json(path)
    kind = config.get("_class_name", "UNet2DModel")
    if kind != "UNet2DModel":
        raise ConfigError(f"{path} describes a {kind}; torch-ddpm imports pixel-space DDPMs built on UNet2DModel")
    return config


def _weights(unet_dir: Path) -> Path:
    for name in WEIGHTS:
        if (unet_dir / name).is_file():
            return unet_dir / name
    raise ConfigError(f"{unet_dir} holds a UNet config but no weights; it needs {WEIGHTS[0]} or {WEIGHTS[1]}")


def read_folder(root: str | Path) -> DiffusersFolder:
    """The UNet and scheduler of a diffusers folder in any of the three layouts (see the module)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    if (root / "model_index.json").is_file():
        index = read_json(root / "model_index.json")
        latent = component(index, ("AutoencoderKL", "VQModel"))
        if latent is not None:
            raise ConfigError(f"{root} is a latent-diffusion pipeline (its {latent!r} is an autoencoder); torch-ddpm "
                              "imports pixel-space DDPMs built on UNet2DModel")
        unet = component(index, ("UNet2DModel",))
        if unet is None:
            raise ConfigError(f"{root / 'model_index.json'} names no UNet2DModel; torch-ddpm imports pixel-space "
                              "DDPMs built on UNet2DModel")
        unet_dir = root / unet
        scheduler = scheduler_component(index)
        sched_path = root / scheduler / "scheduler_config.json" if scheduler else None
    elif (root / "config.json").is_file():
        unet_dir = root
        sched_path = next((p for p in (root / "scheduler_config.json", root.parent / "scheduler" / "scheduler_config.json")
                           if p.is_file()), None)
    elif (root / "unet" / "config.json").is_file():
        return read_folder(root / "unet")
    else:
        raise ConfigError(f"{root} holds no UNet: give a diffusers pipeline folder (model_index.json, unet/, "
                          "scheduler/) or a UNet2DModel folder (config.json and its weights)")
    config = _unet_config(unet_dir)
    scheduler_config = read_json(sched_path) if sched_path is not None and sched_path.is_file() else None
    return DiffusersFolder(root, unet_dir, config, _weights(unet_dir), scheduler_config)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a UNet weights file: safetensors, or a ``.bin`` read with weights_only=True;
    floating-point tensors as float32, attention projections under today's names."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a pickle that wants more than tensors is refused here
            raise CheckpointError(f"{path} cannot be read as plain tensors (torch.load with weights_only=True: "
                                  f"{first_line(err, 200)}); only weights, never code, are loaded from a .bin file") from None
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise CheckpointError(f"{path} is not a state dict of named tensors")
    return {_renamed(k): (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def _renamed(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_ATTENTION:
        parts[-2] = _OLD_ATTENTION[parts[-2]]
    return ".".join(parts)
