"""Ancestral sampling (Ho et al. Algorithm 2), on the full chain or any subsequence of it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion import p_mean_variance
from ..schedules import Schedule
from .common import Callback, ModelFn, full_index
from .timesteps import get_timesteps


@torch.inference_mode()
def sample_ancestral(
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
) -> Tensor:
    """x_T [B, C, H, W] ~ N(0, I) -> x_0 by drawing x_{t-1} ~ p(x_{t-1} | x_t) step by step.

    With ``steps`` below T the chain visits only the timesteps of ``grid``, using the respaced
    betas that keep alpha_bar at each visited step (Nichol & Dhariwal section 4); the network
    still sees the original timesteps. The last step returns the mean (no noise is added).
    """
    T = schedule.num_timesteps
    ts = get_timesteps(grid, schedule, T if steps is None else steps)
    s = schedule if len(ts) == T else schedule.respaced(ts)
    x = x_T
    for i, idx in enumerate(reversed(range(len(ts)))):
        index = full_index(idx, x)
        out = model_fn(x, full_index(ts[idx], x))
        p = p_mean_variance(s, out, x, index, objective=objective, variance_type=variance_type, clip=clip)
        if callback is not None:
            callback(i, x, p.pred_x0)
        if idx > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = p.mean + torch.exp(0.5 * p.log_variance) * noise
        else:
            x = p.mean
    return x
