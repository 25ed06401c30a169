"""``ddpm viz``: pictures of the forward and reverse processes, built from :mod:`ddpm.viz`.

- :func:`forward_picture`: a strip per image, noised to increasing t (q(x_t | x_0), eq. 4);
- :func:`reverse_picture`: an animation of x_t and of the predicted x_0 along sampling, from the
  sampler's callback, and a still grid (rows = samples, columns = steps);
- :func:`interpolation_picture`: images decoded by deterministic DDIM along a spherical path
  between two noise images;
- :func:`inpaint_picture`: an animation of RePaint (known region, model region, predicted x_0)
  and a still grid;
- :func:`schedules_picture`: alpha_bar_t and log-SNR of the schedules side by side.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from .data import get_dataset
from .errors import ConfigError
from .fileio import atomic_write
from .generate import class_layout
from .runs.load import load_for_sampling
from .runs.settings import sample_settings
from .runs.validate import check_sample_settings
from .sampling import config_steps_and_grid
from .schedules import SCHEDULES, get_schedule
from .training.batches import derived_seed
from .viz import (denoising_frames, denoising_grid, forward_process_strip, inpainting_frames, save_animation, save_grid,
                  schedule_plot, slerp)


def forward_picture(
    out: str | Path,
    *,
    dataset: str = "digits",
    data_dir: str | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    image_size: int | None = None,
    num_images: int = 6,
    columns: int = 8,
    schedule: str = "linear",
    timesteps: int = 1000,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """``num_images`` training images (one per class where there are labels), each noised to
    ``columns`` timesteps from 0 to T-1, one row per image."""
    if num_images < 1 or columns < 2:
        raise ConfigError(f"need at least one image and two columns; got {num_images} and {columns}")
    data = get_dataset(dataset, data_dir=data_dir, download=download, cache_dir=cache_dir, image_size=image_size, log=log)
    if data.labels is not None:
        first = {}
        for i, label in enumerate(data.labels.tolist()):
            first.setdefault(label, i)
        picks = [first[c] for c in sorted(first)][:num_images]
    else:
        picks = list(range(min(num_images, len(data))))
    x0 = data.to_float(torch.tensor(picks))
    sched = get_schedule(schedule, timesteps)
    ts = np.unique(np.round(np.linspace(0, timesteps - 1, columns)).astype(int)).tolist()
    strip = forward_process_strip(x0, sched, ts, generator=torch.Generator().manual_seed(seed))
    return save_grid(strip, out, nrow=len(ts))


def _labels_for(diffusion, num: int, classes: Sequence[int] | None):
    if diffusion.num_classes:
        return class_layout(num, diffusion.num_classes, classes)
    if classes:
        raise ConfigError("--class needs a class-conditional model; this run was trained without labels")
    return None


def reverse_picture(
    run: str | Path,
    out: str | Path,
    *,
    still: str | Path | None = None,
    num_images: int = 8,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    guidance_scale: float | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "auto",
    columns: int = 10,
    max_frames: int = 100,
    log: Callable[[str], None] = print,
    prompt: str | None = None,
) -> tuple[Path, Path | None]:
    """An animation (GIF or WebP) of sampling: x_t on the left, the predicted x_0 on the right,
    ending on the sample itself; and, with ``still``, a grid whose rows are samples and whose
    columns are steps. Settings not given are the run's own ``[sample]`` ones; at most
    ``max_frames`` steps are kept (evenly spaced) so long samplers stay small."""
    if Path(out).suffix.lower() not in (".gif", ".webp"):
        raise ConfigError(f"the animation is a GIF or WebP; give a name ending in .gif or .webp, not {str(out)!r}")
    diffusion, ckpt = load_for_sampling(run, device=device)
    settings = sample_settings(ckpt.config.sample, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale)
    if diffusion.text_conditional and prompt is None:
        if guidance_scale is not None and guidance_scale != 1.0:
            raise ConfigError("--guidance-scale needs a --prompt on a text-conditional run")
        settings = replace(settings, guidance_scale=1.0)  # no prompt: unconditional, nothing to guide towards
    check_sample_settings(settings, diffusion.schedule, bool(diffusion.num_classes) or prompt is not None)
    used_steps, used_grid = config_steps_and_grid(settings, diffusion.num_timesteps)
    log(f"drawing {num_images} images from {ckpt.path} with {settings.sampler}, {used_steps} steps on the {used_grid} grid")
    history: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    total: list[int] = []

    def keep(i: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        total.append(i)
        history.append((i, x.float().cpu(), x0.float().cpu()))
        if len(history) > 2 * max_frames:  # thin to every other recorded step, keeping the first
            del history[1::2]

    g = torch.Generator(device=diffusion.device).manual_seed(derived_seed(seed, 3))
    final = diffusion.sample(
        num_images,
        sampler=settings.sampler,
        steps=settings.steps or None,
        eta=settings.eta,
        grid=settings.grid or None,
        clip=settings.clip,
        guidance_scale=settings.guidance_scale,
        classes=_labels_for(diffusion, num_images, classes),
        generator=g,
        callback=keep,
        prompts=prompt,
    )
    sample = final.float().cpu() * 2 - 1  # back to [-1, 1], as the callback's tensors are
    history.append((len(total), sample, sample))  # the last frame is the result
    frames = denoising_frames(history, total_steps=len(total) + 1)
    path = save_animation(frames, out, duration_ms=max(30, 3000 // len(frames)))
    still_path = None
    if still is not None:
        still_path = save_grid(denoising_grid(history, num_columns=columns), still, nrow=columns)
    return path, still_path


@torch.inference_mode()
def interpolation_picture(
    run: str | Path,
    out: str | Path,
    *,
    rows: int = 4,
    columns: int = 10,
    steps: int | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Each row: two random noise images and ``columns`` points on the great circle between them
    (slerp), every one decoded by deterministic DDIM (eta = 0), so the row morphs smoothly.
    ``steps`` 0 (or None) is ddim's default (``DEFAULT_STEPS``); a distilled student decodes on
    its own DDIM steps and grid, the only timesteps it knows."""
    diffusion, ckpt = load_for_sampling(run, device=device)
    own = ckpt.config.sample
    student = bool(ckpt.config.distill.teacher)
    grid = own.grid if student else ""
    if not steps:
        steps = own.steps if student else 0
    if rows < 1 or columns < 2:
        raise ConfigError(f"need at least one row and two columns; got {rows} and {columns}")
    g = torch.Generator().manual_seed(derived_seed(seed, 4))
    shape = (diffusion.channels, *diffusion.image_size)
    weights = torch.linspace(0, 1, columns)
    noise = torch.cat([slerp(torch.randn(shape, generator=g), torch.randn(shape, generator=g), weights) for _ in range(rows)])
    labels = _labels_for(diffusion, rows, classes)
    labels = [c for c in labels for _ in range(columns)] if labels is not None else None
    steps, grid = config_steps_and_grid(replace(own, sampler="ddim", steps=steps, grid=grid), diffusion.num_timesteps)
    log(f"decoding {len(noise)} images from {ckpt.path} with ddim, {steps} steps on the {grid} grid")
    images = diffusion.sample(len(noise), sampler="ddim", steps=steps, eta=0.0, grid=grid, noise=noise, classes=labels)
    return save_grid(images.float().cpu(), out, nrow=columns)


def _held_out_images(config, num: int, log: Callable[[str], None]) -> torch.Tensor:
    """The first held-out image of each class (or the first ``num``) of a run's data set, in [0, 1]."""
    d = config.data
    data = get_dataset(d.dataset, split="test", data_dir=d.data_dir or None, download=d.download,
                       cache_dir=d.cache_dir or None, image_size=tuple(d.image_size), channels=d.channels, log=log)
    picks = list(range(min(num, len(data))))
    if data.labels is not None:
        first: dict[int, int] = {}
        for i, label in enumerate(data.labels.tolist()):
            first.setdefault(label, i)
        picks = ([first[c] for c in sorted(first)] + [i for i in range(len(data)) if i not in first.values()])[:num]
    return (data.to_float(torch.tensor(picks)) + 1) / 2


def inpaint_picture(
    run: str | Path,
    out: str | Path,
    *,
    still: str | Path | None = None,
    image: str | Path | None = None,
    mask: str | Path | None = None,
    box: str | None = None,
    num_images: int = 4,
    steps: int = 50,
    jump_length: int = 5,
    jump_n_sample: int = 5,
    grid: str = "uniform",
    seed: int = 0,
    device: str = "auto",
    columns: int = 8,
    max_frames: int = 80,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path | None]:
    """An animation (GIF or WebP) of RePaint: at each model step the known region (the image
    noised to t), the model's region and the predicted x_0, labelled with t and whether the walk
    is on a resampling pass, ending on the result; with ``still``, a grid whose rows are images:
    the original, the input with the region to generate in grey, the predicted x_0 at
    ``columns`` evenly spaced model steps, and the result.

    The images are ``image`` (``num_images`` inpaintings of it) or the run's first held-out
    image of each class; the region is ``mask`` (white: generate), ``box``, or the bottom half.
    At most ``max_frames`` model steps are shown, evenly spaced, always with the first and last.
    """
    from .editing import box_mask, check_keep_mask, read_image, read_mask
    from .sampling.inpaint import model_levels
    from .sampling.timesteps import sampling_times

    if Path(out).suffix.lower() not in (".gif", ".webp"):
        raise ConfigError(f"the animation is a GIF or WebP; give a name ending in .gif or .webp, not {str(out)!r}")
    if num_images < 1 or columns < 2 or max_frames < 2:
        raise ConfigError(f"need at least one image, two columns and two frames; got {num_images}, {columns} and {max_frames}")
    diffusion, ckpt = load_for_sampling(run, device=device)
    size, channels = diffusion.image_size, diffusion.channels
    if image is not None:
        images = read_image(image, size, channels, log=log).expand(num_images, -1, -1, -1).contiguous()
    else:
        images = _held_out_images(ckpt.config, num_images, log)
    if mask is not None:
        keep = read_mask(mask, size, log=log)
        check_keep_mask(keep, f"mask {mask}")
    else:
        keep = box_mask(box or f"0,{size[0] // 2},{size[1]},{size[0]}", size)
        check_keep_mask(keep, f"--box {box}")
    levels = model_levels(steps, jump_length, jump_n_sample)
    times = sampling_times(diffusion.schedule, steps, grid)[::-1]
    n = len(levels)
    shown = set(np.unique(np.rint(np.linspace(0, n - 1, min(max_frames, n))).astype(int)).tolist())
    log(f"inpainting {len(images)} images with {ckpt.path}: RePaint, {steps} steps on the {grid} grid, jump length "
        f"{jump_length}, {jump_n_sample} resamplings ({n} model evaluations)")
    history: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def keep_step(i: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        if i in shown:
            history.append((i, x.float().cpu(), x0.float().cpu()))

    g = torch.Generator(device=diffusion.device).manual_seed(derived_seed(seed, 7))
    result = diffusion.inpaint(images, keep, steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample,
                               grid=grid, generator=g, callback=keep_step).float().cpu()
    revisit, seen = [], set()  # a model step at a level visited before is on a resampling pass
    for level in levels:
        revisit.append(level in seen)
        seen.add(level)
    labels = [f"model step {i + 1}/{n}, t = {times[levels[i]]:g}" + (" (resampling)" if revisit[i] else "")
              for i, _, _ in history]
    done = result * 2 - 1
    history.append((n, done, done))
    labels.append(f"result ({n} model evaluations)")
    frames = inpainting_frames(history, keep, labels, nrow=min(len(images), 4))
    path = save_animation(frames, out, duration_ms=max(40, 4000 // len(frames)), last_frame_ms=2000)
    still_path = None
    if still is not None:
        hidden = torch.where(keep, images, torch.full_like(images, 0.5))
        steps_x0 = denoising_grid(history[:-1], num_columns=columns, show="pred_x0").reshape(len(images), columns, *images.shape[1:])
        rows = torch.cat([images[:, None], hidden[:, None], steps_x0, result[:, None]], dim=1)
        still_path = save_grid(rows.flatten(0, 1), still, nrow=columns + 3)
    return path, still_path


def schedules_picture(
    out: str | Path, *, timesteps: int = 1000, names: Sequence[str] = SCHEDULES, zero_terminal_snr: bool = False
) -> Path:
    """alpha_bar_t (left) and log-SNR (right) over t for several schedules, in one PNG."""
    if Path(out).suffix.lower() != ".png":
        raise ConfigError(f"the schedules picture is a PNG; give a name ending in .png, not {str(out)!r}")
    schedules = {n: get_schedule(n, timesteps, zero_terminal_snr=zero_terminal_snr) for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        left = schedule_plot(schedules, Path(tmp) / "a.png", quantity="alphas_cumprod")
        right = schedule_plot(schedules, Path(tmp) / "b.png", quantity="log_snr")
        with Image.open(left) as a, Image.open(right) as b:
            both = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
            both.paste(a.convert("RGB"), (0, 0))
            both.paste(b.convert("RGB"), (a.width, 0))
    return atomic_write(out, lambda tmp: both.save(tmp, format="PNG"))


__all__ = ["forward_picture", "inpaint_picture", "interpolation_picture", "reverse_picture", "schedules_picture"]
