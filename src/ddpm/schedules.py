"""Noise schedules: the betas of the forward process and every array derived from them.

A :class:`Schedule` holds only float64 tensors computed once from the betas (Ho et al. eq. 4
and eq. 7 need alpha_bar_t, the posterior coefficients, and their square roots). Index ``t``
of every array is timestep ``t`` with ``t = 0`` the least noisy step, ``t = T - 1`` the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .config import register_choices
from .errors import ConfigError

SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
register_choices("beta_schedule", SCHEDULES)


def linear_betas(timesteps: int, max_beta: float = 0.999, start: float | None = None, end: float | None = None) -> torch.Tensor:
    """Ho et al.: betas rise linearly from 1e-4 to 0.02 at T = 1000.

    For other T the end points are scaled by 1000 / T, as improved-diffusion does, so that
    the total amount of noise (and alpha_bar at the last step) stays about the same. Below
    T = 50 the scaled end would pass 1, so betas are capped at ``max_beta`` as for cosine.
    Given ``start`` and ``end`` (diffusers' beta_start, beta_end) are used as they are.
    """
    start, end = _linear_ends(timesteps, start, end)
    return torch.linspace(start, end, timesteps, dtype=torch.float64).clamp(max=max_beta)


def scaled_linear_betas(timesteps: int, start: float | None = None, end: float | None = None) -> torch.Tensor:
    """diffusers' ``scaled_linear`` (latent diffusion's schedule): sqrt(beta) rises linearly from
    sqrt(start) to sqrt(end); the end points default as for :func:`linear_betas`."""
    start, end = _linear_ends(timesteps, start, end)
    return torch.linspace(math.sqrt(start), math.sqrt(end), timesteps, dtype=torch.float64) ** 2


def _linear_ends(timesteps: int, start: float | None, end: float | None) -> tuple[float, float]:
    """The two linear schedules' end points: as given, or Ho et al.'s 1e-4 and 0.02 scaled by 1000 / T."""
    scale = 1000.0 / timesteps
    return (scale * 1e-4 if start is None else start), (scale * 0.02 if end is None else end)


def _betas_from_alpha_bar(alpha_bar: torch.Tensor, max_beta: float) -> torch.Tensor:
    """Turn alpha_bar sampled at t/T for t = 0..T into T betas: beta_t = 1 - a_{t+1} / a_t."""
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(0.0, max_beta)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal eq. 17: alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas <= 0.999."""
    t = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return _betas_from_alpha_bar(f / f[0], max_beta)


def sigmoid_betas(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, max_beta: float = 0.999
) -> torch.Tensor:
    """Jabri et al. (RIN), Algorithm 3: alpha_bar(t) is a rescaled, flipped sigmoid of t in [0, 1]."""
    t = torch.linspace(0, 1, timesteps + 1, dtype=torch.float64)
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    f = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return _betas_from_alpha_bar(f / f[0], max_beta)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so that alpha_bar_T = 0.

    sqrt(alpha_bar_0) is kept; the last step becomes pure noise (beta_T = 1, SNR = 0), which
    removes the train/test mismatch of schedules whose final step still holds some signal.
    """
    sqrt_ab = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


@dataclass(frozen=True)
class Schedule:
    """Every per-timestep coefficient of the forward process and its posterior, shape [T].

    Build one with :func:`get_schedule` or :meth:`Schedule.from_betas`.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor  # alpha_bar_t = prod_{s<=t} (1 - beta_s)
    alphas_cumprod_prev: torch.Tensor  # alpha_bar_{t-1}, with alpha_bar_{-1} = 1
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor  # beta-tilde_t, Ho et al. eq. 7
    posterior_log_variance_clipped: torch.Tensor  # log beta-tilde_t with t=0 replaced by t=1
    posterior_mean_coef1: torch.Tensor  # multiplies x_0 in mu-tilde_t (eq. 7)
    posterior_mean_coef2: torch.Tensor  # multiplies x_t in mu-tilde_t (eq. 7)

    @classmethod
    def from_betas(cls, betas: torch.Tensor | Sequence[float]) -> "Schedule":
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise ConfigError("a schedule needs at least one timestep; got an empty list of betas")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ConfigError(
                f"betas must lie in (0, 1]; got values from {betas.min().item():.3g} "
                f"to {betas.max().item():.3g}"
            )
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        # beta-tilde_0 is 0; its log is clipped to beta-tilde_1 (improved-diffusion does the same).
        first = post_var[1:2] if len(post_var) > 1 else betas[:1]
        post_log_var = torch.log(torch.cat([first, post_var[1:]]))
        return cls(
            betas=betas,
            alphas_cumprod=ab,
            alphas_cumprod_prev=ab_prev,
            sqrt_alphas_cumprod=ab.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1.0 - ab).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log_var,
            posterior_mean_coef1=betas * ab_prev.sqrt() / (1.0 - ab),
            posterior_mean_coef2=(1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
        )

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @property
    def log_snr(self) -> torch.Tensor:
        """lambda_t = log(alpha_bar_t / (1 - alpha_bar_t)); -inf where the SNR is zero."""
        return torch.log(self.alphas_cumprod) - torch.log1p(-self.alphas_cumprod)

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] == 0)

    def alpha_bar_at(self, t: torch.Tensor | Sequence[float] | float) -> torch.Tensor:
        """alpha_bar at real-valued timesteps t in [0, T-1] (any shape; float64, on t's device).

        Integer t gives ``alphas_cumprod[t]`` exactly. Between two integer timesteps the log-SNR
        log(alpha_bar / (1 - alpha_bar)) is interpolated linearly, which is the same as
        interpolating log sigma, sigma = sqrt((1 - alpha_bar) / alpha_bar), as k-diffusion's and
        diffusers' ``sigma_to_t`` do; so a grid placed in sigma or log-SNR lands on exactly the noise
        level it asked for. Where an end has zero SNR (the last step of a zero-terminal-SNR
        schedule) alpha_bar itself is interpolated, so it still reaches 0 continuously.
        """
        t = torch.as_tensor(t, dtype=torch.float64)
        T = self.num_timesteps
        if bool(((t < 0) | (t > T - 1) | t.isnan()).any()):
            raise ConfigError(f"timesteps must lie in [0, {T - 1}]; got values from {t.min().item():g} to {t.max().item():g}")
        ab = self.alphas_cumprod.to(t.device, torch.float64)
        lo = t.floor().long().clamp(max=T - 1)
        hi = (lo + 1).clamp(max=T - 1)
        w = t - lo
        a_lo, a_hi = ab[lo], ab[hi]
        ls_lo, ls_hi = torch.log(a_lo) - torch.log1p(-a_lo), torch.log(a_hi) - torch.log1p(-a_hi)  # never +inf
        finite = torch.isfinite(ls_lo) & torch.isfinite(ls_hi)
        by_snr = torch.sigmoid(torch.lerp(ls_lo, torch.where(finite, ls_hi, ls_lo), w))
        return torch.where(w == 0, a_lo, torch.where(finite, by_snr, torch.lerp(a_lo, a_hi, w)))

    def to(self, device: torch.device | str) -> "Schedule":
        """The same schedule on ``device``: float64 everywhere except Apple MPS (float32 only)."""
        device = torch.device(device)
        dtype = torch.float32 if device.type == "mps" else torch.float64
        return Schedule(**{f.name: getattr(self, f.name).to(device, dtype) for f in fields(self)})

    @classmethod
    def from_alpha_bars(cls, alpha_bars: Sequence[float] | torch.Tensor) -> "Schedule":
        """The chain whose alpha_bar at step i is ``alpha_bars[i]`` (strictly decreasing, in (0, 1)):
        beta_i = 1 - alpha_bar_i / alpha_bar_{i-1} with alpha_bar_{-1} = 1."""
        ab = torch.as_tensor(alpha_bars, dtype=torch.float64).flatten()
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return cls.from_betas(1.0 - ab / ab_prev)

    def respaced(self, timesteps: Sequence[int] | torch.Tensor) -> "Schedule":
        """The schedule of a shorter chain visiting only ``timesteps`` (ascending, distinct).

        The new betas keep alpha_bar at each kept step: beta'_i = 1 - alpha_bar_{t_i} /
        alpha_bar_{t_{i-1}} (Nichol & Dhariwal section 4), so a model trained on the full chain
        is evaluated at the same noise levels.
        """
        ts = torch.as_tensor(timesteps, dtype=torch.long, device=self.alphas_cumprod.device)
        if ts.ndim != 1 or ts.numel() == 0:
            raise ConfigError("respacing needs a non-empty 1-D list of timesteps")
        if bool((ts[1:] <= ts[:-1]).any()) or ts[0] < 0 or ts[-1] >= self.num_timesteps:
            raise ConfigError(
                f"respaced timesteps must be strictly increasing within [0, {self.num_timesteps - 1}]"
            )
        ab = self.alphas_cumprod[ts]
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        return Schedule.from_betas((1.0 - ab / ab_prev).cpu()).to(self.device)


def get_schedule(name: str, timesteps: int = 1000, *, zero_terminal_snr: bool = False,
                 beta_start: float | None = None, beta_end: float | None = None,
                 betas: Sequence[float] | None = None) -> Schedule:
    """The named schedule (``linear``, ``scaled_linear``, ``cosine`` or ``sigmoid``) over
    ``timesteps`` steps; ``beta_start`` and ``beta_end`` set the two linear ones' end points (None:
    the defaults), and given ``betas`` (exactly ``timesteps`` of them) replace the named schedule."""
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 2:
        raise ConfigError(f"timesteps must be an integer of at least 2; got {timesteps!r}")
    ends = {"start": beta_start, "end": beta_end}
    makers = {"linear": lambda T: linear_betas(T, **ends), "scaled_linear": lambda T: scaled_linear_betas(T, **ends),
              "cosine": cosine_betas, "sigmoid": sigmoid_betas}
    if name not in makers:
        raise ConfigError(f"unknown beta schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    for which, value in ends.items():
        if value is not None and not 0.0 < value < 1.0:
            raise ConfigError(f"beta_{which} must lie in (0, 1); got {value!r}")
    if betas is not None and len(betas) > 0:
        if len(betas) != timesteps:
            raise ConfigError(f"{len(betas)} betas were given for {timesteps} timesteps; give exactly one per timestep")
        betas = torch.as_tensor(betas, dtype=torch.float64)
    else:
        betas = makers[name](timesteps)
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return Schedule.from_betas(betas)


def config_schedule(d) -> Schedule:
    """The schedule a run's ``[diffusion]`` section (a :class:`~ddpm.config.DiffusionConfig`) describes:
    its named schedule with its end points, or its given betas. Every reader of a run builds it here."""
    return get_schedule(d.beta_schedule, d.timesteps, **schedule_options(d))


def schedule_options(d) -> dict:
    """:func:`get_schedule`'s keyword options from a ``[diffusion]`` section, where 0 and empty mean
    the default (None)."""
    return dict(zero_terminal_snr=d.zero_terminal_snr, beta_start=d.beta_start or None, beta_end=d.beta_end or None,
                betas=d.betas or None)
