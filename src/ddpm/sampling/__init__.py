"""Samplers: functions from x_T to x_0 that share one signature,
``sample_xxx(model_fn, x_T, schedule, steps, *, grid, objective, variance_type, clip, generator,
callback, <own options>)``; :func:`sample` picks one by name."""

from .ancestral import sample_ancestral
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from .guidance import guided_model_fn, text_guided_model_fn
from .registry import DEFAULT_GRIDS, DEFAULT_STEPS, SAMPLERS, get_sampler, sample
from .timesteps import GRIDS, get_timesteps

__all__ = [
    "DEFAULT_GRIDS",
    "DEFAULT_STEPS",
    "GRIDS",
    "SAMPLERS",
    "get_sampler",
    "get_timesteps",
    "guided_model_fn",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "text_guided_model_fn",
]
