"""The parameters of ``ddpm serve``'s API requests, checked into typed requests.

Every bad value is a :class:`~ddpm.errors.ConfigError` of one sentence naming the value and what
would be accepted (the server answers it with HTTP 400). Sampler settings are checked by the
same function as ``ddpm sample``'s, so the page accepts exactly what the command line accepts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..config import SampleConfig
from ..errors import ConfigError
from ..generate import class_layout
from ..runs.settings import sample_settings
from ..runs.validate import check_sample_settings
from ..sampling import SAMPLERS, config_steps_and_grid, get_timesteps
from .catalog import RunInfo

MAX_SEED = 2**63 - 1
GENERATE_FIELDS = ("sampler", "steps", "seed", "n", "guidance_scale", "class", "prompt", "eta")
INPAINT_FIELDS = ("image", "mask", "box", "steps", "jump_length", "jump_n_sample", "seed", "n", "guidance_scale",
                  "class", "prompt")
MAX_MASK_BYTES = 256 * 1024
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
class InpaintRequest:
    """What to fill: an image of the run (``train:INDEX`` or ``upload:TOKEN``), the keep mask
    [1, 1, H, W] (True: kept), RePaint's settings and the batch, as ``ddpm inpaint`` takes them."""

    image: str
    keep: Any  # torch.Tensor (bool)
    steps: int
    jump_length: int
    jump_n_sample: int
    evaluations: int  # model evaluations per batch (what the progress counts)
    seed: int
    n: int
    labels: list[int] | None
    prompt: str | None
    guidance_scale: float
    clip: str


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


def parse_labels(body: Mapping[str, Any], run: RunInfo, n: int) -> list[int] | None:
    """One class per image: the request's ``class``, or all classes in turn (class-conditional runs)."""
    cls = body.get("class")
    if run.num_classes:
        classes = None if cls is None else [integer("class", cls, 0, run.num_classes - 1)]
        return class_layout(n, run.num_classes, classes)
    if cls is not None:
        raise ConfigError(f"run {run.name!r} is not class-conditional, so it takes no class; leave the class out")
    return None


def parse_prompt(body: Mapping[str, Any], run: RunInfo) -> str | None:
    """The request's prompt, stripped (text-conditional runs); None when empty or left out."""
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ConfigError(f"prompt must be a string; got {prompt!r}")
    prompt = prompt.strip() if prompt else None
    if prompt and run.conditioning != "text":
        raise ConfigError(f"run {run.name!r} is not text-conditional, so it takes no prompt; leave the prompt empty")
    return prompt


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
    prompt = parse_prompt(body, run)
    if run.conditioning == "text" and not prompt:  # as ddpm sample: no prompt draws unconditional images
        if given.get("guidance_scale", 1.0) != 1.0:
            raise ConfigError("guidance_scale needs a prompt on a text-conditional run; give a prompt or set guidance to 1")
        given["guidance_scale"] = 1.0
    settings = sample_settings(run.config.sample, **given)
    guided = run.conditioning != "none"  # classifier-free guidance needs a condition to guide by
    if settings.guidance_scale != 1.0 and not guided:
        raise ConfigError(
            f"run {run.name!r} is not class-conditional, so guidance_scale must be 1; got {settings.guidance_scale:g}"
        )
    check_sample_settings(settings, run.schedule, guided)
    steps, grid = config_steps_and_grid(settings, T)
    n = integer("n", body["n"], 1, max_images) if body.get("n") is not None else max(1, min(16, max_images))
    seed = integer("seed", body["seed"], 0, MAX_SEED) if body.get("seed") is not None else 0
    labels = parse_labels(body, run, n)
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


def mask_from_png(value: Any, size: tuple[int, int]) -> Any:
    """The keep mask [1, 1, H, W] of a PNG data URL at the run's size: white (>= 128) is generated,
    black kept, as ``ddpm inpaint --mask`` reads a mask file."""
    import base64
    import binascii
    import io

    import numpy as np
    import torch
    from PIL import Image

    prefix = "data:image/png;base64,"
    if not isinstance(value, str) or not value.startswith(prefix):
        raise ConfigError("mask must be a PNG image as a data URL (data:image/png;base64,...), white where to generate")
    if len(value) > MAX_MASK_BYTES:
        raise ConfigError(f"mask is {len(value)} characters, more than the {MAX_MASK_BYTES} a mask may take")
    try:
        with Image.open(io.BytesIO(base64.b64decode(value[len(prefix):], validate=True)), formats=["PNG"]) as im:
            im.load()
            gray = np.asarray(im.convert("L"))
    except (binascii.Error, ValueError, OSError) as err:
        raise ConfigError(f"mask is not a readable PNG image ({type(err).__name__}: {err})") from None
    h, w = size
    if gray.shape != (h, w):
        raise ConfigError(f"mask is {gray.shape[1]}x{gray.shape[0]} but the run's images are {w}x{h}; "
                          "draw the mask at the run's size")
    return torch.from_numpy(gray < 128)[None, None]


def parse_inpaint(body: Any, run: RunInfo, max_images: int) -> InpaintRequest:
    """An inpainting request from a JSON object: ``image``, the region as ``mask`` (a PNG data URL,
    white = generate) or ``box`` ([x0, y0, x1, y1], x1 and y1 exclusive), RePaint's ``steps``,
    ``jump_length`` and ``jump_n_sample`` (defaults: ``ddpm inpaint``'s), ``seed``, ``n`` and the
    condition; with the same values the images equal ``ddpm inpaint``'s."""
    from ..editing import box_mask, check_keep_mask
    from ..sampling import inpaint
    from ..sampling.common import check_options
    from ..runs.build import image_size_of

    body = check_fields(body, INPAINT_FIELDS)
    T = run.schedule.num_timesteps
    image = body.get("image", "train:0")
    if not isinstance(image, str):
        raise ConfigError(f"image must be train:INDEX or upload:TOKEN; got {image!r}")
    size = image_size_of(run.config)
    if (body.get("mask") is None) == (body.get("box") is None):
        raise ConfigError("give the region to generate as mask (a PNG data URL) or as box [x0, y0, x1, y1] (one of them)")
    if body.get("mask") is not None:
        keep, source = mask_from_png(body["mask"], size), "the mask"
    else:
        box = body["box"]
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box):
            raise ConfigError(f"box must be four integers [x0, y0, x1, y1]; got {box!r}")
        keep, source = box_mask(box, size), "--box " + ",".join(map(str, box))
    check_keep_mask(keep, source)
    steps = integer("steps", body["steps"], 1, T) if body.get("steps") is not None else min(inpaint.DEFAULT_STEPS, T)
    jump_length = integer("jump_length", body.get("jump_length", inpaint.DEFAULT_JUMP_LENGTH), 1, T)
    jump_n_sample = integer("jump_n_sample", body.get("jump_n_sample", inpaint.DEFAULT_JUMP_N_SAMPLE), 1, 100)
    inpaint.repaint_schedule(steps, jump_length, jump_n_sample)  # refuses a jump longer than the chain
    clip = run.config.sample.clip
    check_options("pred_noise", "fixed_small", clip)
    n = integer("n", body["n"], 1, max_images) if body.get("n") is not None else max(1, min(8, max_images))
    seed = integer("seed", body["seed"], 0, MAX_SEED) if body.get("seed") is not None else 0
    labels = parse_labels(body, run, n) if body.get("class") is not None else None
    prompt = parse_prompt(body, run)
    guidance = number("guidance_scale", body["guidance_scale"]) if body.get("guidance_scale") is not None else 1.0
    if guidance != 1.0 and labels is None and prompt is None:
        raise ConfigError("guidance_scale needs a class (class-conditional runs) or a prompt (text-conditional runs); "
                          "set it to 1 otherwise")
    return InpaintRequest(image=image, keep=keep, steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample,
                          evaluations=inpaint.model_evaluations(steps, jump_length, jump_n_sample), seed=seed, n=n,
                          labels=labels, prompt=prompt, guidance_scale=guidance, clip=clip)
