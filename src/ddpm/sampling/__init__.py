"""Samplers: functions from x at the first visited time (x_T) to x_0 that share one signature,
``sample_xxx(model_fn, x_T, schedule, steps, *, grid, timesteps, t_start, final, objective,
variance_type, clip, threshold_percentile, threshold_max, generator, callback, <own options>)``
(the common settings are described in :mod:`ddpm.sampling.common`); :func:`sample` picks one by name.
Inpainting (RePaint, :func:`sample_repaint`) wraps the ancestral sampler's step.
"""

from .ancestral import sample_ancestral
from .common import FINALS, rounded_time
from .ddim import sample_ddim
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from .guidance import guided_model_fn, text_guided_model_fn
from .inpaint import repaint_schedule, sample_repaint
from .registry import DEFAULT_GRIDS, DEFAULT_STEPS, SAMPLERS, get_sampler, sample, sample_unipc2, sample_unipc3
from .timesteps import FRACTIONAL_GRIDS, GRIDS, get_timesteps, sampling_times
from .unipc import sample_unipc

__all__ = [
    "DEFAULT_GRIDS",
    "DEFAULT_STEPS",
    "FINALS",
    "FRACTIONAL_GRIDS",
    "GRIDS",
    "SAMPLERS",
    "get_sampler",
    "get_timesteps",
    "guided_model_fn",
    "repaint_schedule",
    "rounded_time",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "sample_repaint",
    "sample_unipc",
    "sample_unipc2",
    "sample_unipc3",
    "sampling_times",
    "text_guided_model_fn",
]
