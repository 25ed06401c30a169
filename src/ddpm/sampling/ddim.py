"""DDIM (Song et al. 2021): a non-Markovian reverse process with the same marginals as DDPM,
deterministic at eta = 0 and equal to the ancestral sampler at eta = 1 on the full chain."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError
from ..schedules import Schedule
from .common import Callback, ModelFn, check_options, plan, predict


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
def sample_ddim(
    model_fn: ModelFn,
    x_T: Tensor,
    schedule: Schedule,
    steps: int | None = None,
    *,
    grid: str = "quadratic",
    timesteps: Sequence[float] | None = None,
    t_start: float | None = None,
    final: str = "clean",
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
    threshold_percentile: float = 0.995,
    threshold_max: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    clipped_eps: bool = True,
) -> Tensor:
    """x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by DDIM over ``steps``
    timesteps of ``grid`` (or the given ``timesteps``; common settings: :mod:`ddpm.sampling.common`).

    ``eta`` = 0 is deterministic (the probability-flow ODE's first-order solver); eta = 1 adds
    the posterior's noise. With ``final="clean"`` the last step returns the predicted x_0.
    ``clipped_eps`` re-derives eps from the clipped x_0 (so x_0 and eps stay consistent); False uses
    the model's own eps in the direction term, as diffusers' DDIM does by default. A learned
    variance (the second half of a 2C-channel output) is ignored: DDIM's variance is set by eta.
    """
    check_options(objective, variance_type, clip, final, threshold_percentile, threshold_max)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must lie between 0 (deterministic DDIM) and 1 (ancestral noise); got {eta!r}")
    times, ab = plan(schedule, steps, grid, timesteps, t_start, final)
    coefs = [ddim_coefficients(ab[k], ab[k + 1], eta) for k in range(len(times))]
    learned = variance_type == "learned_range"
    x = x_T
    for i, t in enumerate(times):
        x0, eps, _ = predict(model_fn, x, t, ab[i], objective=objective, clip=clip, threshold_percentile=threshold_percentile,
                             threshold_max=threshold_max, learned_variance=learned, clipped_eps=clipped_eps)
        if callback is not None:
            callback(i, x, x0)
        c_x0, c_eps, sigma = coefs[i]
        x = c_x0 * x0 + c_eps * eps
        if sigma > 0:  # a Python float: no device sync; zero on a last step to clean data and at eta = 0
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
