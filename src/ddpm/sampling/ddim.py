"""DDIM (Song et al. 2021): a non-Markovian reverse process with the same marginals as DDPM,
deterministic at eta = 0 and equal to the ancestral sampler at eta = 1 on the full chain."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from .common import Callback
from .denoiser import Denoiser
from .plan import Plan
from .public import public_sampler


def ddim_coefficients(alpha_bar: float, alpha_bar_prev: float, eta: float) -> tuple[float, float, float]:
    """(c_x0, c_eps, sigma) of one DDIM step from alpha_bar to alpha_bar_prev (> alpha_bar).

    Song et al. eq. 12: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z, with
    eq. 16: sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev). At eta = 1, sigma^2 is
    the posterior variance beta-tilde and the mean is the posterior mean mu-tilde(x_t, x0).
    """
    sigma = eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev))
    # rounding can push 1 - a_prev - sigma^2 a hair below zero at eta = 1
    c_eps = math.sqrt(max(1.0 - alpha_bar_prev - sigma * sigma, 0.0))
    return math.sqrt(alpha_bar_prev), c_eps, sigma


@torch.inference_mode()
def run_ddim(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, eta: float = 0.0, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """x [B, C, H, W] at ``plan.times[0]`` -> x_0 by DDIM steps over the plan with noise ``eta``
    (see :func:`sample_ddim`)."""
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must lie between 0 (deterministic DDIM) and 1 (ancestral noise); got {eta!r}")
    ab = plan.alpha_bars
    coefs = [ddim_coefficients(ab[k], ab[k + 1], eta) for k in range(len(plan))]
    for i, t in enumerate(plan.times):
        x0, eps, _ = denoiser(x, t, ab[i])
        if callback is not None:
            callback(i, x, x0)
        c_x0, c_eps, sigma = coefs[i]
        x = c_x0 * x0 + c_eps * eps
        if sigma > 0:  # a Python float: no device sync; zero on a last step to clean data and at eta = 0
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


sample_ddim = public_sampler("sample_ddim", run_ddim, grid="quadratic", own={"eta": 0.0, "clipped_eps": True}, doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by DDIM over ``steps``
    timesteps of ``grid`` (or the given ``timesteps``; common settings: :mod:`ddpm.sampling.common`).

    ``eta`` = 0 is deterministic (the probability-flow ODE's first-order solver); eta = 1 adds
    the posterior's noise. With ``final="clean"`` the last step returns the predicted x_0.
    ``clipped_eps`` re-derives eps from the clipped x_0 (so x_0 and eps stay consistent); False uses
    the model's own eps in the direction term, as diffusers' DDIM does by default. A learned
    variance (the second half of a 2C-channel output) is ignored: DDIM's variance is set by eta.
    """)
