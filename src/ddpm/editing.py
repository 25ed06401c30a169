"""Editing a user's image with a trained run: what ``ddpm inpaint`` and ``ddpm img2img`` call.

The input image is read with the image-folder loader's safe decoding (only the PNG, JPEG, WebP,
BMP and GIF decoders, EXIF orientation, transparency on white, decompression bombs refused) and
fitted to the run's size and mode, with a message when it had another. A mask image is white
where new content is to be generated and black where the image is kept (as image editors and
diffusers' inpainting pipelines use); ``box`` gives a rectangle to generate instead.

Each command writes ``00000.png``... (the results), ``input.png`` (the image as the model saw it),
``mask.png`` (inpaint), ``grid.png`` (input, mask and results side by side) and ``sample.json``,
the recipe (:func:`ddpm.runs.records.edit_record`), also carried by every PNG.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .data.folder import FORMATS, load_image
from .errors import ConfigError, DataError
from .fileio import atomic_write_text
from .generate import class_layout
from .runs.load import load_for_sampling
from .runs.records import describe, edit_record, png_text
from .sampling.inpaint import DEFAULT_GRID, DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE
from .training.batches import derived_seed
from .viz import save_grid, save_image

MODES = {1: "L", 3: "RGB"}


def read_image(path: str | Path, size: tuple[int, int], channels: int, *, what: str = "image",
               log: Callable[[str], None] = print) -> Tensor:
    """The image file ``path`` as [1, channels, H, W] floats in [0, 1], resized (short side) and
    center-cropped to ``size`` = (H, W) and converted to grayscale or RGB if it differs, saying so."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:
                src_size, src_mode = image.size, image.mode
        pixels = load_image(path, size, channels)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types on bad files
        raise DataError(f"cannot read {what} {path} as a PNG, JPEG, WebP, BMP or GIF image ({type(err).__name__}: {err})") from None
    h, w = size
    changes = []
    if src_size != (w, h):
        cropped = src_size[0] * h != src_size[1] * w
        changes.append(f"resized to {w}x{h}" + (" (short side, center crop)" if cropped else ""))
    if src_mode != MODES[channels]:
        changes.append(f"converted to {'grayscale' if channels == 1 else 'RGB'}")
    if changes:
        log(f"{what} {path} is {src_size[0]}x{src_size[1]} {src_mode}: {' and '.join(changes)} to fit the run")
    return torch.from_numpy(np.array(pixels, dtype=np.float32)).div(255.0)[None]


def read_mask(path: str | Path, size: tuple[int, int], *, image_size: tuple[int, int] | None = None,
              log: Callable[[str], None] = print) -> Tensor:
    """A mask image (white: generate, black: keep; grey levels split at the middle) as the keep
    mask [1, 1, H, W] (True: keep), fitted like the image; ``image_size`` = the input image's own
    (width, height), which the mask's must equal so that the two line up."""
    path = Path(path)
    if image_size is not None:
        try:
            with Image.open(path, formats=FORMATS) as image:
                mask_size = image.size
        except FileNotFoundError:
            raise DataError(f"mask {path} does not exist") from None
        except Exception as err:  # noqa: BLE001
            raise DataError(f"cannot read mask {path} as a PNG, JPEG, WebP, BMP or GIF image ({type(err).__name__}: {err})") from None
        if mask_size != image_size:
            raise ConfigError(f"mask {path} is {mask_size[0]}x{mask_size[1]} but the image is "
                              f"{image_size[0]}x{image_size[1]}; give a mask of the image's size")
    return read_image(path, size, 1, what="mask", log=log) < 0.5


def box_mask(box: str | Sequence[int], size: tuple[int, int]) -> Tensor:
    """The keep mask [1, 1, H, W] that generates the rectangle ``box`` = "x0,y0,x1,y1" (pixels of the
    image at the run's size; x1 and y1 exclusive) and keeps the rest."""
    h, w = size
    try:
        values = [int(v) for v in box.split(",")] if isinstance(box, str) else [int(v) for v in box]
    except ValueError:
        values = []
    if len(values) != 4:
        raise ConfigError(f"--box must be four integers x0,y0,x1,y1; got {box!r}")
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ConfigError(f"--box {x0},{y0},{x1},{y1} is not a rectangle inside the {w}x{h} image; "
                          f"give 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}")
    keep = torch.ones(1, 1, h, w, dtype=torch.bool)
    keep[..., y0:y1, x0:x1] = False
    return keep


def check_keep_mask(keep: Tensor, source: str) -> None:
    """Refuse a mask (``source``: "mask FILE" or "--box ...") that keeps every pixel or none: there
    would be nothing to generate, or nothing to fit."""
    if bool(keep.all()):
        raise ConfigError(f"{source} is black everywhere, so there is nothing to generate; paint the region to fill white")
    if not bool(keep.any()):
        what = "covers the whole image" if source.startswith("--box") else "is white everywhere"
        raise ConfigError(f"{source} {what}, so no pixel is kept; use ddpm sample to draw new images, or keep part of it")


def _guidance(guidance_scale: float | None, ckpt, classes: Sequence[int] | None, prompt: str | None) -> float:
    """The guidance w of an edit: the one given, else the run's own (its [sample] guidance_scale,
    a number since training resolved it) when a class or a prompt is given, else 1 (nothing to
    guide towards)."""
    if guidance_scale is not None:
        return guidance_scale
    if not classes and prompt is None:
        return 1.0
    return ckpt.config.sample.guidance_scale


def _condition(diffusion, num: int, classes: Sequence[int] | None, prompt: str | None,
               guidance_scale: float) -> list[int] | None:
    """The class label of each result (or None), with the prompt and guidance checked."""
    if classes and not diffusion.num_classes:
        raise ConfigError("--class needs a class-conditional model; this run was trained without labels")
    if prompt is not None:
        if not diffusion.text_conditional:
            raise ConfigError("--prompt needs a text-conditional run (trained with --text-conditional); this run was "
                              "trained without captions")
        if classes:
            raise ConfigError("--prompt cannot be combined with --class")
        from .text.base import check_prompts

        check_prompts([prompt], diffusion.text_encoder)
    elif guidance_scale != 1.0 and not classes:
        raise ConfigError("--guidance-scale needs --class N on a class-conditional run or --prompt TEXT on a "
                          "text-conditional one")
    return class_layout(num, diffusion.num_classes, classes) if classes else None


def _output_dir(out: str | Path | None, ckpt, kind: str, seed: int, overwrite: bool) -> Path:
    if out is None:
        out = ckpt.path.parent.parent / "generated" / f"{kind}-step{ckpt.step}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output directory {out} is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write(out: Path, image: Tensor, results: Tensor, mask: Tensor | None, record: dict) -> None:
    """The results, the input (and mask), the side-by-side grid and the record."""
    text = png_text(record)
    for i, result in enumerate(results):
        save_image(result, out / f"{i:05d}.png", text=text)
    save_image(image[0], out / "input.png", text=text)
    cells = [image]
    if mask is not None:
        shown = (~mask).float().expand_as(image)  # white where generated, as the mask image is drawn
        save_image(shown[0, :1], out / "mask.png", text=text)
        cells.append(shown)
    cells.append(results)
    save_grid(torch.cat(cells), out / "grid.png", nrow=len(cells) - 1 + min(len(results), 8), text=text)
    atomic_write_text(out / "sample.json", json.dumps(record, indent=2) + "\n")


def _batches(num: int, batch_size: int):
    if num < 1 or batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be positive; got {num} and {batch_size}")
    for i, start in enumerate(range(0, num, batch_size)):
        yield i, start, min(batch_size, num - start)


def inpaint_to_directory(
    source: str | Path,
    image: str | Path,
    *,
    mask: str | Path | None = None,
    box: str | None = None,
    out: str | Path | None = None,
    num: int = 8,
    batch_size: int = 64,
    seed: int = 0,
    steps: int | None = None,
    jump_length: int = DEFAULT_JUMP_LENGTH,
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE,
    grid: str = DEFAULT_GRID,
    clip: str | None = None,
    classes: Sequence[int] | None = None,
    guidance_scale: float | None = None,
    prompt: str | None = None,
    use_ema: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """``num`` inpaintings (RePaint, :meth:`ddpm.GaussianDiffusion.inpaint`) of ``image`` with a
    trained run, where ``mask`` is white or inside ``box``; everything is checked before ``out``
    is made. The same seed and batch size give the same images."""
    from .sampling.common import check_options
    from .sampling.inpaint import DEFAULT_STEPS, model_evaluations, repaint_schedule
    from .sampling.timesteps import get_timesteps

    if (mask is None) == (box is None):
        raise ConfigError("give the region to generate as --mask FILE or as --box x0,y0,x1,y1 (one of them)")
    diffusion, ckpt = load_for_sampling(source, use_ema=use_ema, device=device)
    guidance_scale = _guidance(guidance_scale, ckpt, classes, prompt)
    size, channels = diffusion.image_size, diffusion.channels
    picture = read_image(image, size, channels, log=log)
    if mask is not None:
        with Image.open(image, formats=FORMATS) as im:
            own = im.size
        keep = read_mask(mask, size, image_size=own, log=log)
        check_keep_mask(keep, f"mask {mask}")
    else:
        keep = box_mask(box, size)
        check_keep_mask(keep, f"--box {box}")
    steps = min(DEFAULT_STEPS, diffusion.num_timesteps) if steps is None else steps
    clip = clip or ckpt.config.sample.clip
    check_options("pred_noise", "fixed_small", clip)
    repaint_schedule(steps, jump_length, jump_n_sample)
    get_timesteps(grid, diffusion.schedule, steps)
    labels = _condition(diffusion, num, classes, prompt, guidance_scale)
    list(_batches(num, batch_size))  # --n and --batch-size checked before the directory is made
    out = _output_dir(out, ckpt, "inpaint", seed, overwrite)
    record = edit_record(ckpt, "inpaint", image=str(image), num_images=num, seed=seed, batch_size=batch_size,
                         use_ema=use_ema, steps=steps, grid=grid, clip=clip, classes=classes, guidance_scale=guidance_scale,
                         mask=None if mask is None else str(mask), box=box, jump_length=jump_length,
                         jump_n_sample=jump_n_sample, model_evaluations=model_evaluations(steps, jump_length, jump_n_sample),
                         prompt=prompt)
    log(f"inpainting {image} {num} times with {ckpt.path} ({record['weights']} weights): {describe(record)} ({diffusion.device})")
    results = inpaint_images(diffusion, picture, keep, num=num, batch_size=batch_size, seed=seed, steps=steps,
                             jump_length=jump_length, jump_n_sample=jump_n_sample, grid=grid, clip=clip, labels=labels,
                             guidance_scale=guidance_scale, prompt=prompt, on_batch=lambda done, n: log(f"  {done}/{n}"))
    _write(out, picture, results, keep, record)
    return out


def inpaint_images(
    diffusion,
    picture: Tensor,
    keep: Tensor,
    *,
    num: int,
    batch_size: int = 64,
    seed: int = 0,
    steps: int,
    jump_length: int = DEFAULT_JUMP_LENGTH,
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE,
    grid: str = DEFAULT_GRID,
    clip: str | None = None,
    labels: Sequence[int] | None = None,
    guidance_scale: float = 1.0,
    prompt: str | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """``num`` RePaint completions [num, C, H, W] in [0, 1] of ``picture`` [1, C, H, W] where ``keep``
    is False, in batches of ``batch_size``, batch ``i`` drawn with a generator seeded from (seed, i):
    what ``ddpm inpaint`` writes and ``ddpm serve`` shows for the same settings. ``on_step(batch, i,
    x_t, pred_x0)`` sees every model step (tensors in [-1, 1]); ``on_batch(done, num)`` each batch."""
    results = []
    for i, start, n in _batches(num, batch_size):
        g = torch.Generator(device=diffusion.device).manual_seed(derived_seed(seed, 5, i))
        step_fn = None if on_step is None else (lambda j, x, x0, b=i: on_step(b, j, x, x0))
        results.append(diffusion.inpaint(
            picture.expand(n, -1, -1, -1), keep, steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample,
            grid=grid, clip=clip, classes=None if labels is None else list(labels[start : start + n]),
            guidance_scale=guidance_scale, prompts=prompt, generator=g, callback=step_fn).float().cpu())
        if on_batch is not None:
            on_batch(start + n, num)
    return torch.cat(results)


def img2img_to_directory(
    source: str | Path,
    image: str | Path,
    *,
    strength: float = 0.6,
    out: str | Path | None = None,
    num: int = 8,
    batch_size: int = 64,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    grid: str | None = None,
    clip: str | None = None,
    classes: Sequence[int] | None = None,
    guidance_scale: float | None = None,
    prompt: str | None = None,
    use_ema: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """``num`` SDEdit variations (:meth:`ddpm.GaussianDiffusion.img2img`) of ``image`` at
    ``strength``; sampler settings not given are the run's ``[sample]`` ones (steps: the sampler's
    default, at most the timesteps below the start). The same seed and batch size give the same images."""
    from dataclasses import replace

    from .runs.settings import sample_settings
    from .runs.validate import check_sample_settings
    from .sampling import config_steps_and_grid, plan_for

    if isinstance(strength, bool) or not 0.0 < strength <= 1.0:
        raise ConfigError(f"--strength must lie in (0, 1] (1: plain sampling); got {strength!r}")
    diffusion, ckpt = load_for_sampling(source, use_ema=use_ema, device=device)
    guidance_scale = _guidance(guidance_scale, ckpt, classes, prompt)
    settings = sample_settings(ckpt.config.sample, guidance_scale=guidance_scale, sampler=sampler, steps=steps, eta=eta,
                               grid=grid, clip=clip)
    check_sample_settings(replace(settings, steps=0), diffusion.schedule, bool(diffusion.num_classes))
    T = diffusion.num_timesteps
    t_start = None if strength == 1.0 else round(strength * (T - 1))
    steps_used, grid_used = config_steps_and_grid(settings, T, t_start)
    plan_for(diffusion.schedule, settings, t_start=t_start)  # refuses too many steps, in one sentence
    picture = read_image(image, diffusion.image_size, diffusion.channels, log=log)
    labels = _condition(diffusion, num, classes, prompt, guidance_scale)
    batches = list(_batches(num, batch_size))
    out = _output_dir(out, ckpt, "img2img", seed, overwrite)
    record = edit_record(ckpt, "img2img", image=str(image), num_images=num, seed=seed, batch_size=batch_size,
                         use_ema=use_ema, steps=steps_used, grid=grid_used, clip=settings.clip, classes=classes,
                         guidance_scale=guidance_scale, sampler=settings.sampler, eta=settings.eta, strength=strength,
                         t_start=T - 1 if t_start is None else t_start, prompt=prompt)
    log(f"editing {image} {num} times with {ckpt.path} ({record['weights']} weights): {describe(record)} ({diffusion.device})")
    results = []
    for i, start, n in batches:
        g = torch.Generator(device=diffusion.device).manual_seed(derived_seed(seed, 6, i))
        results.append(diffusion.img2img(
            picture.expand(n, -1, -1, -1).contiguous(), strength, sampler=settings.sampler, steps=steps_used,
            eta=settings.eta, grid=grid_used, clip=settings.clip,
            classes=None if labels is None else labels[start : start + n], guidance_scale=guidance_scale,
            prompts=prompt, generator=g).float().cpu())
        log(f"  {start + n}/{num}")
    _write(out, picture, torch.cat(results), None, record)
    return out


__all__ = ["box_mask", "check_keep_mask", "img2img_to_directory", "inpaint_images", "inpaint_to_directory", "read_image", "read_mask"]
