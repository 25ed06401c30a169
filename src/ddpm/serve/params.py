"""The parameters of ``ddpm serve``'s API requests, checked into typed requests.

Every bad value is a :class:`~ddpm.errors.ConfigError` of one sentence naming the value and what
would be accepted (the server answers it with HTTP 400). Sampler settings are checked by the
same function as ``ddpm sample``'s, so the page accepts exactly what the command line accepts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..config import SampleConfig
from ..errors import ConfigError
from ..generate import class_layout
from ..sampling import SAMPLERS, get_timesteps
from ..training.validate import check_sample_settings, resolved_steps_and_grid
from .catalog import RunInfo

MAX_SEED = 2**63 - 1
GENERATE_FIELDS = ("sampler", "steps", "seed", "n", "guidance_scale", "class", "prompt", "eta")
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")


@dataclass(frozen=True)
class GenerateRequest:
    """What to draw: the run's ``[sample]`` settings with the request's values, and the batch."""

    settings: SampleConfig
    steps: int  # sampler steps per batch, as the sampler will take them
    seed: int
    n: int
    labels: list[int] | None  # one class per image for a class-conditional run
    prompt: str | None  # text-conditional runs only


@dataclass(frozen=True)
class ForwardRequest:
    image: str  # "train:INDEX" or "upload:TOKEN"
    t: int
    seed: int


def integer(name: str, value: Any, low: int, high: int) -> int:
    """An int from JSON (not a bool, not a float) or from a query string, within [low, high]."""
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}; got {value!r}")
    return value


def number(name: str, value: Any) -> float:
    """A finite float from JSON."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def check_fields(body: Any, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise ConfigError(f"the request body must be a JSON object with fields from {', '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r}; the accepted ones are {', '.join(allowed)}")
    return body


def parse_generate(body: Any, run: RunInfo, max_images: int) -> GenerateRequest:
    """A generation request from a JSON object. Fields left out take the run's own ``[sample]``
    settings, as ``ddpm sample``'s options do, seed 0 and ``min(16, max_images)`` images; with the
    same values the images equal ``ddpm sample``'s."""
    body = check_fields(body, GENERATE_FIELDS)
    T = run.schedule.num_timesteps
    given: dict[str, Any] = {}
    sampler = body.get("sampler")
    if sampler is not None:
        if not isinstance(sampler, str) or sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        given["sampler"] = sampler
    if body.get("steps") is not None:
        given["steps"] = integer("steps", body["steps"], 1, T)
    for name in ("eta", "guidance_scale"):
        if body.get(name) is not None:
            given[name] = number(name, body[name])
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string; got {prompt!r}")
    prompt = prompt.strip() if prompt else None
    if prompt and run.conditioning != "text":
        raise ConfigError(f"run {run.name!r} is not text-conditional, so it takes no prompt; leave the prompt empty")
    if run.conditioning == "text" and not prompt:  # as ddpm sample: no prompt draws unconditional images
        if given.get("guidance_scale", 1.0) != 1.0:
            raise ConfigError("guidance_scale needs a prompt on a text-conditional run; give a prompt or set guidance to 1")
        given["guidance_scale"] = 1.0
    settings = replace(run.config.sample, **given)
    guided = run.conditioning != "none"  # classifier-free guidance needs a condition to guide by
    if settings.guidance_scale != 1.0 and not guided:
        raise ConfigError(
            f"run {run.name!r} is not class-conditional, so guidance_scale must be 1; got {settings.guidance_scale:g}"
        )
    check_sample_settings(settings, run.schedule, guided)
    steps, grid = resolved_steps_and_grid(settings, T)
    n = integer("n", body["n"], 1, max_images) if body.get("n") is not None else max(1, min(16, max_images))
    seed = integer("seed", body["seed"], 0, MAX_SEED) if body.get("seed") is not None else 0
    labels = None
    cls = body.get("class")
    if run.num_classes:
        classes = None if cls is None else [integer("class", cls, 0, run.num_classes - 1)]
        labels = class_layout(n, run.num_classes, classes)
    elif cls is not None:
        raise ConfigError(f"run {run.name!r} is not class-conditional, so it takes no class; leave the class out")
    # the sampler visits this many distinct timesteps (what its callback will count)
    visited = len(get_timesteps(grid, run.schedule, steps))
    return GenerateRequest(settings=settings, steps=visited, seed=seed, n=n, labels=labels, prompt=prompt)


def parse_forward(query: Mapping[str, str], run: RunInfo) -> ForwardRequest:
    """A forward-process request from query parameters ``image``, ``t`` and ``seed``."""
    check_fields(dict(query), ("image", "t", "seed"))
    image = query.get("image", "train:0")
    T = run.schedule.num_timesteps
    t = integer("t", query.get("t", "0"), 0, T - 1)
    seed = integer("seed", query.get("seed", "0"), 0, MAX_SEED)
    return ForwardRequest(image=image, t=t, seed=seed)
