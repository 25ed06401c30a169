"""Samplers by name, each with the timestep grid that measured best for it.

DEFAULT_GRIDS holds, per sampler, the grid with the smallest error at 10 and 20 steps, summed
over the linear and cosine schedules (T = 1000), of |mean - 0.3| + |std - 0.2| for data
N(0.3, 0.2^2) plus the error in the weight of the +0.5 mode of a mixture (modes -0.5 / +0.5,
std 0.1, weights 0.3 / 0.7) against a 1000-step run, each on 8000 images of 1x4x4 (the same x_T
throughout), driven by the exact predictors of ``ddpm.analytic``, without clipping. Lower is
better; * = the default. ``benchmarks/sampler_grids.py`` prints this table:

                uniform trailing leading quadratic karras logsnr tapered linspace karras-sigmas lu-lambdas
    ancestral     0.419    0.395   0.383    *0.333  0.482  0.447   0.417    0.396         0.710      0.511
    ddim          0.307    0.303   0.313    *0.200  0.277  0.244   0.234    0.306         0.486      0.298
    dpm++2m       0.194    0.237   0.265     0.122  0.060  0.045  *0.047    0.240         0.167      0.063
    dpm++3m       0.266    0.227   0.340     0.139  0.153  0.098  *0.056    0.230         0.258      0.118
    dpm++2m-sde   0.451    0.266   0.439     0.199  0.123  0.114  *0.112    0.271         0.274      0.161
    unipc2        0.180    0.218   0.280     0.089  0.066  0.044  *0.038    0.221         0.172      0.057
    unipc3        0.199    0.217   0.301     0.099  0.161  0.090  *0.039    0.220         0.219      0.112

The stochastic rows (ancestral, dpm++2m-sde) carry sampling noise of about 0.01 (with other seeds
dpm++2m-sde measured 0.111 on karras and 0.110 on logsnr before ``tapered`` existed).

dpm++2m, the default sampler, must also reproduce the standard deviation of N(0.1, 0.25^2) data
within 2% at 10 steps and 1% at 20 (exactly computed, linear schedule): its default is the best
grid that does. logsnr, 0.002 lower above, gives +2.43% and +1.38%; tapered +0.76% and +0.57%;
diffusers' best, ``lu-lambdas``, +2.40% and +1.33% (the script prints every grid's figures).

(Each sampler function's own ``grid`` default is the same entry, so calling it directly agrees.)
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..config import register_choices
from ..errors import ConfigError
from ..schedules import Schedule
from .ancestral import sample_ancestral
from .common import Callback, ModelFn
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from .unipc import sample_unipc


def _with_order(order: int) -> Callable[..., Tensor]:
    """sample_unipc with ``order`` fixed (its signature shows order={order} as the default)."""
    fn = partial(sample_unipc, order=order)
    fn.__name__ = f"sample_unipc{order}"  # type: ignore[attr-defined]
    fn.__doc__ = f"UniPC-bh2 of order {order}: :func:`ddpm.sampling.unipc.sample_unipc` with order={order}."
    return fn


sample_unipc2 = _with_order(2)
sample_unipc3 = _with_order(3)

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "dpm++2m": sample_dpmpp_2m,
    "dpm++3m": sample_dpmpp_3m,
    "dpm++2m-sde": sample_dpmpp_2m_sde,
    "unipc2": sample_unipc2,
    "unipc3": sample_unipc3,
}
register_choices("sampler", SAMPLERS)

DEFAULT_GRIDS: dict[str, str] = {
    "ancestral": "quadratic",
    "ddim": "quadratic",
    "dpm++2m": "tapered",
    "dpm++3m": "tapered",
    "dpm++2m-sde": "tapered",
    "unipc2": "tapered",
    "unipc3": "tapered",
}

DEFAULT_STEPS: dict[str, int | None] = {"ancestral": None, "ddim": 50, "dpm++2m": 20, "dpm++3m": 20, "dpm++2m-sde": 20,
                                        "unipc2": 20, "unipc3": 20}
"""Model evaluations each sampler takes when the caller does not say (None: all T steps); the
facade and the command line use these."""

OWN_OPTIONS: dict[str, tuple[str, ...]] = {"ddim": ("eta", "clipped_eps")}
"""Settings that only some samplers have; :func:`sample` refuses them for the others."""


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
    timesteps: Sequence[float] | None = None,
    t_start: float | None = None,
    final: str = "clean",
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
    threshold_percentile: float = 0.995,
    threshold_max: float | None = None,
    clipped_eps: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Run sampler ``name`` from x_T [B, C, H, W] (x at the first visited time) to x_0 [B, C, H, W].

    ``steps`` model evaluations (None: all T) on ``grid`` (None: the sampler's default,
    :data:`DEFAULT_GRIDS`) from ``t_start`` (None: T-1) down, or the explicit ``timesteps``; the
    other settings are described in :mod:`ddpm.sampling.common`. ``eta`` and ``clipped_eps`` are
    DDIM's; any other sampler rejects them at values other than their defaults rather than
    silently ignoring them.
    """
    fn = get_sampler(name)
    grid = DEFAULT_GRIDS[name] if grid is None else grid
    options = dict(grid=grid, timesteps=timesteps, t_start=t_start, final=final, objective=objective,
                   variance_type=variance_type, clip=clip, threshold_percentile=threshold_percentile,
                   threshold_max=threshold_max, generator=generator, callback=callback)
    own = {"eta": (eta, 0.0), "clipped_eps": (clipped_eps, True)}
    for option, (value, default) in own.items():
        if value != default and option not in OWN_OPTIONS.get(name, ()):
            raise ConfigError(
                f"{option}={value!r} applies only to the 'ddim' sampler; sampler {name!r} has no {option}, "
                f"so leave it at {default if isinstance(default, bool) else format(default, 'g')}"
            )
    if name == "ddim":
        return fn(model_fn, x_T, schedule, steps, eta=eta, clipped_eps=clipped_eps, **options)
    return fn(model_fn, x_T, schedule, steps, **options)
