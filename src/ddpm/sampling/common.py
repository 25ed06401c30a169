"""What every sampler shares: the model function type and turning its output into x_0 and eps."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..diffusion import CLIP_MODES, OBJECTIVES, VARIANCE_TYPES, check_choice, clip_x0, eps_from_x0, split_output, x0_and_eps
from ..errors import ConfigError
from ..schedules import Schedule

ModelFn = Callable[[Tensor, Tensor], Tensor]
"""``model_fn(x_t [B, C, H, W], t [B]) -> output [B, C or 2C, H, W]`` with t in the training
schedule's integer timesteps, 0..T-1."""

Callback = Callable[[int, Tensor, Tensor], None]
"""``callback(i, x_t, pred_x0)``: called once per step with the step index (0 = first step,
the noisiest), the current sample and the model's prediction of x_0."""


def predict(
    model_fn: ModelFn,
    s: Schedule,
    x: Tensor,
    index: Tensor,
    model_t: Tensor,
    *,
    objective: str,
    clip: str | bool | None,
    learned_variance: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """x_0, eps (consistent with the clipped x_0) and the variance output at x, all [B, ...].

    ``index`` indexes ``s`` (which may be a respaced schedule); ``model_t`` is the timestep the
    network sees, in the units it was trained with.
    """
    out = model_fn(x, model_t)
    prediction, var_output = split_output(out, x.shape[1], learned_variance)
    x0, eps = x0_and_eps(s, objective, prediction, x, index)
    if clip not in (False, None, "none"):
        x0 = clip_x0(x0, clip)
        eps = eps_from_x0(s, x, index, x0)
    return x0, eps, var_output


def full_index(i: int, x: Tensor) -> Tensor:
    """The integer ``i`` as a [B] long tensor on x's device."""
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


def check_options(objective: str, variance_type: str, clip: str | bool | None) -> None:
    """Raise a ConfigError for an unknown objective, variance type or clip mode before a sampler
    starts, rather than at its first model call."""
    check_choice("objective", objective, OBJECTIVES)
    check_choice("variance type", variance_type, VARIANCE_TYPES)
    if clip not in (True, False, None, *CLIP_MODES):
        raise ConfigError(f"unknown clip mode {clip!r}; choose one of {', '.join(CLIP_MODES)}")


def alpha_bars(schedule: Schedule, timesteps: list[int]) -> list[float]:
    """alpha_bar at each of ``timesteps`` as Python floats: one device-to-host copy per call, so
    the per-step coefficient tables cost no synchronisation inside a sampler's loop."""
    ab = schedule.alphas_cumprod.tolist()
    return [ab[t] for t in timesteps]
