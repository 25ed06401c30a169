"""From settings to a plan: the one rule that fills in a sampler's default steps and grid.

Used by the facade (``GaussianDiffusion.sample`` and ``img2img``), the editing commands, the run
checks and the records, so that what is drawn, what is checked and what is written down agree.
"""

from __future__ import annotations

import math

from ..config import SampleConfig
from ..schedules import Schedule
from .plan import Plan, make_plan
from .registry import DEFAULT_GRIDS, DEFAULT_STEPS, get_sampler
from .timesteps import FRACTIONAL_GRIDS


def steps_and_grid(
    sampler: str, steps: int | None, grid: str | None, num_timesteps: int, *, t_start: float | None = None,
    default_steps: int | None = None,
) -> tuple[int, str]:
    """The steps and grid ``sampler`` takes. ``grid`` None: the sampler's (:data:`DEFAULT_GRIDS`).
    ``steps`` None: ``default_steps`` (a facade's ``sampling_timesteps``) or else the sampler's
    (:data:`DEFAULT_STEPS`, None: all T), at most T and, from ``t_start`` on an integer grid, at most
    the floor(t_start) + 1 whole timesteps there are; steps given are kept (the grid checks them)."""
    get_sampler(sampler)
    grid = DEFAULT_GRIDS[sampler] if grid is None else grid
    if steps is None:
        steps = min(default_steps or DEFAULT_STEPS[sampler] or num_timesteps, num_timesteps)
        if t_start is not None and grid not in FRACTIONAL_GRIDS:
            steps = min(steps, math.floor(t_start) + 1)
    return steps, grid


def config_steps_and_grid(sc: SampleConfig, num_timesteps: int, t_start: float | None = None) -> tuple[int, str]:
    """:func:`steps_and_grid` of a :class:`~ddpm.config.SampleConfig` (steps 0, grid "": the defaults)."""
    return steps_and_grid(sc.sampler, sc.steps or None, sc.grid or None, num_timesteps, t_start=t_start)


def plan_for(schedule: Schedule, sc: SampleConfig, *, t_start: float | None = None) -> Plan:
    """The plan a :class:`~ddpm.config.SampleConfig` means on ``schedule``, started at ``t_start``
    (None: T-1): its sampler's default steps and grid filled in, ending at ``sc.final``."""
    steps, grid = config_steps_and_grid(sc, schedule.num_timesteps, t_start)
    return make_plan(schedule, steps, grid, t_start=t_start, final=sc.final)
