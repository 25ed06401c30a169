"""Ancestral sampling (Ho et al. Algorithm 2), on the full chain or any subsequence of it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion import model_log_variance, q_posterior
from ..schedules import Schedule
from .common import Callback
from .denoiser import Denoiser
from .plan import Plan
from .public import public_sampler


@torch.inference_mode()
def run_ancestral(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """x [B, C, H, W] at ``plan.times[0]`` -> x_0 by ancestral steps over the plan (see
    :func:`sample_ancestral`)."""
    times, ab = plan.times, plan.alpha_bars
    visited, end = list(ab[:-1][::-1]), plan.end  # visited alpha_bars from the least noisy up
    to_end = end < 1.0 and end > visited[0]  # an extra level below the least noisy visited one
    # the chain's step k goes from its level k to level k - 1 (level -1: clean data)
    s = Schedule.from_alpha_bars(([end] if to_end else []) + visited).to(x.device)
    n, first = len(times), int(to_end)
    for i, t in enumerate(times):
        k = first + n - 1 - i  # this time's index in the chain
        x0, _, var_output = denoiser(x, t, ab[i])
        if callback is not None:
            callback(i, x, x0)
        if k == 0 and end < 1.0:  # the grid already ends at the final level: nothing left to do
            break
        x = posterior_step(s, x0, x, k, denoiser.variance_type, var_output, generator)
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


sample_ancestral = public_sampler("sample_ancestral", run_ancestral, grid="quadratic", doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 by drawing x_{t-1} ~ p(x_{t-1} | x_t)
    step by step (common settings: :mod:`ddpm.sampling.common`).

    With fewer steps than T the chain visits only the chosen times, using the respaced betas that
    keep alpha_bar at each visited step (Nichol & Dhariwal section 4); the network still sees the
    original timesteps. A last step to clean data returns the posterior mean, which is then the
    predicted x_0 (no noise is added); with ``final="t0"`` the last step is an ordinary one to the
    noise level of timestep 0, unless the grid already ends there (then x is returned as it is).
    """)
