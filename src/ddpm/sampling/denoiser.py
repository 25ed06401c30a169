"""The denoiser: a model function with everything needed to read its output, built once per call
of a sampler (in the style of k-diffusion's model wrappers).

A sampler never sees the network's objective, its variance type or the clipping: it calls
``denoiser(x, t, alpha_bar)`` and gets x_0, eps and the variance output. Classifier-free guidance
stays a wrapper of the model function (:mod:`ddpm.sampling.guidance`), below the denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..diffusion import predicted_x0_eps, split_output
from .common import ModelFn, check_options, model_time


@dataclass(frozen=True)
class Denoiser:
    """``model_fn`` read under ``objective`` (``pred_noise``, ``pred_x0`` or ``pred_v``) and
    ``variance_type`` (``learned_range``: the model's second C channels are its variance), its x_0
    clipped by ``clip`` (``static``, ``dynamic`` with ``threshold_percentile`` and ``threshold_max``,
    or none) and eps re-derived from the clipped x_0 when ``clipped_eps`` (:func:`ddpm.diffusion.predicted_x0_eps`).
    The settings are checked when it is made: a bad one fails before the first model call."""

    model_fn: ModelFn
    objective: str = "pred_noise"
    variance_type: str = "fixed_small"
    clip: str | bool | None = "static"
    threshold_percentile: float = 0.995
    threshold_max: float | None = None
    clipped_eps: bool = True

    def __post_init__(self) -> None:
        check_options(self.objective, self.variance_type, self.clip, "clean", self.threshold_percentile,
                      self.threshold_max)

    @property
    def learned_variance(self) -> bool:
        return self.variance_type == "learned_range"

    def __call__(self, x: Tensor, t: int | float, alpha_bar: float) -> tuple[Tensor, Tensor, Tensor | None]:
        """x_0 [B, C, H, W], eps [B, C, H, W] and the variance output ([B, C, H, W] or None) of the
        model at x [B, C, H, W], time t (whole or fractional) and its noise level alpha_bar
        (x = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, Ho et al. eq. 4)."""
        out = self.model_fn(x, model_time(t, x))
        prediction, var_output = split_output(out, x.shape[1], self.learned_variance)
        x0, eps = predicted_x0_eps(self.objective, prediction, x, math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar),
                                   clip=self.clip, percentile=self.threshold_percentile, max_value=self.threshold_max,
                                   clipped_eps=self.clipped_eps)
        return x0, eps, var_output
