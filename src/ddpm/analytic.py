"""Exact denoisers of data sets whose noisy marginals are known in closed form.

For Gaussian data (and mixtures of Gaussians) q(x_t) is again Gaussian (a mixture), so the best
possible network, E[eps | x_t], can be written down. Driving a sampler or the likelihood bound
with it separates errors of the math from errors of learning: the tests use these, and they are
a small worked example of what a trained network approximates.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .diffusion import OBJECTIVES, check_choice
from .sampling.common import ModelFn
from .schedules import Schedule


def _as_output(objective: str, a: Tensor, sigma: Tensor, eps: Tensor, x0: Tensor) -> Tensor:
    """Express the exact (eps, x_0) pair as the output of a network trained for ``objective``.

    Both are computed directly: recovering x_0 from eps divides by sqrt(alpha_bar), which is 0 at
    the last step of a zero-terminal-SNR schedule.
    """
    if objective == "pred_noise":
        return eps
    return x0 if objective == "pred_x0" else a * eps - sigma * x0  # v (Salimans & Ho 2022)


def _alpha(s: Schedule, t: Tensor) -> Tensor:
    """sqrt(alpha_bar) at t [B] (integer or fractional: ``Schedule.alpha_bar_at``), float64 [B]."""
    return s.alpha_bar_at(t.double()).sqrt()


def gaussian_model(s: Schedule, mean: float, std: float, objective: str = "pred_noise") -> ModelFn:
    """The exact network for data x_0 ~ N(mean, std^2 I), every pixel independent.

    x_t = a x_0 + sigma eps with a = sqrt(alpha_bar_t), sigma^2 = 1 - alpha_bar_t, so
    E[eps | x_t] = sigma (x_t - a mean) / (a^2 std^2 + sigma^2). Fractional t is understood as
    ``Schedule.alpha_bar_at`` interpolates it.
    """
    check_choice("objective", objective, OBJECTIVES)

    def model_fn(xt: Tensor, t: Tensor) -> Tensor:
        a = _alpha(s, t).to(xt.device).reshape(-1, *((1,) * (xt.ndim - 1)))
        var_t = 1.0 - a**2
        resid = (xt.double() - a * mean) / (a**2 * std**2 + var_t)
        eps = var_t.sqrt() * resid
        x0 = mean + a * std**2 * resid  # E[x_0 | x_t]
        return _as_output(objective, a, var_t.sqrt(), eps, x0).to(xt.dtype)

    return model_fn


def gaussian_model_exact_variance(
    s: Schedule, mean: float, std: float, times: Sequence[int], objective: str = "pred_noise"
) -> ModelFn:
    """:func:`gaussian_model` with a ``learned_range`` variance output (2C channels) that makes every
    step of an ancestral chain through ``times`` (the visited timesteps, ending at clean data, as a
    sampler's plan lists them) exact: what a perfectly trained learned-variance network gives there.

    For x_0 ~ N(mean, std^2 I) the true reverse step q(x_{k-1} | x_k) is Gaussian with the mean of
    ``posterior_step`` and the variance beta-tilde_k + c1_k^2 Var(x_0 | x_k), c1_k the posterior
    mean's coefficient of x_0 and Var(x_0 | x_k) = std^2 sigma^2 / (a^2 std^2 + sigma^2): between
    ``fixed_small`` (beta-tilde_k, the lower end) and ``fixed_large`` (beta_k) when std <= 1, so the
    output v in [-1, 1] interpolates the two in log space (Nichol & Dhariwal eq. 15) to hit it.
    Time t must be one of ``times``; the last step (to clean data) returns its mean, whatever v.
    """
    ordered = sorted(int(t) for t in times)  # level k of the chain is ordered[k], least noisy first
    ab = s.alphas_cumprod.double().cpu()[ordered]
    chain = Schedule.from_alpha_bars(ab)
    a2 = ab
    var_x0 = std**2 * (1 - a2) / (a2 * std**2 + 1 - a2)
    target = torch.log(chain.posterior_variance + chain.posterior_mean_coef1**2 * var_x0)
    lo, hi = chain.posterior_log_variance_clipped, torch.log(chain.betas)
    v = torch.where(hi > lo, 2 * (target - lo) / (hi - lo).clamp(min=1e-300) - 1, torch.zeros_like(lo))
    v[0] = 0.0  # level 0 steps to clean data: no noise is added there
    level = torch.full((s.num_timesteps,), -1, dtype=torch.long)  # timestep -> its level (-1: not on the chain)
    level[ordered] = torch.arange(len(ordered))
    base = gaussian_model(s, mean, std, objective)

    def model_fn(xt: Tensor, t: Tensor) -> Tensor:
        k = level[t.cpu().round().long()]
        if bool((k < 0).any()):
            raise ValueError(f"times {t.unique().tolist()} are not all on the chain this model was built for")
        var_out = v[k].to(xt.device, xt.dtype).reshape(-1, *((1,) * (xt.ndim - 1))).expand_as(xt)
        return torch.cat([base(xt, t), var_out], dim=1)

    return model_fn


def mixture_model(
    s: Schedule,
    means: Sequence[float],
    stds: Sequence[float],
    weights: Sequence[float],
    objective: str = "pred_noise",
) -> ModelFn:
    """The exact network for images drawn from a mixture of isotropic Gaussians.

    Image x_0 comes from component k (probability weights[k]) as N(means[k], stds[k]^2 I). Then
    q(x_t) = sum_k w_k N(a m_k, v_k I) with v_k = a^2 s_k^2 + sigma^2, and
    E[eps | x_t] = sum_k r_k(x_t) sigma (x_t - a m_k) / v_k with r_k the posterior responsibility
    of component k given the whole image x_t.
    """
    check_choice("objective", objective, OBJECTIVES)
    m = torch.as_tensor(means, dtype=torch.float64)
    sd = torch.as_tensor(stds, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64)
    w = w / w.sum()

    def model_fn(xt: Tensor, t: Tensor) -> Tensor:
        x = xt.double().flatten(1)  # [B, D]
        a = _alpha(s, t).to(x.device)[:, None]  # [B, 1]
        sigma2 = 1.0 - a**2
        mk, sk, wk = m.to(x.device), sd.to(x.device), w.to(x.device)
        v = a**2 * sk**2 + sigma2  # [B, K]
        dim = x.shape[1]
        # log w_k + log N(x; a m_k, v_k I), up to a constant shared by every k
        sq = ((x[:, None, :] - a[:, :, None] * mk[None, :, None]) ** 2).sum(-1)  # [B, K]
        log_r = torch.log(wk) - 0.5 * dim * torch.log(v) - 0.5 * sq / v
        r = torch.softmax(log_r, dim=1)  # [B, K]
        # sum_k r_k (x - a m_k) / v_k, written as x * sum_k r_k / v_k - a * sum_k r_k m_k / v_k
        eps = sigma2.sqrt() * (x * (r / v).sum(1, keepdim=True) - a * (r * mk / v).sum(1, keepdim=True))
        # E[x_0 | x_t] = sum_k r_k (m_k + a s_k^2 (x - a m_k) / v_k)
        x0 = (r * mk).sum(1, keepdim=True) + a * (x * (r * sk**2 / v).sum(1, keepdim=True)
                                                   - a * (r * sk**2 * mk / v).sum(1, keepdim=True))
        out = _as_output(objective, a, sigma2.sqrt(), eps, x0)
        return out.reshape(xt.shape).to(xt.dtype)

    return model_fn


def correlated_gaussian_model(
    s: Schedule, mean: float, shared_std: float, pixel_std: float, objective: str = "pred_noise"
) -> ModelFn:
    """The exact network for images x_0 = mean + c 1 + e whose D pixels share one offset
    c ~ N(0, shared_std^2) and each have their own e ~ N(0, pixel_std^2): correlated pixels, so
    the known part of an image says something about the rest (the inpainting tests use it).

    Cov(x_0) = S = s_e^2 I + s_c^2 1 1^T, and x_t = a x_0 + sigma eps ~ N(a mean, M) with
    M = v I + w 1 1^T, v = a^2 s_e^2 + sigma^2, w = a^2 s_c^2. Sherman-Morrison inverts M:
    u = M^-1 r = (r - w (1^T r) / (v + D w) 1) / v for r = x_t - a mean, and 1^T u = 1^T r / (v + D w),
    so E[x_0 | x_t] = mean + a S u = mean + a (s_e^2 u + s_c^2 (1^T u) 1): linear in x_t.
    D is every value of an image (C * H * W).
    """
    check_choice("objective", objective, OBJECTIVES)
    se2, sc2 = float(pixel_std) ** 2, float(shared_std) ** 2

    def model_fn(xt: Tensor, t: Tensor) -> Tensor:
        x = xt.double().flatten(1)  # [B, D]
        a = _alpha(s, t).to(x.device)[:, None]  # [B, 1]
        sigma2 = 1.0 - a**2
        v, w, dim = a**2 * se2 + sigma2, a**2 * sc2, x.shape[1]
        r = x - a * mean
        total = r.sum(1, keepdim=True) / (v + dim * w)  # 1^T u
        u = (r - w * total) / v
        x0 = mean + a * (se2 * u + sc2 * total)
        eps = (x - a * x0) / sigma2.sqrt()
        return _as_output(objective, a, sigma2.sqrt(), eps, x0).reshape(xt.shape).to(xt.dtype)

    return model_fn


def correlated_gaussian_conditional(
    known: Tensor, mean: float, shared_std: float, pixel_std: float
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each unknown pixel of a :func:`correlated_gaussian_model`
    image given its K ``known`` pixel values [B, K] (float64 [B] each): what exact inpainting draws.

    Gaussian conditioning with S_KK = s_e^2 I + s_c^2 1 1^T (Sherman-Morrison again): the offset's
    posterior is N(s_c^2 1^T (x_K - mean) / (s_e^2 + K s_c^2), s_c^2 s_e^2 / (s_e^2 + K s_c^2)),
    and each unknown pixel is mean + that offset + its own e.
    """
    known = torch.as_tensor(known, dtype=torch.float64)
    k, se2, sc2 = known.shape[-1], float(pixel_std) ** 2, float(shared_std) ** 2
    denom = se2 + k * sc2
    cond_mean = mean + sc2 * (known - mean).sum(-1) / denom
    cond_std = torch.full_like(cond_mean, (se2 + sc2 * se2 / denom) ** 0.5)
    return cond_mean, cond_std


def discrete_gaussian_entropy_bits(mean: float, std: float, num_bits: int = 8) -> float:
    """Entropy in bits of N(mean, std^2) quantised to the 2**num_bits-value grid on [-1, 1].

    Bin k (value -1 + 2k / (2**num_bits - 1)) holds the Gaussian mass of its cell; the end
    bins hold the tails, matching the discretized decoder of the likelihood bound.
    """
    n = 2**num_bits
    half = 1.0 / (n - 1)
    centers = torch.linspace(-1, 1, n, dtype=torch.float64)
    dist = torch.distributions.Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    upper = dist.cdf(centers + half)
    lower = dist.cdf(centers - half)
    upper[-1], lower[0] = 1.0, 0.0
    p = (upper - lower).clamp(min=0)
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


def quantize(x: Tensor, num_bits: int = 8) -> Tensor:
    """Round x in [-1, 1] to the nearest of 2**num_bits evenly spaced values (clamping outside)."""
    levels = 2**num_bits - 1
    return torch.round((x.clamp(-1, 1) + 1) / 2 * levels) / levels * 2 - 1
