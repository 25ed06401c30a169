"""What every sampler shares: the model function type, the times it visits and where it ends, and
turning the model's output into x_0 and eps.

Every sampler takes the same settings (``ddpm.sampling`` lists them); the ones here:

- ``timesteps``: the times to visit instead of ``steps`` of ``grid`` (any order, fractional allowed);
  ``x_T`` is then x at the noisiest of them. ``t_start``: the noisiest time of the grid instead of
  T-1, for starting from a partly noised image (``x_T`` = x at t_start).
- ``final``: where the last step goes. ``"clean"`` (default): alpha_bar = 1, so the sample is the
  last prediction of x_0 (diffusers' ``set_alpha_to_one=True``, ``final_sigmas_type="zero"``);
  ``"t0"``: the noise level of timestep 0, returning x there (``set_alpha_to_one=False``,
  ``final_sigmas_type="sigma_min"``).
- ``clip``, ``threshold_percentile``, ``threshold_max``: clipping of the predicted x_0 (static to
  [-1, 1], or Imagen's dynamic thresholding with its percentile and an optional maximum of s).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..config import register_choices
from ..diffusion import CLIP_MODES, OBJECTIVES, VARIANCE_TYPES, check_choice, clip_x0, split_output
from ..errors import ConfigError
from ..schedules import Schedule

ModelFn = Callable[[Tensor, Tensor], Tensor]
"""``model_fn(x_t [B, C, H, W], t [B]) -> output [B, C or 2C, H, W]`` with t in the training
schedule's timesteps, 0..T-1: a long tensor at whole timesteps, a float tensor between them."""

Callback = Callable[[int, Tensor, Tensor], None]
"""``callback(i, x_t, pred_x0)``: called once per step with the step index (0 = first step,
the noisiest), the current sample and the model's prediction of x_0."""

FINALS = ("clean", "t0")
register_choices("final", FINALS)


def rounded_time(model_fn: ModelFn) -> ModelFn:
    """``model_fn`` called at the nearest whole timestep (a long tensor): for a network that only
    knows integer times, and what diffusers does with its karras and Lu grids (the solver still
    uses the exact noise level of the fractional time)."""
    return lambda x, t: model_fn(x, torch.round(t).long() if t.is_floating_point() else t)


def model_time(t: int | float, x: Tensor) -> Tensor:
    """The time ``t`` as the [B] tensor the model sees: long at a whole timestep, else float."""
    if isinstance(t, int):
        return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return torch.full((x.shape[0],), t, device=x.device, dtype=dtype)


def levels(schedule: Schedule, times: Sequence[int | float], final: str) -> list[float]:
    """alpha_bar at each visited time (noisiest first) and then at the end point ``final``, as
    Python floats: one device-to-host copy per call, so the per-step coefficient tables cost no
    synchronisation inside a sampler's loop."""
    check_choice("final step", final, FINALS)
    ab = schedule.alpha_bar_at(torch.tensor([float(t) for t in times], dtype=torch.float64)).tolist()
    return ab + [1.0 if final == "clean" else float(schedule.alphas_cumprod[0])]


def predict(
    model_fn: ModelFn,
    x: Tensor,
    t: int | float,
    alpha_bar: float,
    *,
    objective: str,
    clip: str | bool | None,
    threshold_percentile: float = 0.995,
    threshold_max: float | None = None,
    learned_variance: bool = False,
    clipped_eps: bool = True,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """x_0, eps and the variance output of the model at x [B, ...], time t, noise level alpha_bar.

    With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar): x = a x_0 + s eps and v = a eps - s x_0
    (Salimans & Ho 2022). eps is re-derived from the clipped x_0 when ``clipped_eps`` (diffusers'
    ``use_clipped_model_output=True``); otherwise it stays the model's own.
    """
    out = model_fn(x, model_time(t, x))
    prediction, var_output = split_output(out, x.shape[1], learned_variance)
    a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    if objective == "pred_noise":
        eps = prediction
        x0 = (x - s * eps) / a
    elif objective == "pred_x0":
        x0 = prediction
        eps = (x - a * x0) / s
    else:
        x0 = a * x - s * prediction
        eps = s * x + a * prediction
    if clip not in (False, None, "none"):
        x0 = clip_x0(x0, clip, threshold_percentile, threshold_max)
        if clipped_eps:
            eps = (x - a * x0) / s
    return x0, eps, var_output


def check_options(
    objective: str,
    variance_type: str,
    clip: str | bool | None,
    final: str = "clean",
    threshold_percentile: float = 0.995,
    threshold_max: float | None = None,
) -> None:
    """Raise a ConfigError for an unknown objective, variance type, clip mode or final step, or a
    threshold outside its range, before a sampler starts rather than at its first model call."""
    check_choice("objective", objective, OBJECTIVES)
    check_choice("variance type", variance_type, VARIANCE_TYPES)
    check_choice("final step", final, FINALS)
    if clip not in (True, False, None, *CLIP_MODES):
        raise ConfigError(f"unknown clip mode {clip!r}; choose one of {', '.join(CLIP_MODES)}")
    if not 0.0 < threshold_percentile <= 1.0:
        raise ConfigError(f"threshold_percentile must lie in (0, 1] (Imagen: 0.995); got {threshold_percentile!r}")
    if threshold_max is not None and not threshold_max > 0:
        raise ConfigError(f"threshold_max must be positive, or None for no maximum; got {threshold_max!r}")


def half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma), -inf at zero SNR and +inf at alpha_bar = 1 (clean data)."""
    if alpha_bar <= 0.0:
        return -math.inf
    if alpha_bar >= 1.0:
        return math.inf
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


def plan(
    schedule: Schedule,
    steps: int | None,
    grid: str,
    timesteps: Sequence[float] | None,
    t_start: float | None,
    final: str,
) -> tuple[list[int | float], list[float]]:
    """The visited times (noisiest first) and alpha_bar at each of them plus the end point."""
    from .timesteps import sampling_times

    times = sampling_times(schedule, steps, grid, timesteps, t_start)
    return times, levels(schedule, times, final)
