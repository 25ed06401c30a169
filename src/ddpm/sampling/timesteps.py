"""Which of the T training timesteps a sampler visits when it takes fewer steps.

Every grid returns ``steps`` distinct integer timesteps in ascending order (a sampler walks them
from the last to the first). Grids differ in where they spend their steps.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..schedules import Schedule

GRIDS = ("uniform", "trailing", "leading", "quadratic", "karras", "logsnr")

SIGMA_MAX = 80.0
"""Largest noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) the karras and logsnr grids space
their steps to (Karras et al. 2022, table 1): alpha < 0.0125, nothing of an image in [-1, 1] is left."""
LOG_SNR_MIN = -2.0 * math.log(SIGMA_MAX)


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


def get_timesteps(grid: str, schedule: Schedule, steps: int, *, rho: float = 7.0) -> list[int]:
    """``steps`` ascending timesteps of ``schedule`` chosen by ``grid``.

    - ``uniform``: evenly spaced from 0 to T-1, both ends included (improved-diffusion).
    - ``trailing``: evenly spaced counting down from T-1 (Lin et al. 2023, table 2).
    - ``leading``: 0, T/steps, 2T/steps, ... (the original DDIM code; never reaches T-1).
    - ``quadratic``: t_i = (T-1) (i / (steps-1))^2, denser near t = 0. DDIM's "quad" stopped at
      0.8T, a cap tuned for the linear schedule (alpha_bar_{0.8T} = 1.5e-3); on the cosine
      schedule alpha_bar_{0.8T} = 0.095, so sampling from pure noise there is biased at any
      number of steps. Reaching T-1 removes that.
    - ``karras``: noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) spaced as in Karras
      et al. 2022 eq. 5 (rho = 7) from the schedule's smallest sigma up to its largest or
      ``SIGMA_MAX``, whichever is smaller; T-1 is added when the schedule goes beyond.
    - ``logsnr``: uniform in log-SNR over the same range, as the DPM-Solver papers recommend.

    A single step is always the noisiest timestep the grid reaches: samplers start from pure noise.
    """
    T = schedule.num_timesteps
    if grid not in GRIDS:
        raise ConfigError(f"unknown timestep grid {grid!r}; choose one of {', '.join(GRIDS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ConfigError(f"steps must be an integer from 1 to the {T} training timesteps; got {steps!r}")
    if steps == T:
        return list(range(T))
    if steps == 1 and grid != "leading":  # leading starts at 0 by definition
        return [T - 1]
    if grid == "uniform":
        ts = np.linspace(0, T - 1, steps)
    elif grid == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps))[:steps][::-1] - 1
    elif grid == "leading":
        ts = np.arange(steps) * (T // steps)
    elif grid == "quadratic":
        ts = (T - 1) * np.linspace(0, 1, steps) ** 2
    else:  # karras, logsnr: spaced in noise level between the ends of the schedule
        ab = schedule.alphas_cumprod.double().cpu().numpy()
        with np.errstate(divide="ignore"):
            log_snr = np.log(ab) - np.log1p(-ab)  # -inf at zero terminal SNR
        # Steps beyond sigma_max are wasted: the linear schedule ends at log-SNR -10.1 and cosine,
        # whose last betas are clipped, dives to -19.8 in its final 5 steps. Space the grid down to
        # sigma_max and then jump to T-1, where every sampler starts from pure noise.
        capped = log_snr[-1] < LOG_SNR_MIN
        end, n = (LOG_SNR_MIN, steps - 1) if capped else (log_snr[-1], steps)
        if grid == "logsnr":
            targets = np.linspace(log_snr[0], end, n)
        else:
            lo, hi = np.exp(-0.5 * log_snr[0] / rho), np.exp(-0.5 * end / rho)  # sigma^(1/rho)
            targets = -2 * rho * np.log(lo + np.linspace(0, 1, n) * (hi - lo))  # sigma -> log-SNR
        ts = _interp_t(targets, np.maximum(log_snr, LOG_SNR_MIN - 1))
        if capped:
            ts = np.append(ts, T - 1)
    return _distinct_ascending(np.asarray(ts, dtype=np.float64), T)

