"""Samplers by name, each with the timestep grid that measured best for it.

DEFAULT_GRIDS holds, per sampler, the grid with the smallest error at 10 and 20 steps, summed
over the linear and cosine schedules (T = 1000), of |mean - 0.3| + |std - 0.2| for data
N(0.3, 0.2^2) plus the error in the weight of the +0.5 mode of a mixture (modes -0.5 / +0.5,
std 0.1, weights 0.3 / 0.7) against a 1000-step run, each on 8000 images of 1x4x4 (the same x_T
throughout), driven by the exact predictors of ``ddpm.analytic``, without clipping. Lower is
better; * = the default. ``benchmarks/sampler_grids.py`` prints this table:

                uniform  trailing   leading quadratic    karras    logsnr
    ancestral     0.419     0.395     0.383    *0.333     0.482     0.447
    ddim          0.307     0.303     0.313    *0.200     0.277     0.244
    dpm++2m       0.194     0.237     0.265     0.122     0.060    *0.045
    dpm++3m       0.266     0.227     0.340     0.139     0.153    *0.098
    dpm++2m-sde   0.451     0.266     0.439     0.199     0.123    *0.114

The stochastic rows (ancestral, dpm++2m-sde) carry sampling noise of about 0.01: with other
seeds dpm++2m-sde measured 0.111 (karras) and 0.110 (logsnr).

(Each sampler function's own ``grid`` default is the same entry, so calling it directly agrees.)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..schedules import Schedule
from .ancestral import sample_ancestral
from .common import Callback, ModelFn
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpm++2m": sample_dpmpp_2m,
    "dpm++3m": sample_dpmpp_3m,
    "dpm++2m-sde": sample_dpmpp_2m_sde,
}

DEFAULT_GRIDS: dict[str, str] = {
    "ancestral": "quadratic",
    "ddim": "quadratic",
    "dpm++2m": "logsnr",
    "dpm++3m": "logsnr",
    "dpm++2m-sde": "logsnr",
}

DEFAULT_STEPS: dict[str, int | None] = {"ancestral": None, "ddim": 50, "dpm++2m": 20, "dpm++3m": 20, "dpm++2m-sde": 20}
"""Model evaluations each sampler takes when the caller does not say (None: all T steps); the
facade and the command line use these."""


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name`` (a key of :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sample(
    name: str,
    model_fn: ModelFn,
    x_T: Tensor,
    schedule: Schedule,
    steps: int | None = None,
    *,
    eta: float = 0.0,
    grid: str | None = None,
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Run sampler ``name`` from x_T [B, C, H, W] to x_0 [B, C, H, W].

    ``steps`` model evaluations (None: all T) on ``grid`` (None: the sampler's default,
    :data:`DEFAULT_GRIDS`). ``eta`` is DDIM's; any other sampler rejects eta != 0 rather than
    silently ignoring it.
    """
    fn = get_sampler(name)
    grid = DEFAULT_GRIDS[name] if grid is None else grid
    options = dict(grid=grid, objective=objective, variance_type=variance_type, clip=clip,
                   generator=generator, callback=callback)
    if name == "ddim":
        return fn(model_fn, x_T, schedule, steps, eta=eta, **options)
    if eta != 0:
        raise ConfigError(
            f"eta={eta!r} applies only to the 'ddim' sampler; sampler {name!r} has no eta, so leave it at 0"
        )
    return fn(model_fn, x_T, schedule, steps, **options)
