"""Drawing many images in batches, reproducibly: what ``ddpm sample`` and the trainer's grids use."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from .config import SampleConfig
from .errors import ConfigError
from .facade import GaussianDiffusion
from .fileio import atomic_write_text
from .runs.load import load_for_sampling
from .runs.records import describe, png_text, sample_record
from .runs.settings import sample_settings
from .training.batches import derived_seed
from .viz import save_grid, save_image


def class_layout(num: int, num_classes: int, classes: Sequence[int] | None = None, per_class: bool = False) -> list[int]:
    """The label of each of ``num`` images: cycling over ``classes`` (default: all), or, with
    ``per_class``, ``num`` images of each class one after another (one grid row per class)."""
    chosen = list(classes) if classes else list(range(num_classes))
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(f"class {bad[0]} is out of range; this model knows classes 0 to {num_classes - 1}")
    if per_class:
        return [c for c in chosen for _ in range(num)]
    return [chosen[i % len(chosen)] for i in range(num)]


@torch.inference_mode()
def generate(
    diffusion: GaussianDiffusion,
    num: int,
    *,
    batch_size: int = 64,
    sample: SampleConfig | None = None,
    seed: int = 0,
    labels: Sequence[int] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int, Tensor, Tensor], None] | None = None,
    prompts: Sequence[str] | None = None,
) -> Tensor:
    """``num`` images [num, C, H, W] in [0, 1]. Batch ``i`` uses a generator seeded from (seed, i),
    so the same seed and batch size give the same images. ``labels`` or ``prompts``: one per image.
    ``on_step(batch, i, x_t, pred_x0)`` sees every sampler step of every batch (the sampler's
    callback, tensors in [-1, 1])."""
    if num < 1 or batch_size < 1:
        raise ConfigError(f"the number of images and the batch size must be positive; got {num} and {batch_size}")
    sample = sample or SampleConfig()
    device = diffusion.device
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        n = min(batch_size, num - start)
        g = torch.Generator(device=device).manual_seed(derived_seed(seed, 2, i))
        batch_labels = None if labels is None else list(labels[start : start + n])
        step_fn = None if on_step is None else (lambda j, x, x0, b=i: on_step(b, j, x, x0))
        batch_prompts = None if prompts is None else list(prompts[start : start + n])
        out.append(diffusion.draw(n, sample, classes=batch_labels, generator=g, callback=step_fn,
                                  prompts=batch_prompts).float().cpu())
        if on_batch is not None:
            on_batch(start + n, num)
    return torch.cat(out)


def sample_to_directory(
    source: str | Path,
    *,
    out: str | Path | None = None,
    num: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    grid: str | None = None,
    clip: str | None = None,
    classes: Sequence[int] | None = None,
    per_class: bool = False,
    guidance_scale: float | None = None,
    final: str | None = None,
    threshold_percentile: float | None = None,
    threshold_max: float | None = None,
    clipped_eps: bool | None = None,
    use_ema: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    prompts: Sequence[str] | None = None,
) -> Path:
    """Draw images from a trained run into ``out``: one PNG per image (``00007.png``, or
    ``00007_class3.png`` for a class-conditional model) and ``grid.png``. Settings not given
    come from the run's own ``[sample]`` section; ``sample.json`` and each PNG's text chunk record
    how the images were made (:func:`ddpm.runs.records.sample_record`). Everything is checked before ``out`` is made;
    ``source`` naming ``model.safetensors`` or ``ema.safetensors`` picks those weights.

    ``prompts`` (a text-conditional run): ``num`` images of each prompt, one grid row per prompt,
    named ``00007_prompt1.png`` with ``prompts.txt`` listing the prompts by number. Without
    prompts a text-conditional run draws unconditional images (the null caption)."""
    from .runs.validate import check_sample_settings

    if Path(source).name in ("model.safetensors", "ema.safetensors"):  # the file named is the one used
        use_ema = Path(source).name == "ema.safetensors"
    diffusion, ckpt = load_for_sampling(source, use_ema=use_ema, device=device)
    given = {"sampler": sampler, "steps": steps, "eta": eta, "grid": grid, "clip": clip, "guidance_scale": guidance_scale,
             "final": final, "threshold_percentile": threshold_percentile, "threshold_max": threshold_max,
             "clipped_eps": clipped_eps}
    settings = sample_settings(ckpt.config.sample, **given)
    if num < 1 or batch_size < 1:
        raise ConfigError(f"--n and --batch-size must be positive; got {num} and {batch_size}")
    text_run = diffusion.text_conditional
    if prompts and not text_run:
        raise ConfigError("--prompt needs a text-conditional run (trained with --text-conditional); this run was trained "
                          "without captions")
    if prompts and (classes or per_class):
        raise ConfigError("--prompt cannot be combined with --class or --per-class")
    if text_run and not prompts:
        if guidance_scale is not None and guidance_scale != 1.0:
            raise ConfigError("--guidance-scale needs a --prompt on a text-conditional run")
        settings = replace(settings, guidance_scale=1.0)
        log("no --prompt: drawing unconditional images (the null caption)")
    check_sample_settings(settings, diffusion.schedule, bool(diffusion.num_classes) or text_run)
    layout = None
    if prompts:
        from .text.base import check_prompts

        prompts = check_prompts(prompts, diffusion.text_encoder)  # every prompt checked before any drawing
        layout = [p for p in prompts for _ in range(num)]
    labels = None
    if diffusion.num_classes:
        labels = class_layout(num, diffusion.num_classes, classes, per_class)
    elif classes or per_class:
        raise ConfigError("--class and --per-class need a class-conditional model; this run was trained without labels")
    total = len(labels) if labels is not None else len(layout) if layout is not None else num
    run_dir = ckpt.path.parent.parent
    if out is None:
        out = run_dir / "generated" / f"step{ckpt.step}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"output directory {out} is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    record = sample_record(ckpt, settings, num_timesteps=diffusion.num_timesteps, num_images=total, seed=seed,
                           batch_size=batch_size, use_ema=use_ema, classes=classes, per_class=per_class,
                           prompts=prompts)
    log(f"drawing {total} images from {ckpt.path} ({record['weights']} weights) with {describe(record)} "
        f"({diffusion.device})")
    images = generate(diffusion, total, batch_size=batch_size, sample=settings, seed=seed, labels=labels,
                      on_batch=lambda done, n: log(f"  {done}/{n}"), prompts=layout)
    text = png_text(record)
    for i, image in enumerate(images):
        name = f"{i:05d}_class{labels[i]}.png" if labels is not None else f"{i:05d}.png"
        if layout is not None:
            name = f"{i:05d}_prompt{i // num}.png"
        save_image(image, out / name, text=text)
    if layout is not None:
        atomic_write_text(out / "prompts.txt", "".join(f"{k}\t{p}\n" for k, p in enumerate(prompts)))
    nrow = num if (per_class and labels is not None) or layout is not None else None
    save_grid(images, out / "grid.png", nrow=nrow, text=text)
    atomic_write_text(out / "sample.json", json.dumps(record, indent=2) + "\n")
    return out
