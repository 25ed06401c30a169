"""The training objective: Ho et al.'s L_simple and its common variants.

L_simple (eq. 14) = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2. The network may instead predict
x_0 or v; the loss may be L1; min-SNR-gamma reweights timesteps; offset noise adds a per-channel
constant to eps; with a learned variance the hybrid loss L_simple + lambda L_vlb of Nichol &
Dhariwal trains the variance through the bound while the mean learns from L_simple alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .config import register_choices
from .diffusion import OBJECTIVES, VARIANCE_TYPES, check_choice, q_sample, split_output, training_target
from .likelihood import mean_flat, vb_terms_bpd
from .schedules import Schedule

LOSS_TYPES = ("l2", "l1")
register_choices("loss_type", LOSS_TYPES)
ModelFn = Callable[[Tensor, Tensor], Tensor]


def min_snr_weight(s: Schedule, t: Tensor, objective: str, gamma: float) -> Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023), [B].

    The x_0 loss is weighted min(SNR, gamma). The same weight expressed for the other targets:
    eps loss (= SNR x the x_0 loss) gets min(SNR, gamma) / SNR, v loss (= (SNR + 1) x the x_0
    loss) gets min(SNR, gamma) / (SNR + 1). Where SNR = 0 the eps weight is its limit, 1.
    """
    snr = (s.alphas_cumprod / (1.0 - s.alphas_cumprod)).to(t.device)[t]
    clipped = snr.clamp(max=gamma)
    if objective == "pred_noise":
        weight = torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    elif objective == "pred_x0":
        weight = clipped
    else:
        weight = clipped / (snr + 1.0)
    return weight.float()


def draw_noise(
    shape: torch.Size | tuple[int, ...],
    offset_noise_strength: float = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """eps ~ N(0, I) of ``shape`` [B, C, ...], plus offset noise when its strength is positive.

    Offset noise (Guttenberg 2023) adds strength * N(0, 1) constant over each image's channel,
    which lets the model learn to shift overall brightness, something i.i.d. noise never asks.
    """
    noise = torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if offset_noise_strength > 0:
        offset = torch.randn(tuple(shape[:2]), device=device, dtype=dtype, generator=generator)
        noise = noise + offset_noise_strength * offset.reshape(*shape[:2], *((1,) * (len(shape) - 2)))
    return noise


@dataclass
class LossTerms:
    """Per-sample losses, each [B]; ``loss`` is what training minimises (take its mean)."""

    loss: Tensor
    simple: Tensor  # the (weighted) L1/L2 term on the network's prediction
    vlb: Tensor | None  # lambda * T * L_t in bits/dim, only with a learned variance
    t: Tensor


def training_losses(
    model_fn: ModelFn,
    s: Schedule,
    x0: Tensor,
    *,
    objective: str = "pred_noise",
    loss_type: str = "l2",
    variance_type: str = "fixed_small",
    min_snr_gamma: float | None = None,
    offset_noise_strength: float = 0.0,
    vlb_weight: float = 0.001,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """Algorithm 1 of Ho et al. for a batch x0 [B, C, H, W] in [-1, 1].

    Draws t ~ Uniform{0..T-1} and eps ~ N(0, I) unless given, forms x_t (eq. 4), and compares
    ``model_fn(x_t, t)`` with the target of ``objective``.
    """
    check_choice("objective", objective, OBJECTIVES)
    check_choice("loss type", loss_type, LOSS_TYPES)
    check_choice("variance type", variance_type, VARIANCE_TYPES)
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(0, s.num_timesteps, (batch,), device=x0.device, generator=generator)
    if noise is None:
        noise = draw_noise(x0.shape, offset_noise_strength, generator=generator, device=x0.device, dtype=x0.dtype)
    xt = q_sample(s, x0, t, noise)
    output = model_fn(xt, t)
    learned = variance_type == "learned_range"
    prediction, var_output = split_output(output, x0.shape[1], learned)

    target = training_target(s, objective, x0, t, noise)
    err = prediction.float() - target.float()
    simple = mean_flat(err.abs() if loss_type == "l1" else err**2)
    if min_snr_gamma is not None:
        simple = simple * min_snr_weight(s, t, objective, min_snr_gamma)

    vlb = None
    loss = simple
    if learned:
        # The bound trains only the variance: the mean part is detached (Nichol & Dhariwal 3.1).
        frozen = torch.cat([prediction.detach(), var_output], dim=1)
        vlb = vb_terms_bpd(s, frozen, x0, xt, t, objective=objective, variance_type=variance_type, clip=False)
        # sum_t L_t is estimated by T * L_t for uniform t; lambda = vlb_weight.
        vlb = vlb * (vlb_weight * s.num_timesteps)
        loss = simple + vlb
    return LossTerms(loss=loss, simple=simple, vlb=vlb, t=t)


__all__ = ["LOSS_TYPES", "LossTerms", "draw_noise", "min_snr_weight", "training_losses"]
