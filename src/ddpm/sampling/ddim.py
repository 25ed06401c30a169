"""DDIM (Song et al. 2021): a non-Markovian reverse process with the same marginals as DDPM,
deterministic at eta = 0 and equal to the ancestral sampler at eta = 1 on the full chain."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from ..schedules import Schedule
from .common import Callback, ModelFn, alpha_bars, check_options, full_index, predict
from .timesteps import get_timesteps


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
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """x_T [B, C, H, W] ~ N(0, I) -> x_0 [B, C, H, W] by DDIM over ``steps`` timesteps of ``grid``.

    ``eta`` = 0 is deterministic (the probability-flow ODE's first-order solver); eta = 1 adds
    the posterior's noise. The last step returns the predicted x_0. A learned variance (the second
    half of a 2C-channel output) is ignored: DDIM's variance is set by eta.
    """
    check_options(objective, variance_type, clip)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must lie between 0 (deterministic DDIM) and 1 (ancestral noise); got {eta!r}")
    ts = get_timesteps(grid, schedule, schedule.num_timesteps if steps is None else steps)
    ab = alpha_bars(schedule, ts)
    coefs = [ddim_coefficients(ab[k], ab[k - 1] if k > 0 else 1.0, eta) for k in range(len(ts))]
    learned = variance_type == "learned_range"
    x = x_T
    for i, k in enumerate(reversed(range(len(ts)))):
        t = full_index(ts[k], x)
        x0, eps, _ = predict(model_fn, schedule, x, t, t, objective=objective, clip=clip, learned_variance=learned)
        if callback is not None:
            callback(i, x, x0)
        c_x0, c_eps, sigma = coefs[k]
        x = c_x0 * x0 + c_eps * eps
        if sigma > 0:  # a Python float: no device sync; zero on the last step and at eta = 0
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
