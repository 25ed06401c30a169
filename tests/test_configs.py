"""Every shipped config file loads, and builds a model that fits its data."""

from pathlib import Path

import pytest
import torch

from ddpm.config import load_toml
from ddpm.runs.build import build_diffusion

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.toml"))
SIZES = {"digits": ((8, 8), 1), "mnist10k": ((28, 28), 1), "mnist": ((28, 28), 1), "fashion-mnist": ((28, 28), 1), "cifar10": ((32, 32), 3)}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_builds(path):
    config = load_toml(path)
    size, channels = SIZES.get(config.data.dataset, ((64, 64), 3))
    config.data.image_size = config.data.image_size or size
    config.data.channels = config.data.channels or channels
    config.data.num_classes = 10 if config.data.class_conditional else 0
    diffusion = build_diffusion(config)
    images = torch.rand(1, config.data.channels, *diffusion.image_size)
    labels = torch.tensor([3]) if config.data.class_conditional else None
    assert torch.isfinite(diffusion(images, labels))


def test_the_default_config_file_is_the_default():
    from ddpm.config import RunConfig

    default = load_toml(Path(__file__).resolve().parent.parent / "configs" / "mnist10k.toml")
    assert default == RunConfig()
