"""Which of the T training timesteps a sampler visits when it takes fewer steps.

Every grid returns ``steps`` distinct integer timesteps in ascending order (a sampler walks them
from the last to the first). Grids differ in where they spend their steps.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..config import register_choices
from ..errors import ConfigError
from ..schedules import Schedule

GRIDS = ("uniform", "trailing", "leading", "quadratic", "karras", "logsnr", "tapered", "linspace", "karras-sigmas",
         "lu-lambdas")
register_choices("grid", GRIDS)
FRACTIONAL_GRIDS = ("karras-sigmas", "lu-lambdas")
"""Grids that land on exact noise levels between the integer timesteps (see ``Schedule.alpha_bar_at``)."""

SIGMA_MAX = 80.0
"""Largest noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) the karras and logsnr grids space
their steps to (Karras et al. 2022, table 1): alpha < 0.0125, nothing of an image in [-1, 1] is left."""
LOG_SNR_MIN = -2.0 * math.log(SIGMA_MAX)
TAPER = 0.75
"""The ``tapered`` grid's exponent: log-SNR runs from its noisy end as u^TAPER, u = 0..1 evenly
(1 would be ``logsnr``); measured on the closed-form data (``benchmarks/sampler_grids.py``)."""


def _distinct_ascending(ts: np.ndarray, num_timesteps: int) -> list[int]:
    """Round to integers in [0, T-1] and push ties apart so every step is a different timestep.

    Works from the top down (the noisy end, which each grid places carefully) and then from the
    bottom up, so the grid keeps its length without leaving [0, T-1].
    """
    out = np.clip(np.rint(ts), 0, num_timesteps - 1).astype(np.int64)
    out.sort()
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    for i in range(len(out)):
        out[i] = max(out[i], i)
    return out.tolist()


def _interp_t(target: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Fractional timesteps where a decreasing per-timestep quantity ``values`` equals ``target``."""
    t = np.arange(len(values), dtype=np.float64)
    return np.interp(-target, -values, t)


def _check_top(schedule: Schedule, t_start: float | None) -> float:
    T = schedule.num_timesteps
    if t_start is None:
        return T - 1
    if isinstance(t_start, bool) or not isinstance(t_start, (int, float)) or not 0 <= t_start <= T - 1:
        raise ConfigError(f"t_start must be a timestep from 0 to {T - 1}; got {t_start!r}")
    return t_start


def _exact(t: float) -> int | float:
    """A grid point as an int where it is a whole timestep (the model then sees an integer)."""
    return int(t) if float(t).is_integer() else float(t)


def get_timesteps(
    grid: str, schedule: Schedule, steps: int, *, rho: float = 7.0, t_start: float | None = None
) -> list[int | float]:
    """``steps`` ascending timesteps of ``schedule`` chosen by ``grid``, the last (noisiest) being
    ``t_start`` (default T-1): a sampler started there from x at t_start continues "from the middle"
    (image-to-image, inpainting) on the same kind of grid. Below, top = t_start.

    - ``uniform``: evenly spaced from 0 to top, both ends included (improved-diffusion; diffusers'
      DDIM ``timestep_spacing="linspace"``).
    - ``trailing``: evenly spaced counting down from top (Lin et al. 2023, table 2; diffusers'
      ``"trailing"``).
    - ``leading``: 0, k, 2k, ... with k = (top + 1) // steps (the original DDIM code, diffusers' DDIM
      ``"leading"`` with ``steps_offset=0``); never reaches top.
    - ``quadratic``: t_i = top (i / (steps-1))^2, denser near t = 0. DDIM's "quad" stopped at
      0.8T, a cap tuned for the linear schedule (alpha_bar_{0.8T} = 1.5e-3); on the cosine
      schedule alpha_bar_{0.8T} = 0.095, so sampling from pure noise there is biased at any
      number of steps. Reaching top removes that.
    - ``karras``: noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) spaced as in Karras
      et al. 2022 eq. 5 (rho = 7) from the schedule's smallest sigma up to top's or
      ``SIGMA_MAX``, whichever is smaller; top is added when the schedule goes beyond.
    - ``logsnr``: uniform in log-SNR over the same range, as the DPM-Solver papers recommend.
    - ``tapered``: the same range in log-SNR, lambda_i = lambda_noisy + (lambda_0 - lambda_noisy) u_i^0.75
      (u evenly from 0 to 1): steps shrink towards the data, where a multistep solver's
      extrapolation of x0_hat errs most (``TAPER``; measured in ``benchmarks/sampler_grids.py``).
    - ``linspace``: diffusers' DPM-Solver ``timestep_spacing="linspace"``: the top ``steps`` of
      ``steps + 1`` evenly spaced points from 0 to top, so t = 0 itself is not visited.
    - ``karras-sigmas``: diffusers' ``use_karras_sigmas=True``: ``steps`` levels from sigma(top)
      down to sigma(0), both included, spaced as Karras et al. eq. 5, at fractional timesteps
      (no cap, no rounding).
    - ``lu-lambdas``: diffusers' ``use_lu_lambdas=True``: ``steps`` levels uniform in log-SNR from
      top down to t = 0, both included, at fractional timesteps.

    The integer grids give distinct integers (ties pushed apart); ``karras-sigmas`` and
    ``lu-lambdas`` give floats where a level falls between timesteps (a model that needs integer
    times can be wrapped with :func:`ddpm.sampling.rounded_time`, which is what diffusers does for
    these two). A single step is always top (leading: 0): samplers start from x at top.
    """
    T = schedule.num_timesteps
    if grid not in GRIDS:
        raise ConfigError(f"unknown timestep grid {grid!r}; choose one of {', '.join(GRIDS)}")
    top = _check_top(schedule, t_start)
    most = T if grid in FRACTIONAL_GRIDS else math.floor(top) + 1
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= most:
        where = "training timesteps" if top == T - 1 else f"integer timesteps up to t_start={top!r}"
        raise ConfigError(f"steps must be an integer from 1 to the {most} {where}; got {steps!r}")
    if steps == 1 and grid != "leading":  # leading starts at 0 by definition
        return [_exact(top)]
    if grid in FRACTIONAL_GRIDS:
        return _fractional(grid, schedule, steps, top, rho)
    if steps == most and grid != "leading":
        return list(range(steps - 1)) + [_exact(top)]
    n = math.floor(top) + 1  # the integer timesteps 0..floor(top) this grid may use
    if grid == "uniform":
        ts = np.linspace(0, top, steps)
    elif grid == "trailing":
        ts = np.round(np.arange(n, 0, -n / steps))[:steps][::-1] - 1
    elif grid == "leading":
        return (np.arange(steps) * (n // steps)).tolist()
    elif grid == "quadratic":
        ts = top * np.linspace(0, 1, steps) ** 2
    elif grid == "linspace":
        ts = np.round(np.linspace(0, top, steps + 1))[1:]
    else:  # karras, logsnr, tapered: spaced in noise level between the ends of the schedule
        log_snr = _log_snr(schedule)[: n]
        # Steps beyond sigma_max are wasted: the linear schedule ends at log-SNR -10.1 and cosine,
        # whose last betas are clipped, dives to -19.8 in its final 5 steps. Space the grid down to
        # sigma_max and then jump to top, where every sampler starts (from pure noise at T-1).
        capped = log_snr[-1] < LOG_SNR_MIN
        end, k = (LOG_SNR_MIN, steps - 1) if capped else (log_snr[-1], steps)
        if grid == "logsnr":
            targets = np.linspace(log_snr[0], end, k)
        elif grid == "tapered":
            targets = end + (log_snr[0] - end) * np.linspace(0, 1, k)[::-1] ** TAPER
        else:
            lo, hi = np.exp(-0.5 * log_snr[0] / rho), np.exp(-0.5 * end / rho)  # sigma^(1/rho)
            targets = -2 * rho * np.log(lo + np.linspace(0, 1, k) * (hi - lo))  # sigma -> log-SNR
        ts = _interp_t(targets, np.maximum(log_snr, LOG_SNR_MIN - 1))
        if capped:
            ts = np.append(ts, n - 1)
    out = _distinct_ascending(np.asarray(ts, dtype=np.float64), n)
    return out[:-1] + [_exact(top)] if out[-1] == n - 1 else out


def _log_snr(schedule: Schedule) -> np.ndarray:
    ab = schedule.alphas_cumprod.double().cpu().numpy()
    with np.errstate(divide="ignore"):
        return np.log(ab) - np.log1p(-ab)  # -inf at zero terminal SNR


def _fractional(grid: str, schedule: Schedule, steps: int, top: float, rho: float) -> list[int | float]:
    """karras-sigmas and lu-lambdas: ``steps`` exact noise levels from top down to t = 0, as the
    fractional timesteps where ``Schedule.alpha_bar_at`` takes them (its inverse: log-SNR is
    piecewise linear in t). A zero-SNR top (sigma = inf) is kept and the rest spaced below it."""
    log_snr = _log_snr(schedule)
    hi_t = top
    lam_top = float(schedule.alpha_bar_at(top).log() - (-schedule.alpha_bar_at(top)).log1p())
    k = steps
    if not math.isfinite(lam_top):
        hi_t, k = math.floor(top) - 1 if top == math.floor(top) else math.floor(top), steps - 1
        lam_top = float(log_snr[hi_t])
    lam0 = float(log_snr[0])
    if grid == "lu-lambdas":
        targets = np.linspace(lam_top, lam0, k)
    else:
        s_max, s_min = math.exp(-0.5 * lam_top), math.exp(-0.5 * lam0)
        sig = (s_max ** (1 / rho) + np.linspace(0, 1, k) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        targets = -2.0 * np.log(sig)
    finite = np.where(np.isfinite(log_snr), log_snr, log_snr[np.isfinite(log_snr)].min() - 1.0)
    ts = _interp_t(targets, finite)
    ts[0], ts[-1] = hi_t, 0.0  # the ends exactly, not as interpolation returns them
    out = [_exact(t) for t in ts[::-1]]
    if k < steps:
        out.append(_exact(top))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"{steps} steps of grid {grid!r} do not fit below t_start={top!r}; use fewer steps")
    return out


def sampling_times(
    schedule: Schedule,
    steps: int | None,
    grid: str,
    timesteps: Sequence[float] | None = None,
    t_start: float | None = None,
) -> list[int | float]:
    """The times a sampler visits, noisiest first: ``timesteps`` as given (ascending or descending,
    distinct, in [0, T-1]; fractional allowed), or else ``steps`` (None: every integer timestep up to
    t_start) of ``grid`` from ``t_start`` (None: T-1) down."""
    T = schedule.num_timesteps
    if timesteps is None:
        top = _check_top(schedule, t_start)
        n = steps if steps is not None else math.floor(top) + 1
        return get_timesteps(grid, schedule, n, t_start=t_start)[::-1]
    ts = list(timesteps)
    if not ts or any(isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) for t in ts):
        raise ConfigError(f"timesteps must be a non-empty list of numbers; got {list(timesteps)!r}")
    ts = [_exact(float(t)) for t in ts]
    if any(not 0 <= t <= T - 1 for t in ts):
        raise ConfigError(f"timesteps must lie in [0, {T - 1}]; got {ts!r}")
    if len(ts) > 1 and ts[0] < ts[-1]:
        ts = ts[::-1]
    if any(b >= a for a, b in zip(ts, ts[1:])):
        raise ConfigError(f"timesteps must be strictly increasing or strictly decreasing; got {list(timesteps)!r}")
    if steps is not None and steps != len(ts):
        raise ConfigError(f"steps={steps!r} disagrees with the {len(ts)} timesteps given; leave steps out")
    if t_start is not None and t_start != ts[0]:
        raise ConfigError(f"t_start={t_start!r} is not the noisiest of the timesteps given ({ts[0]!r}); leave it out")
    return ts
