"""What made an output: the record written beside generated images and into each PNG.

``ddpm sample`` writes :func:`sample_record` as ``sample.json`` in its output folder and into
every PNG's text chunk (key :data:`PNG_KEY`), so a folder, or one image copied out of it, tells
its recipe: the checkpoint and weights, the sampler with the steps and grid actually used, the
classes, the seed and the batch size (batch ``i`` is seeded from the seed and ``i``).
Features that draw differently (prompts, editing, distilled students) add their keys here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .._version import __version__
from ..config import SampleConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

FORMAT = "torch-ddpm sample"
PNG_KEY = "torch-ddpm"
"""The PNG text-chunk key under which each image carries its record, as JSON."""


def sample_record(
    ckpt: "Checkpoint",
    settings: SampleConfig,
    *,
    num_timesteps: int,
    num_images: int,
    seed: int,
    batch_size: int,
    use_ema: bool,
    classes: Sequence[int] | None = None,
    per_class: bool = False,
    prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The recipe of a set of images drawn from ``ckpt`` with ``settings``: the steps and grid
    are the ones used (the sampler's defaults filled in), never 0 or empty. It holds no time, so
    the same command writes byte-identical PNGs (the default folder name carries the time)."""
    from ..sampling import config_steps_and_grid

    steps, grid = config_steps_and_grid(settings, num_timesteps)
    return {
        "format": FORMAT,
        "torch_ddpm": __version__,
        "run": ckpt.config.name,
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "weights": "ema" if use_ema else "raw",
        "sampler": settings.sampler,
        "steps": steps,
        "grid": grid,
        "eta": settings.eta,
        "guidance_scale": settings.guidance_scale,
        "clip": settings.clip,
        "threshold_percentile": settings.threshold_percentile,
        "threshold_max": settings.threshold_max,
        "clipped_eps": settings.clipped_eps,
        "final": settings.final,
        "classes": list(classes) if classes else None,  # None: all classes in turn (or an unconditional model)
        "per_class": per_class,
        "prompts": list(prompts) if prompts else None,  # a text-conditional run: num_images / len(prompts) of each
        "num_images": num_images,
        "seed": seed,
        "batch_size": batch_size,
    }


def edit_record(
    ckpt: "Checkpoint",
    kind: str,
    *,
    image: str,
    num_images: int,
    seed: int,
    batch_size: int,
    use_ema: bool,
    steps: int,
    grid: str,
    clip: str,
    classes: Sequence[int] | None,
    guidance_scale: float,
    sampler: str = "ancestral",
    eta: float = 0.0,
    mask: str | None = None,
    box: str | None = None,
    jump_length: int | None = None,
    jump_n_sample: int | None = None,
    model_evaluations: int | None = None,
    strength: float | None = None,
    t_start: int | None = None,
    prompt: str | None = None,
) -> dict[str, Any]:
    """The recipe of images made by editing ``image`` (``kind`` "inpaint" or "img2img"): a
    :func:`sample_record` of the sampler used (RePaint's steps are ancestral ones) with an ``edit``
    entry: the image, and the mask or box with RePaint's jump length, resamplings and model
    evaluations per image, or SDEdit's strength and the timestep it starts from."""
    settings = SampleConfig(sampler=sampler, steps=steps, grid=grid, eta=eta, clip=clip, guidance_scale=guidance_scale)
    record = sample_record(ckpt, settings, num_timesteps=ckpt.config.diffusion.timesteps, num_images=num_images,
                           seed=seed, batch_size=batch_size, use_ema=use_ema, classes=classes,
                           prompts=[prompt] if prompt else None)
    if kind == "inpaint":
        edit = {"kind": kind, "image": image, "mask": mask, "box": box, "jump_length": jump_length,
                "jump_n_sample": jump_n_sample, "model_evaluations": model_evaluations}
    elif kind == "img2img":
        edit = {"kind": kind, "image": image, "strength": strength, "t_start": t_start}
    else:
        raise ConfigError(f"unknown kind of edit {kind!r}; choose inpaint or img2img")
    record["edit"] = edit
    return record


def describe(record: dict[str, Any]) -> str:
    """The sampling part of a record as words: "dpm++2m, 20 steps on the logsnr grid"."""
    text = f"{record['sampler']}, {record['steps']} steps on the {record['grid']} grid"
    if record.get("eta"):
        text += f", eta {record['eta']:g}"
    if record.get("guidance_scale", 1.0) != 1.0:
        text += f", guidance {record['guidance_scale']:g}"
    edit = record.get("edit") or {}
    if edit.get("kind") == "inpaint":
        text = (f"RePaint with {text}, jump length {edit['jump_length']}, {edit['jump_n_sample']} resamplings "
                f"({edit['model_evaluations']} model evaluations per image)")
    elif edit.get("kind") == "img2img":
        text = f"SDEdit at strength {edit['strength']:g} (from t = {edit['t_start']}) with {text}"
    return text


def png_text(record: dict[str, Any]) -> dict[str, str]:
    """The text chunk that carries ``record`` inside a PNG."""
    return {PNG_KEY: json.dumps(record, sort_keys=True)}


def read_record(path: str | Path) -> dict[str, Any]:
    """The record of a generated image (its PNG text chunk) or of a folder (its sample.json)."""
    path = Path(path)
    try:
        if path.is_dir():
            return json.loads((path / "sample.json").read_text(encoding="utf-8"))
        from PIL import Image

        with Image.open(path) as image:
            text = getattr(image, "text", {}).get(PNG_KEY)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the sample record of {path} ({err})") from None
    if text is None:
        raise ConfigError(f"{path} carries no torch-ddpm record (only PNGs written by ddpm sample do)")
    return json.loads(text)


__all__ = ["FORMAT", "PNG_KEY", "describe", "edit_record", "png_text", "read_record", "sample_record"]
