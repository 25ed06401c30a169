"""torch-ddpm: Denoising Diffusion Probabilistic Models (Ho et al. 2020) in PyTorch.

The math lives in plain modules (``schedules``, ``diffusion``, ``likelihood``, ``losses``,
``sampling``); ``GaussianDiffusion`` and ``Unet`` give the familiar object API on top.
"""

from ._version import __version__

from .errors import CheckpointError, ConfigError, DataError, DDPMError
from .facade import GaussianDiffusion
from .likelihood import bits_per_dim
from .losses import training_losses
from .models import Unet
from .runs.load import load_run
from .sampling import (
    SAMPLERS,
    get_timesteps,
    guided_model_fn,
    sample,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_3m,
    sample_unipc,
)
from .schedules import Schedule, get_schedule
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DDPMError",
    "DataError",
    "GaussianDiffusion",
    "SAMPLERS",
    "Schedule",
    "Trainer",
    "Unet",
    "__version__",
    "bits_per_dim",
    "get_schedule",
    "get_timesteps",
    "load_run",
    "guided_model_fn",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_unipc",
    "training_losses",
]
