"""Gaussian diffusion math (Ho et al. 2020) as plain functions of a :class:`Schedule`.

Nothing here holds or calls a network: functions that need the model's prediction take its
output tensor. Shapes: images ``x`` are [B, C, H, W] (any trailing dims work); timesteps ``t``
are integer tensors [B] indexing the schedule, 0 = least noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import register_choices
from .errors import ConfigError
from .schedules import Schedule

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")
CLIP_MODES = ("static", "dynamic", "none")
register_choices(("objective", "student_objective"), OBJECTIVES)
register_choices("clip", CLIP_MODES)
register_choices("variance_type", ("auto",) + VARIANCE_TYPES)


def check_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")
    return value


def extract(coef: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """coef[t] as [B, 1, ..., 1] in x's dtype, ready to broadcast against x [B, ...]."""
    out = coef.to(t.device)[t].to(x.dtype)
    return out.reshape(t.shape[0], *((1,) * (x.ndim - 1)))


# ---- forward process q --------------------------------------------------------------------


def q_sample(s: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4). [B, ...]"""
    return extract(s.sqrt_alphas_cumprod, t, x0) * x0 + extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_sample_at(x0: Tensor, alpha_bar: float, noise: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps at one noise level ``alpha_bar`` (a Python
    float, any time on or between the timesteps; eq. 4) for the whole batch. [B, ...]"""
    return math.sqrt(alpha_bar) * x0 + math.sqrt(1.0 - alpha_bar) * noise


def q_mean_variance(s: Schedule, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and log variance of q(x_t | x_0) (eq. 4); variances are [B, 1, ..., 1]."""
    mean = extract(s.sqrt_alphas_cumprod, t, x0) * x0
    var = extract(1.0 - s.alphas_cumprod, t, x0)
    return mean, var, torch.log(var)


def q_posterior(s: Schedule, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde) (Ho et al. eqs. 6-7).

    Returns the mean [B, ...], the variance and the clipped log variance ([B, 1, ..., 1]).
    """
    mean = extract(s.posterior_mean_coef1, t, xt) * x0 + extract(s.posterior_mean_coef2, t, xt) * xt
    return mean, extract(s.posterior_variance, t, xt), extract(s.posterior_log_variance_clipped, t, xt)


# ---- conversions between what a network may predict ---------------------------------------


def x0_from_eps(s: Schedule, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Invert eq. 4: x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)."""
    return (xt - extract(s.sqrt_one_minus_alphas_cumprod, t, xt) * eps) / extract(s.sqrt_alphas_cumprod, t, xt)


def eps_from_x0(s: Schedule, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """Invert eq. 4 the other way: eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)."""
    return (xt - extract(s.sqrt_alphas_cumprod, t, xt) * x0) / extract(s.sqrt_one_minus_alphas_cumprod, t, xt)


def v_from_x0_eps(s: Schedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Velocity (Salimans & Ho 2022): v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0."""
    return extract(s.sqrt_alphas_cumprod, t, x0) * eps - extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def x0_from_v(s: Schedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v."""
    return extract(s.sqrt_alphas_cumprod, t, xt) * xt - extract(s.sqrt_one_minus_alphas_cumprod, t, xt) * v


def eps_from_v(s: Schedule, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v."""
    return extract(s.sqrt_one_minus_alphas_cumprod, t, xt) * xt + extract(s.sqrt_alphas_cumprod, t, xt) * v


def split_output(output: Tensor, channels: int, learned_variance: bool) -> tuple[Tensor, Tensor | None]:
    """Split a network output [B, C or 2C, H, W] into its prediction and variance parts."""
    if not learned_variance:
        if output.shape[1] != channels:
            raise ConfigError(f"the model returned {output.shape[1]} channels where {channels} were expected")
        return output, None
    if output.shape[1] != 2 * channels:
        raise ConfigError(
            f"learned variance needs a model with {2 * channels} output channels (Unet(learned_variance=True)); "
            f"it returned {output.shape[1]}"
        )
    return output[:, :channels], output[:, channels:]


def predicted_x0_eps(
    objective: str,
    prediction: Tensor,
    xt: Tensor,
    alpha: float | Tensor,
    sigma: float | Tensor,
    *,
    clip: str | bool | None = None,
    percentile: float = 0.995,
    max_value: float | None = None,
    clipped_eps: bool = True,
) -> tuple[Tensor, Tensor]:
    """x_0 and eps [B, ...] implied by a prediction [B, ...] under ``objective`` at x_t = alpha x_0 +
    sigma eps (eq. 4; alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), Python floats or
    [B, 1, ..., 1] tensors), with v = alpha eps - sigma x_0 (Salimans & Ho 2022). With ``clip``
    (:func:`clip_x0`) x_0 is clipped and, when ``clipped_eps``, eps re-derived from it (diffusers'
    ``use_clipped_model_output=True``); otherwise eps stays the model's own."""
    if objective == "pred_noise":
        x0, eps = (xt - sigma * prediction) / alpha, prediction
    elif objective == "pred_x0":
        x0, eps = prediction, (xt - alpha * prediction) / sigma
    elif objective == "pred_v":
        x0, eps = alpha * xt - sigma * prediction, sigma * xt + alpha * prediction
    else:
        raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if clip not in (False, None, "none"):
        x0 = clip_x0(x0, clip, percentile, max_value)
        if clipped_eps:
            eps = (xt - alpha * x0) / sigma
    return x0, eps


def x0_and_eps(s: Schedule, objective: str, prediction: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Both x_0 and eps implied by a prediction under ``objective`` at integer timesteps t [B]
    (before any clipping): :func:`predicted_x0_eps` with the schedule's coefficients."""
    alpha, sigma = extract(s.sqrt_alphas_cumprod, t, xt), extract(s.sqrt_one_minus_alphas_cumprod, t, xt)
    return predicted_x0_eps(objective, prediction, xt, alpha, sigma)


def training_target(s: Schedule, objective: str, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """What the network is trained to output under ``objective`` (eps, x_0 or v)."""
    if objective == "pred_noise":
        return noise
    if objective == "pred_x0":
        return x0
    if objective == "pred_v":
        return v_from_x0_eps(s, x0, t, noise)
    raise ConfigError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


# ---- clipping of the predicted x_0 ------------------------------------------------------------


def dynamic_threshold(x0: Tensor, percentile: float = 0.995, max_value: float | None = None) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3).

    Per sample, s = the ``percentile`` quantile of |x_0|, at least 1 and at most ``max_value``
    (None: no maximum, as in Imagen); x_0 is clipped to [-s, s] and divided by s, so saturated
    pixels are pushed inwards instead of piling up at +-1. diffusers' ``thresholding=True`` is
    ``percentile=dynamic_thresholding_ratio, max_value=sample_max_value`` (its default 1.0 makes
    s = 1: plain clipping).
    """
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    q = torch.quantile(flat, percentile, dim=1).clamp(min=1.0)
    if max_value is not None:
        q = q.clamp(max=max_value)  # below 1 too (diffusers' torch.clamp(min=1, max=m) gives m)
    q = q.to(x0.dtype).reshape(-1, *((1,) * (x0.ndim - 1)))
    return x0.clamp(-q, q) / q


def clip_x0(x0: Tensor, clip: str | bool | None, percentile: float = 0.995, max_value: float | None = None) -> Tensor:
    """Apply a clipping mode to a predicted x_0: ``'static'``/True clips to [-1, 1],
    ``'dynamic'`` is Imagen's thresholding (``percentile``, ``max_value``: see
    :func:`dynamic_threshold`), ``'none'``/False/None leaves it alone."""
    if clip in (True, "static"):
        return x0.clamp(-1.0, 1.0)
    if clip == "dynamic":
        return dynamic_threshold(x0, percentile, max_value)
    if clip in (False, None, "none"):
        return x0
    raise ConfigError(f"unknown clip mode {clip!r}; choose one of {', '.join(CLIP_MODES)}")


# ---- reverse process p ----------------------------------------------------------------------


@dataclass
class PMeanVariance:
    """The model's p(x_{t-1} | x_t) = N(mean, variance) and what it predicted, all [B, ...]."""

    mean: Tensor
    variance: Tensor
    log_variance: Tensor
    pred_x0: Tensor
    pred_eps: Tensor


def model_log_variance(s: Schedule, variance_type: str, t: Tensor, x: Tensor, var_output: Tensor | None) -> Tensor:
    """log sigma_t^2 of p(x_{t-1} | x_t) for each variance type.

    fixed_small: sigma^2 = beta-tilde_t (Ho et al., the posterior variance);
    fixed_large: sigma^2 = beta_t (with beta-tilde_1 at t = 0 for a better decoder, as
    improved-diffusion does); learned_range: interpolate in log space between the two with the
    network's output v in [-1, 1] (Nichol & Dhariwal eq. 15).
    """
    if variance_type == "fixed_small":
        return extract(s.posterior_log_variance_clipped, t, x).expand_as(x)
    if variance_type == "fixed_large":
        large = torch.cat([s.posterior_variance[1:2], s.betas[1:]]) if s.num_timesteps > 1 else s.betas
        return extract(torch.log(large), t, x).expand_as(x)
    if variance_type == "learned_range":
        if var_output is None:
            raise ConfigError("variance_type 'learned_range' needs a model that outputs its variance")
        min_log = extract(s.posterior_log_variance_clipped, t, x)
        max_log = extract(torch.log(s.betas), t, x)
        frac = (var_output + 1) / 2
        return frac * max_log + (1 - frac) * min_log
    raise ConfigError(f"unknown variance type {variance_type!r}; choose one of {', '.join(VARIANCE_TYPES)}")


def p_mean_variance(
    s: Schedule,
    output: Tensor,
    xt: Tensor,
    t: Tensor,
    *,
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
) -> PMeanVariance:
    """p(x_{t-1} | x_t) from a network output [B, C or 2C, ...] at x_t, t.

    The mean is the posterior mean mu-tilde(x_t, x0_hat) with x0_hat the (clipped) predicted
    x_0; for pred_noise without clipping this equals Ho et al. eq. 11.
    """
    learned = variance_type == "learned_range"
    prediction, var_output = split_output(output, xt.shape[1], learned)
    alpha, sigma = extract(s.sqrt_alphas_cumprod, t, xt), extract(s.sqrt_one_minus_alphas_cumprod, t, xt)
    x0, eps = predicted_x0_eps(objective, prediction, xt, alpha, sigma, clip=clip)
    mean, _, _ = q_posterior(s, x0, xt, t)
    log_var = model_log_variance(s, variance_type, t, xt, var_output)
    return PMeanVariance(mean=mean, variance=torch.exp(log_var), log_variance=log_var, pred_x0=x0, pred_eps=eps)
