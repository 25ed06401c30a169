"""A diffusers scheduler config as this project's schedule and sampling settings.

diffusers keeps the forward process (betas, T), what the network predicts and how the reverse
process is read (variance, clipping) in its scheduler; this project keeps them in a run's
``[diffusion]`` and ``[sample]`` sections. The names map one to one:

============================  ===========================================================
diffusers                     torch-ddpm
============================  ===========================================================
num_train_timesteps           timesteps
beta_schedule linear          beta_schedule linear with beta_start, beta_end (as given)
beta_schedule scaled_linear   beta_schedule scaled_linear with beta_start, beta_end
beta_schedule squaredcos_cap_v2  beta_schedule cosine (Nichol & Dhariwal eq. 17, betas <= 0.999)
trained_betas                 betas
rescale_betas_zero_snr        zero_terminal_snr
prediction_type               objective: epsilon pred_noise, v_prediction pred_v, sample pred_x0
variance_type                 variance_type: fixed_small (also fixed_small_log), fixed_large, learned_range
clip_sample                   clip static (range 1) or none
thresholding                  clip dynamic, dynamic_thresholding_ratio threshold_percentile,
                              sample_max_value threshold_max
============================  ===========================================================

``timestep_spacing`` and ``steps_offset`` choose diffusers' sampling grid; a run's samplers have their
own (``--grid``; ``leading`` is diffusers' default), so they are not carried over.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ConfigError

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
"""The scheduler classes whose configs describe a DDPM this project samples (their other fields
select only diffusers' own sampling grid)."""

OBJECTIVE = {"epsilon": "pred_noise", "v_prediction": "pred_v", "sample": "pred_x0"}
VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
            "learned_range": "learned_range"}
# diffusers' DDPMScheduler defaults: a bare unet/ folder takes these for what --scheduler leaves out
DEFAULTS: dict[str, Any] = {
    "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True,
    "prediction_type": "epsilon", "thresholding": False, "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0, "sample_max_value": 1.0, "rescale_betas_zero_snr": False,
}


def parse_settings(text: str) -> dict[str, Any]:
    """``--scheduler`` text: comma-separated ``name=value`` pairs in diffusers' names (values read as
    JSON where they parse: true, 0.02, "linear"; else as text), e.g.
    ``variance_type=fixed_large,prediction_type=epsilon``."""
    settings: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--scheduler takes name=value pairs separated by commas (diffusers' scheduler config "
                              f"names, e.g. variance_type=fixed_large); got {part!r}")
        try:
            settings[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            settings[name.strip()] = value.strip()
    return settings


def _number(config: dict[str, Any], name: str) -> float:
    value = config.get(name, DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"the scheduler's {name} must be a number; got {value!r}")
    return float(value)


def run_settings(config: dict[str, Any], *, learned_variance: bool) -> dict[str, dict[str, Any]]:
    """The run config's ``diffusion`` and ``sample`` fields a scheduler config describes, for a
    network that does (``learned_variance``) or does not output its variance; one sentence for a
    scheduler or a setting this project does not cover."""
    kind = config.get("_class_name", DEFAULTS["_class_name"])
    if kind not in SCHEDULERS:
        raise ConfigError(f"the scheduler is a {kind}, which torch-ddpm does not cover; it imports models whose "
                          f"scheduler is one of {', '.join(SCHEDULERS)}")
    full = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "trained_betas"}}
    T = full["num_train_timesteps"]
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ConfigError(f"the scheduler's num_train_timesteps must be an integer of at least 2; got {T!r}")
    diffusion: dict[str, Any] = {"timesteps": T, "zero_terminal_snr": bool(full["rescale_betas_zero_snr"])}
    betas, schedule = full["trained_betas"], full["beta_schedule"]
    if betas is not None:
        if not isinstance(betas, list) or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas):
            raise ConfigError("the scheduler's trained_betas must be a list of numbers")
        if len(betas) != T:
            raise ConfigError(f"the scheduler gives {len(betas)} trained_betas for num_train_timesteps {T}; "
                              "they must be one per timestep")
        diffusion.update(beta_schedule="linear", betas=tuple(float(b) for b in betas))
    elif schedule in ("linear", "scaled_linear"):
        diffusion.update(beta_schedule=schedule, beta_start=_number(full, "beta_start"), beta_end=_number(full, "beta_end"))
    elif schedule == "squaredcos_cap_v2":
        diffusion.update(beta_schedule="cosine")
    else:
        raise ConfigError(f"the scheduler's beta_schedule {schedule!r} is not covered; torch-ddpm imports linear, "
                          "scaled_linear, squaredcos_cap_v2 or given trained_betas")
    prediction = full["prediction_type"]
    if prediction not in OBJECTIVE:
        raise ConfigError(f"the scheduler's prediction_type {prediction!r} is not covered; use one of {', '.join(OBJECTIVE)}")
    diffusion["objective"] = OBJECTIVE[prediction]
    variance = full["variance_type"] if kind == "DDPMScheduler" else ("learned_range" if learned_variance else "fixed_small")
    if variance not in VARIANCE:
        raise ConfigError(f"the scheduler's variance_type {variance!r} is not covered; use one of {', '.join(VARIANCE)}")
    if (VARIANCE[variance] == "learned_range") != learned_variance:
        raise ConfigError(f"the scheduler's variance_type {variance!r} does not fit a network that "
                          f"{'outputs' if learned_variance else 'does not output'} its variance; "
                          "learned_range goes with twice the input channels out, the others with as many")
    diffusion["variance_type"] = VARIANCE[variance]
    sample: dict[str, Any] = {"clip": "none"}
    if full["thresholding"]:
        sample.update(clip="dynamic", threshold_percentile=_number(full, "dynamic_thresholding_ratio"),
                      threshold_max=_number(full, "sample_max_value"))
    elif full["clip_sample"]:
        if _number(full, "clip_sample_range") != 1.0:
            raise ConfigError(f"the scheduler's clip_sample_range {full['clip_sample_range']!r} is not covered; "
                              "torch-ddpm clips the predicted x0 to [-1, 1] (clip_sample_range 1.0) or not at all")
        sample["clip"] = "static"
    return {"diffusion": diffusion, "sample": sample}
