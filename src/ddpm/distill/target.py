"""The math of progressive distillation (Salimans & Ho 2022, Algorithm 2) as plain functions.

Notation: z_t = alpha_t x + sigma_t eps with alpha_t^2 = alpha_bar_t, sigma_t^2 = 1 - alpha_bar_t.
A student step from t to t'' is one deterministic DDIM step, z_t'' = alpha_t'' x_hat +
(sigma_t'' / sigma_t)(z_t - alpha_t x_hat); it is trained to land where two DDIM steps of the
teacher land (t -> t' -> t''). The x_hat that does so is the target x_tilde.

Timesteps are the schedule's integers; "timestep -1" stands for the clean image (alpha = 1,
sigma = 0), where a student's last step ends.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..config import register_choices
from ..diffusion import check_choice, split_output, x0_and_eps
from ..errors import ConfigError
from ..likelihood import mean_flat
from ..schedules import Schedule

WEIGHTINGS = ("truncated-snr", "snr+1")
register_choices("distill_weighting", WEIGHTINGS)
"""Weights of the student's x_0 error (Salimans & Ho section 4): max(SNR, 1) ("truncated SNR",
= max(||x - x_hat||^2, ||eps - eps_hat||^2)) or SNR + 1 (= ||v - v_hat||^2)."""

TeacherFn = Callable[[Tensor, Tensor], Tensor]
"""``teacher(z_t [B, C, H, W], t [B]) -> output [B, C or 2C, H, W]`` in the teacher's objective."""


def alpha_sigma(s: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) as [B, 1, ..., 1] in x's dtype; t = -1 gives (1, 0), the clean image."""
    ab = torch.cat([s.alphas_cumprod.new_ones(1), s.alphas_cumprod]).to(t.device)[t + 1]
    shape = (t.shape[0],) + (1,) * (x.ndim - 1)
    return ab.sqrt().to(x.dtype).reshape(shape), (1.0 - ab).sqrt().to(x.dtype).reshape(shape)


def ddim_step(x0: Tensor, eps: Tensor, alpha_to: Tensor, sigma_to: Tensor) -> Tensor:
    """Song et al. eq. 12 at eta = 0: z_s = alpha_s x_0 + sigma_s eps."""
    return alpha_to * x0 + sigma_to * eps


@torch.no_grad()
def teacher_target(
    teacher: TeacherFn,
    s: Schedule,
    z: Tensor,
    t: Tensor,
    t_mid: Tensor,
    t_end: Tensor,
    *,
    objective: str,
    learned_variance: bool = False,
) -> Tensor:
    """x_tilde [B, C, H, W]: the x_0 prediction for which ONE student DDIM step from z_t [B, ...]
    to t_end lands on the teacher's TWO DDIM steps t -> t_mid -> t_end (Algorithm 2).

    Per sample, t > t_mid > t_end >= -1 ([B] integer tensors; t_end = -1 is the clean image). With
    z'' the teacher's result, x_tilde = (z'' - (sigma'' / sigma_t) z_t) / (alpha'' - (sigma'' / sigma_t) alpha_t);
    at t_end = -1 this is the teacher's x_0 prediction at t_mid. The teacher's predictions are not
    clipped (as in the paper's Algorithm 2): the target is the probability-flow ODE's own map.
    """
    c = z.shape[1]

    def predict(x: Tensor, tt: Tensor) -> tuple[Tensor, Tensor]:
        prediction, _ = split_output(teacher(x, tt).to(z.dtype), c, learned_variance)  # bf16 out of autocast
        return x0_and_eps(s, objective, prediction, x, tt)

    x0, eps = predict(z, t)
    z_mid = ddim_step(x0, eps, *alpha_sigma(s, t_mid, z))
    x0, eps = predict(z_mid, t_mid)
    z_end = ddim_step(x0, eps, *alpha_sigma(s, t_end, z))
    # the coefficients in float64: at the noisy end alpha_t is small and sigma_t close to 1
    a_t, s_t = alpha_sigma(s, t, z.double())
    a_e, s_e = alpha_sigma(s, t_end, z.double())
    ratio = s_e / s_t
    return ((z_end.double() - ratio * z.double()) / (a_e - ratio * a_t)).to(z.dtype)


def loss_weight(s: Schedule, t: Tensor, weighting: str) -> Tensor:
    """The weight of the x_0 error at each t [B] (see :data:`WEIGHTINGS`), float32 [B]."""
    check_choice("distillation weighting", weighting, WEIGHTINGS)
    ab = s.alphas_cumprod.to(t.device)[t]
    snr = ab / (1.0 - ab)
    return (snr.clamp(min=1.0) if weighting == "truncated-snr" else snr + 1.0).float()


def student_loss(
    output: Tensor,
    z: Tensor,
    t: Tensor,
    x_target: Tensor,
    s: Schedule,
    *,
    objective: str,
    weighting: str,
    learned_variance: bool = False,
) -> Tensor:
    """Per-sample loss [B]: w(t) ||x_tilde - x_hat(z_t)||^2 with x_hat the x_0 implied by the
    student's ``output`` [B, C or 2C, ...] under its ``objective`` (unclipped)."""
    prediction, _ = split_output(output, z.shape[1], learned_variance)
    x_hat, _ = x0_and_eps(s, objective, prediction.float(), z.float(), t)
    return loss_weight(s, t, weighting) * mean_flat((x_hat - x_target.float()) ** 2)


def step_triples(teacher_grid: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """For student step i (0 = least noisy), its timestep, the teacher's middle one and where
    both end, as [N] long tensors: (t_{2i+1}, t_{2i}, t_{2i-1}) of the teacher's ascending grid of
    2N timesteps, with t_{-1} = -1 (the clean image)."""
    if len(teacher_grid) < 2 or len(teacher_grid) % 2:
        raise ConfigError(f"a teacher grid to halve needs an even number of timesteps; got {len(teacher_grid)}")
    g = torch.tensor([-1] + list(teacher_grid), dtype=torch.long)  # g[k + 1] = t_k
    n = len(teacher_grid) // 2
    i = torch.arange(n)
    return g[2 * i + 2], g[2 * i + 1], g[2 * i]


__all__ = ["TeacherFn", "WEIGHTINGS", "alpha_sigma", "ddim_step", "loss_weight", "step_triples", "student_loss",
           "teacher_target"]
