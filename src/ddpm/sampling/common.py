"""What every sampler shares: the model function and callback types, the check of the common
settings, and the model's view of time. The model with its settings is a :class:`~ddpm.sampling.denoiser.Denoiser`,
the visited times a :class:`~ddpm.sampling.plan.Plan`.

Every public sampler takes the same settings (``ddpm.sampling`` lists them):

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
from ..diffusion import CLIP_MODES, OBJECTIVES, VARIANCE_TYPES, check_choice
from ..errors import ConfigError

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


def lambda_steps(alpha_bars_visited: Sequence[float], end: float) -> tuple[list[float], list[tuple[float, float, float, float]]]:
    """For a multistep solver over the visited alpha_bars (noisiest first) and then ``end``: lambda at
    each (:func:`half_log_snr`, ``end`` last) and, per step i, (alpha_t, sigma_t, sigma_s, h): alpha and
    sigma of its target level and sigma of its start, alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar),
    h = lambda_{i+1} - lambda_i."""
    ab = list(alpha_bars_visited) + [end]
    lam = [half_log_snr(a) for a in ab]
    return lam, [(math.sqrt(ab[i + 1]), math.sqrt(1.0 - ab[i + 1]), math.sqrt(1.0 - ab[i]), lam[i + 1] - lam[i])
                 for i in range(len(ab) - 1)]
