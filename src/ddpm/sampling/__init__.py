"""Samplers: functions from x_T to x_0 that share one signature,
``sample_xxx(model_fn, x_T, schedule, steps, *, generator=None, callback=None, **options)``."""

from .ancestral import sample_ancestral
from .timesteps import GRIDS, get_timesteps

__all__ = ["GRIDS", "get_timesteps", "sample_ancestral"]
