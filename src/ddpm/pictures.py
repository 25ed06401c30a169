"""``ddpm viz``: pictures of the forward and reverse processes, built from :mod:`ddpm.viz`.

- :func:`forward_picture`: a strip per image, noised to increasing t (q(x_t | x_0), eq. 4);
- :func:`reverse_picture`: an animation of x_t and of the predicted x_0 along sampling, from the
  sampler's callback, and a still grid (rows = samples, columns = steps);
- :func:`interpolation_picture`: images decoded by deterministic DDIM along a spherical path
  between two noise images;
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
from .generate import class_layout, load_for_sampling
from .training.validate import check_sample_settings
from .schedules import SCHEDULES, get_schedule
from .training.batches import derived_seed
from .viz import denoising_frames, denoising_grid, forward_process_strip, save_animation, save_grid, schedule_plot, slerp


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
) -> tuple[Path, Path | None]:
    """An animation (GIF or WebP) of sampling: x_t on the left, the predicted x_0 on the right,
    ending on the sample itself; and, with ``still``, a grid whose rows are samples and whose
    columns are steps. Settings not given are the run's own ``[sample]`` ones; at most
    ``max_frames`` steps are kept (evenly spaced) so long samplers stay small."""
    if Path(out).suffix.lower() not in (".gif", ".webp"):
        raise ConfigError(f"the animation is a GIF or WebP; give a name ending in .gif or .webp, not {str(out)!r}")
    diffusion, ckpt = load_for_sampling(run, device=device)
    given = {"sampler": sampler, "steps": steps, "eta": eta, "guidance_scale": guidance_scale}
    settings = replace(ckpt.config.sample, **{k: v for k, v in given.items() if v is not None})
    check_sample_settings(settings, diffusion.schedule, bool(diffusion.num_classes))
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
) -> Path:
    """Each row: two random noise images and ``columns`` points on the great circle between them
    (slerp), every one decoded by deterministic DDIM (eta = 0), so the row morphs smoothly.
    ``steps`` defaults to 50, or to the run's own DDIM steps and grid where it samples with DDIM
    (a distilled student knows only its own few timesteps)."""
    diffusion, ckpt = load_for_sampling(run, device=device)
    own = ckpt.config.sample
    grid = (own.grid or None) if own.sampler == "ddim" else None
    if steps is None:
        steps = (own.steps or 50) if own.sampler == "ddim" else 50
    if rows < 1 or columns < 2:
        raise ConfigError(f"need at least one row and two columns; got {rows} and {columns}")
    g = torch.Generator().manual_seed(derived_seed(seed, 4))
    shape = (diffusion.channels, *diffusion.image_size)
    weights = torch.linspace(0, 1, columns)
    noise = torch.cat([slerp(torch.randn(shape, generator=g), torch.randn(shape, generator=g), weights) for _ in range(rows)])
    labels = _labels_for(diffusion, rows, classes)
    labels = [c for c in labels for _ in range(columns)] if labels is not None else None
    images = diffusion.sample(len(noise), sampler="ddim", steps=steps, eta=0.0, grid=grid, noise=noise, classes=labels)
    return save_grid(images.float().cpu(), out, nrow=columns)


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


__all__ = ["forward_picture", "interpolation_picture", "reverse_picture", "schedules_picture"]
