"""The variational bound (Ho et al. eq. 5, section 3.3) and bits per dimension.

L = L_T + sum_{t>1} L_{t-1} + L_0, where L_T is the prior term KL(q(x_T|x_0) || N(0, I)), each
L_{t-1} is KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)) and L_0 = -log p(x_0|x_1) under a discretized
Gaussian decoder. All terms here are in bits per dimension (nats / log 2, averaged over pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .diffusion import PMeanVariance, p_mean_variance, q_mean_variance, q_posterior, q_sample
from .schedules import Schedule

ModelFn = Callable[[Tensor, Tensor], Tensor]


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (broadcasting)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log_diff_ndtr(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails."""
    # In the right tail Phi(b) - Phi(a) = Phi(-a) - Phi(-b); use whichever side has the mass.
    right = a > 0
    hi = torch.special.log_ndtr(torch.where(right, -a, b))
    lo = torch.special.log_ndtr(torch.where(right, -b, a))
    return hi + torch.log(-torch.expm1(lo - hi))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_variance: Tensor, num_bits: int = 8) -> Tensor:
    """log P(x) for x on the grid of 2**num_bits values in [-1, 1] under N(mean, e^log_variance).

    Each value owns the bin of width 2 / (2**num_bits - 1) around it; the two end bins reach to
    -inf and +inf (Ho et al. eq. 13). Uses the exact normal CDF. Elementwise, in nats.
    """
    half_bin = 1.0 / (2**num_bits - 1)
    inv_std = torch.exp(-0.5 * log_variance)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # first bin: P(X <= x + half_bin)
    log_sf_lower = torch.special.log_ndtr(-lower)  # last bin: P(X > x - half_bin)
    log_mid = _log_diff_ndtr(lower, upper)
    edge = 1.0 - half_bin
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_sf_lower, log_mid))


def prior_bpd(s: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, [B]. No parameters; zero for a zero-SNR end."""
    t = torch.full((x0.shape[0],), s.num_timesteps - 1, device=x0.device, dtype=torch.long)
    mean, _, log_var = q_mean_variance(s, x0, t)
    return mean_flat(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(log_var))) / math.log(2.0)


def vb_terms_bpd(
    s: Schedule,
    output: Tensor,
    x0: Tensor,
    xt: Tensor,
    t: Tensor,
    *,
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
) -> Tensor:
    """One term of the bound per sample, bits/dim [B]: L_{t-1} (a KL) where t > 0, L_0 where t = 0.

    ``output`` is the network's output at (x_t, t); x0 must lie on the 8-bit grid for L_0.
    """
    p = p_mean_variance(s, output, xt, t, objective=objective, variance_type=variance_type, clip=clip)
    return _vb_terms(s, p, x0, xt, t)


def _vb_terms(s: Schedule, p: PMeanVariance, x0: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    true_mean, _, true_log_var = q_posterior(s, x0, xt, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, p.mean, p.log_variance)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, p.log_variance)) / math.log(2.0)
    return torch.where(t == 0, nll, kl)


@dataclass
class BitsPerDim:
    """The bound split into its parts, for a batch of B images over T steps."""

    total: Tensor  # [B] the full bound, bits/dim
    prior: Tensor  # [B] L_T
    terms: Tensor  # [B, T] L_0 in column 0, L_{t-1} in column t
    x0_mse: Tensor  # [B, T] mean squared error of the predicted x_0 at each t


@torch.no_grad()
def bits_per_dim(
    model_fn: ModelFn,
    s: Schedule,
    x0: Tensor,
    *,
    objective: str = "pred_noise",
    variance_type: str = "fixed_small",
    clip: str | bool | None = "static",
    generator: torch.Generator | None = None,
) -> BitsPerDim:
    """Negative log-likelihood bound of x0 [B, C, H, W] (in [-1, 1], 8-bit grid) in bits/dim.

    Evaluates every one of the T terms once with a fresh x_t ~ q(x_t | x_0), T network calls in
    all (improved-diffusion's calc_bpd_loop). ``model_fn(x_t, t)`` returns the network output.
    """
    batch, steps = x0.shape[0], s.num_timesteps
    terms = x0.new_zeros(batch, steps)
    mse = x0.new_zeros(batch, steps)
    for step in reversed(range(steps)):
        t = torch.full((batch,), step, device=x0.device, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        xt = q_sample(s, x0, t, noise)
        p = p_mean_variance(s, model_fn(xt, t), xt, t, objective=objective, variance_type=variance_type, clip=clip)
        terms[:, step] = _vb_terms(s, p, x0, xt, t)
        mse[:, step] = mean_flat((p.pred_x0 - x0) ** 2)
    prior = prior_bpd(s, x0)
    return BitsPerDim(total=terms.sum(dim=1) + prior, prior=prior, terms=terms, x0_mse=mse)
