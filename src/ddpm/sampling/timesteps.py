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
    - ``quadratic``: denser near t = 0 (DDIM's "quad", t_i proportional to i^2, up to 0.8T).
    - ``karras``: noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) spaced as in Karras
      et al. 2022 eq. 5 (rho = 7) between the schedule's smallest and largest sigma.
    - ``logsnr``: uniform in log-SNR between the ends, as the DPM-Solver papers recommend.
    """
    T = schedule.num_timesteps
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise ConfigError(f"steps must be an integer from 1 to the {T} training timesteps; got {steps!r}")
    if steps == T:
        return list(range(T))
    if grid == "uniform":
        ts = np.linspace(0, T - 1, steps)
    elif grid == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps))[:steps][::-1] - 1
    elif grid == "leading":
        ts = np.arange(steps) * (T // steps)
    elif grid == "quadratic":
        ts = np.floor(np.linspace(0, math.sqrt(T * 0.8), steps) ** 2)
    elif grid in ("karras", "logsnr"):
        ab = schedule.alphas_cumprod.double().cpu().numpy()
        last = T - 1 if ab[-1] > 0 else T - 2  # a zero-SNR final step has infinite sigma
        log_snr = np.log(ab[: last + 1]) - np.log1p(-ab[: last + 1])
        if grid == "logsnr":
            targets = np.linspace(log_snr[0], log_snr[-1], steps if last == T - 1 else steps - 1)
        else:
            sigma = np.exp(-0.5 * log_snr)
            lo, hi = sigma[0] ** (1 / rho), sigma[-1] ** (1 / rho)
            n = steps if last == T - 1 else steps - 1
            ramp = np.linspace(0, 1, n) if n > 1 else np.ones(1)
            targets = -2 * np.log((lo + ramp * (hi - lo)) ** rho)  # sigma -> log-SNR
        ts = _interp_t(targets, log_snr)
        if last != T - 1:
            ts = np.append(ts, T - 1)
    else:
        raise ConfigError(f"unknown timestep grid {grid!r}; choose one of {', '.join(GRIDS)}")
    return _distinct_ascending(np.asarray(ts, dtype=np.float64), T)

