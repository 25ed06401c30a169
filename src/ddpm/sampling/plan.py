"""The plan: the times a sampler visits and the noise level at each, built once per call.

A sampler walks ``plan.times`` (noisiest first) and steps from ``plan.alpha_bars[i]`` to
``plan.alpha_bars[i + 1]``; the last entry is the end point ``final`` (1 for clean data, or the
noise level of timestep 0). The levels are Python floats, so the per-step coefficient tables a
sampler computes from them cost no device synchronisation inside its loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..diffusion import check_choice
from ..schedules import Schedule
from .common import FINALS
from .timesteps import sampling_times


@dataclass(frozen=True)
class Plan:
    """``times``: the visited times, noisiest first (int at whole timesteps, else float);
    ``alpha_bars``: alpha_bar at each of them and then at the end point (one entry more)."""

    times: tuple[int | float, ...]
    alpha_bars: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.times)

    @property
    def end(self) -> float:
        """alpha_bar where the last step ends: 1.0 (clean data) or alpha_bar_0."""
        return self.alpha_bars[-1]


def levels(schedule: Schedule, times: Sequence[int | float], final: str) -> list[float]:
    """alpha_bar at each of ``times`` and then at the end point ``final`` (``clean``: 1, ``t0``:
    alpha_bar_0), as Python floats: one device-to-host copy per call."""
    check_choice("final step", final, FINALS)
    ab = schedule.alpha_bar_at(torch.tensor([float(t) for t in times], dtype=torch.float64)).tolist()
    return ab + [1.0 if final == "clean" else float(schedule.alphas_cumprod[0])]


def make_plan(
    schedule: Schedule,
    steps: int | None = None,
    grid: str = "uniform",
    timesteps: Sequence[float] | None = None,
    t_start: float | None = None,
    final: str = "clean",
) -> Plan:
    """The plan of ``steps`` (None: every whole timestep up to t_start) of ``grid`` from ``t_start``
    (None: T-1) down, or of the explicit ``timesteps``, ending at ``final``
    (:func:`ddpm.sampling.timesteps.sampling_times` checks them)."""
    check_choice("final step", final, FINALS)
    times = sampling_times(schedule, steps, grid, timesteps, t_start)
    return Plan(tuple(times), tuple(levels(schedule, times, final)))
