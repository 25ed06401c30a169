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
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import register_choices
from ..errors import ConfigError
from .ancestral import run_ancestral, sample_ancestral
from .common import Callback
from .ddim import run_ddim, sample_ddim
from .denoiser import Denoiser
from .plan import Plan
from .dpm_solver import (run_dpmpp_2m, run_dpmpp_2m_sde, run_dpmpp_3m, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                         sample_dpmpp_3m)
from .public import PublicSampler, bind, prepare, signature
from .unipc import run_unipc


def _with_order(order: int) -> PublicSampler:
    """sample_unipc with ``order`` fixed (its signature shows order={order} as the default)."""
    return PublicSampler(f"sample_unipc{order}", run_unipc, grid="tapered", own={"order": order, "lower_order_final": True},
                         doc=f"UniPC-bh2 of order {order}: :func:`ddpm.sampling.unipc.sample_unipc` with order={order}.")


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

CORES: dict[str, Callable[..., Tensor]] = {
    "ancestral": run_ancestral,
    "ddim": run_ddim,
    "dpm++2m": run_dpmpp_2m,
    "dpm++3m": run_dpmpp_3m,
    "dpm++2m-sde": run_dpmpp_2m_sde,
    "unipc2": partial(run_unipc, order=2),
    "unipc3": partial(run_unipc, order=3),
}
"""Each sampler's core, ``core(denoiser, x, plan, *, generator=None, callback=None, <own options>)``."""

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
facade and the command line use these (:func:`ddpm.sampling.settings.steps_and_grid`)."""

OWN_OPTIONS: dict[str, tuple[str, ...]] = {"ddim": ("eta", "clipped_eps")}
"""Settings that only some samplers have; :func:`sample` refuses them for the others."""


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name`` (a key of :data:`SAMPLERS`)."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_own_options(name: str, eta: float = 0.0, clipped_eps: bool = True) -> None:
    """Refuse DDIM's ``eta`` and ``clipped_eps`` at values other than their defaults for any other
    sampler, rather than silently ignoring them."""
    own = {"eta": (eta, 0.0), "clipped_eps": (clipped_eps, True)}
    for option, (value, default) in own.items():
        if value != default and option not in OWN_OPTIONS.get(name, ()):
            raise ConfigError(
                f"{option}={value!r} applies only to the 'ddim' sampler; sampler {name!r} has no {option}, "
                f"so leave it at {default if isinstance(default, bool) else format(default, 'g')}"
            )


def run_sampler(
    name: str, denoiser: Denoiser, x: Tensor, plan: Plan, *, eta: float = 0.0, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The core of sampler ``name`` from x [B, C, H, W] at ``plan.times[0]`` to x_0 [B, C, H, W];
    ``eta`` (and the denoiser's ``clipped_eps``) are DDIM's and refused at other values for the rest."""
    get_sampler(name)
    check_own_options(name, eta, denoiser.clipped_eps)
    own = {"eta": eta} if name == "ddim" else {}
    return CORES[name](denoiser, x, plan, generator=generator, callback=callback, **own)


class _Sample:
    """:func:`sample`'s signature is the public samplers' with ``name`` first, ``grid`` default None
    and both of DDIM's options (see :mod:`ddpm.sampling.public`)."""

    __signature__ = signature(None, {"eta": 0.0, "clipped_eps": True}, first=("name",))
    __name__ = __qualname__ = "sample"
    __doc__ = """Run sampler ``name`` from x_T [B, C, H, W] (x at the first visited time) to x_0 [B, C, H, W].

    ``steps`` model evaluations (None: all T) on ``grid`` (None: the sampler's default,
    :data:`DEFAULT_GRIDS`) from ``t_start`` (None: T-1) down, or the explicit ``timesteps``; the
    other settings are described in :mod:`ddpm.sampling.common`. ``eta`` and ``clipped_eps`` are
    DDIM's; any other sampler rejects them at values other than their defaults rather than
    silently ignoring them.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        a = bind(self.__signature__, args, kwargs)
        name = a["name"]
        get_sampler(name)
        check_own_options(name, a["eta"], a["clipped_eps"])
        denoiser, plan = prepare(a, DEFAULT_GRIDS[name] if a["grid"] is None else a["grid"])
        return run_sampler(name, denoiser, a["x_T"], plan, eta=a["eta"], generator=a["generator"], callback=a["callback"])


sample = _Sample()
