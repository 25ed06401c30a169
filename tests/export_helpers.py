"""Helpers shared by the export tests: tiny runs whose weights are scrambled, so that the network's
output is far from zero and depends on its inputs (a two-step run's zero-initialised last layer
would make every comparison of outputs trivially small)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from serve_helpers import TINY
from ddpm.config import RunConfig, apply_overrides
from ddpm.training.loop import train


def scramble(run: Path, seed: int = 0, scale: float = 0.3) -> None:
    """Add N(0, scale^2) to every float weight of every checkpoint of ``run`` (EMA and raw)."""
    g = torch.Generator().manual_seed(seed)
    for path in sorted(run.glob("checkpoints/*/*.safetensors")):
        weights = load_file(path)
        for k, v in weights.items():
            if v.is_floating_point():
                weights[k] = v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)
        save_file(weights, path)


def tiny_run(root: Path, name: str, seed: int = 0, **settings: str) -> Path:
    """A two-step run of the serve tests' tiny network with ``settings``, its weights scrambled."""
    config = {**TINY, "timesteps": "50", "runs_dir": str(root), "name": name, **settings}
    train(apply_overrides(RunConfig(), config), log=lambda m: None, progress=False)
    scramble(root / name, seed)
    return root / name
