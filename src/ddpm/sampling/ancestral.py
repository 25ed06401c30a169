"""Ancestral sampling (Ho et al. Algorithm 2), on the full chain or any subsequence of it."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..diffusion import model_log_variance, q_posterior
from ..schedules import Schedule
from .common import Callback, ModelFn, check_options, plan, predict


@torch.inference_mode()
def sample_ancestral(
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
) -> Tensor:
    """x_T [B, C, H, W] (x at the first visited time) -> x_0 by drawing x_{t-1} ~ p(x_{t-1} | x_t)
    step by step (common settings: :mod:`ddpm.sampling.common`).

    With fewer steps than T the chain visits only the chosen times, using the respaced betas that
    keep alpha_bar at each visited step (Nichol & Dhariwal section 4); the network still sees the
    original timesteps. A last step to clean data returns the posterior mean, which is then the
    predicted x_0 (no noise is added); with ``final="t0"`` the last step is an ordinary one to the
    noise level of timestep 0, unless the grid already ends there (then x is returned as it is).
    """
    check_options(objective, variance_type, clip, final, threshold_percentile, threshold_max)
    times, ab = plan(schedule, steps, grid, timesteps, t_start, final)
    visited, end = ab[:-1][::-1], ab[-1]  # visited alpha_bars from the least noisy up
    to_end = end < 1.0 and end > visited[0]  # an extra level below the least noisy visited one
    # the chain's step k goes from its level k to level k - 1 (level -1: clean data)
    s = Schedule.from_alpha_bars(([end] if to_end else []) + visited).to(schedule.device)
    n, first = len(times), int(to_end)
    learned = variance_type == "learned_range"
    x = x_T
    for i, t in enumerate(times):
        k = first + n - 1 - i  # this time's index in the chain
        x0, _, var_output = predict(model_fn, x, t, ab[i], objective=objective, clip=clip,
                                    threshold_percentile=threshold_percentile, threshold_max=threshold_max,
                                    learned_variance=learned)
        if callback is not None:
            callback(i, x, x0)
        if k == 0 and end < 1.0:  # the grid already ends at the final level: nothing left to do
            break
        x = posterior_step(s, x0, x, k, variance_type, var_output, generator)
    return x


def posterior_step(
    chain: Schedule,
    x0: Tensor,
    x: Tensor,
    k: int,
    variance_type: str,
    var_output: Tensor | None,
    generator: torch.Generator | None,
) -> Tensor:
    """x_{k-1} ~ p(x_{k-1} | x_k) = N(mu-tilde(x_k, x0), sigma_k^2) on ``chain`` from its level
    k (Ho et al. eq. 7 and Algorithm 2, line 4); level 0 steps to clean data and
    returns the posterior mean, which there is x0 itself, without noise. The step of
    :func:`sample_ancestral`, also taken by RePaint (:mod:`ddpm.sampling.inpaint`)."""
    index = torch.full((x.shape[0],), k, device=x.device, dtype=torch.long)
    mean, _, _ = q_posterior(chain, x0, x, index)
    if k == 0:
        return mean
    log_var = model_log_variance(chain, variance_type, index, x, var_output)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return mean + torch.exp(0.5 * log_var) * noise
