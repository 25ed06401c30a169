"""Every setting of a run checked before anything is created, deleted or trained.

A bad value is found in seconds, as one sentence, rather than after hours of training (a bad
sampler setting would otherwise surface at the first sample grid) or after ``--overwrite`` has
removed the run it was meant to replace.
"""

from __future__ import annotations

import torch

from ..config import RunConfig, SampleConfig
from ..diffusion import clip_x0
from ..errors import ConfigError
from ..sampling import config_steps_and_grid, get_timesteps
from ..sampling.common import check_options
from ..schedules import Schedule
from .build import build_diffusion, build_unet


def _at_least(name: str, value: float, low: float, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        bound = f"greater than {low:g}" if strict else f"at least {low:g}"
        raise ConfigError(f"--{name.replace('_', '-')} must be {bound}; got {value:g}")


def validate_config(config: RunConfig) -> None:
    """Raise a ConfigError naming the first setting that cannot work (the data section must
    already hold the data set's size, channels and classes)."""
    tc, dc = config.train, config.diffusion
    for name in ("batch_size", "grad_accum", "log_every", "num_samples", "keep_last", "max_steps"):
        _at_least(name, getattr(tc, name), 1)  # max_steps 0 would write an untrained step-0 "model"
    for name in ("warmup_steps", "sample_every", "save_every", "max_minutes", "weight_decay", "grad_clip"):
        _at_least(name, getattr(tc, name), 0)
    _at_least("lr", tc.lr, 0, strict=True)
    if len(tc.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in tc.adam_betas):
        raise ConfigError(f"--adam-betas must be two numbers in [0, 1), such as 0.9,0.999; got {list(tc.adam_betas)}")
    if config.data.num_workers < -1:
        raise ConfigError(f"--num-workers must be -1 (auto), 0 (decode in the training process) or more; got {config.data.num_workers}")
    if not 0.0 <= tc.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must lie in [0, 1); got {tc.ema_decay:g}")
    for name in ("min_snr_gamma", "offset_noise_strength", "vlb_weight"):
        _at_least(name, getattr(dc, name), 0)
    if not 0.0 <= dc.p_uncond <= 1.0:
        raise ConfigError(f"--p-uncond must be a probability in [0, 1]; got {dc.p_uncond:g}")
    m = config.model
    for name in ("attn_heads", "attn_dim_head"):
        _at_least(name, getattr(m, name), 1)
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"--dropout must lie in [0, 1); got {m.dropout:g}")
    if config.data.text_conditional:
        validate_text_settings(config)

    # the network (on the meta device: nothing allocated) and the diffusion around it
    with torch.device("meta"):
        unet = build_unet(config)
    diffusion = build_diffusion(config, unet)

    # the sampler settings used for the grids drawn during training
    check_sample_settings(config.sample, diffusion.schedule, config.data.class_conditional or config.data.text_conditional)


def validate_text_settings(config: RunConfig) -> None:
    """The text-conditioning settings: a known encoder, a token limit it can take, and no class labels beside."""
    from ..text import check_encoder_name
    from ..text.minilm import MAX_POSITIONS

    m = config.model
    if config.data.class_conditional:
        raise ConfigError("--text-conditional and --class-conditional cannot be combined; label-derived captions "
                          "already carry the classes (choose one)")
    check_encoder_name(m.text_encoder)
    low, high = (3, MAX_POSITIONS) if m.text_encoder == "minilm" else (1, 4096)
    if not low <= m.text_max_tokens <= high:
        raise ConfigError(f"--text-max-tokens must lie between {low} and {high} for the {m.text_encoder} encoder; "
                          f"got {m.text_max_tokens}")
    if m.text_encoder == "builtin":
        if m.builtin_text_dim < 4 or m.builtin_text_dim % 4:
            raise ConfigError(f"--builtin-text-dim must be a positive multiple of 4 (its attention heads); got {m.builtin_text_dim}")
        _at_least("builtin_text_layers", m.builtin_text_layers, 0)


def check_sample_settings(sc: SampleConfig, schedule: Schedule, class_conditional: bool) -> None:
    """Raise a ConfigError unless the sampler, steps, grid, clip, eta and guidance go together."""
    if sc.steps < 0:
        raise ConfigError(f"--steps must be 0 (the sampler's default) or from 1 to the {schedule.num_timesteps} "
                          f"training timesteps; got {sc.steps}")
    steps, grid = config_steps_and_grid(sc, schedule.num_timesteps)
    get_timesteps(grid, schedule, steps)
    clip_x0(torch.zeros(1), sc.clip)
    if sc.eta != 0 and sc.sampler != "ddim":
        raise ConfigError(f"--eta applies only to the ddim sampler, not to {sc.sampler}")
    if not 0.0 <= sc.eta <= 1.0:
        raise ConfigError(f"--eta must lie between 0 and 1; got {sc.eta:g}")
    check_options("pred_noise", "fixed_small", sc.clip, sc.final, sc.threshold_percentile, sc.threshold_max or None)
    if not sc.clipped_eps and sc.sampler != "ddim":
        raise ConfigError(f"--no-clipped-eps applies only to the ddim sampler, not to {sc.sampler}")
    if sc.guidance_scale not in (None, 1.0) and not class_conditional:
        raise ConfigError("--guidance-scale needs a class-conditional run (--class-conditional) or a text-conditional one")
