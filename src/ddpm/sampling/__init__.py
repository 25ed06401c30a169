"""Samplers in the style of k-diffusion: each is a core ``run_xxx(denoiser, x, plan, *,
generator=None, callback=None, <own options>)`` over a :class:`Denoiser` (the model function with
its objective, variance type and clipping) and a :class:`Plan` (the visited times and their noise
levels), both built once; :data:`CORES` lists them by name and :func:`run_sampler` picks one.

The public samplers are thin wrappers with one signature, ``sample_xxx(model_fn, x_T, schedule,
steps, *, grid, timesteps, t_start, final, objective, variance_type, clip, threshold_percentile,
threshold_max, generator, callback, <own options>)`` (:mod:`ddpm.sampling.public`; the common
settings are described in :mod:`ddpm.sampling.common`); :func:`sample` picks one by name.
Inpainting (RePaint, :func:`sample_repaint`) wraps the ancestral sampler's step.
"""

from .ancestral import run_ancestral, sample_ancestral
from .common import FINALS, rounded_time
from .ddim import run_ddim, sample_ddim
from .denoiser import Denoiser
from .dpm_solver import (run_dpmpp_2m, run_dpmpp_2m_sde, run_dpmpp_3m, sample_dpmpp_2m, sample_dpmpp_2m_sde,
                         sample_dpmpp_3m)
from .guidance import guided_model_fn, text_guided_model_fn
from .inpaint import repaint_schedule, run_repaint, sample_repaint
from .plan import Plan, make_plan
from .registry import (CORES, DEFAULT_GRIDS, DEFAULT_STEPS, SAMPLERS, get_sampler, run_sampler, sample, sample_unipc2,
                       sample_unipc3)
from .settings import config_steps_and_grid, plan_for, steps_and_grid
from .timesteps import FRACTIONAL_GRIDS, GRIDS, get_timesteps, sampling_times
from .unipc import run_unipc, sample_unipc

__all__ = [
    "CORES",
    "DEFAULT_GRIDS",
    "DEFAULT_STEPS",
    "Denoiser",
    "FINALS",
    "FRACTIONAL_GRIDS",
    "GRIDS",
    "Plan",
    "SAMPLERS",
    "config_steps_and_grid",
    "get_sampler",
    "get_timesteps",
    "guided_model_fn",
    "make_plan",
    "plan_for",
    "repaint_schedule",
    "rounded_time",
    "run_ancestral",
    "run_ddim",
    "run_dpmpp_2m",
    "run_dpmpp_2m_sde",
    "run_dpmpp_3m",
    "run_repaint",
    "run_sampler",
    "run_unipc",
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
    "steps_and_grid",
    "text_guided_model_fn",
]
