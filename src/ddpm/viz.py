"""Pictures: image grids, line charts, animations and the diffusion-specific views built on them.

Pillow and numpy only. Every file is written atomically (a temporary file in the same directory,
flushed, fsynced and renamed over the target), so a crash never leaves half an image under the name.
Functions documented as taking [0, 1] images say so; the diffusion views take the library's [-1, 1].

- :func:`make_grid` -- [B, C, H, W] in [0, 1] -> uint8 grid array; :func:`save_grid`, :func:`save_image`.
- :func:`line_plot`, :func:`schedule_plot` -- line charts (from :mod:`ddpm.plot`).
- :func:`save_animation` -- GIF or WebP from frames.
- :func:`forward_process_strip` -- images noised to several t with one shared noise draw (eq. 4).
- :func:`denoising_frames`, :func:`denoising_grid` -- what a sampler callback collected, as
  animation frames or as one still.
- :func:`inpainting_frames` -- an inpainting's known region, model region and predicted x_0 per step.
- :func:`slerp` -- spherical interpolation between two noise tensors.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .diffusion import q_sample
from .errors import ConfigError
from .fileio import atomic_write, image_format, save_still
from .plot import PALETTE, draw_text, line_plot, schedule_plot, text_font
from .schedules import Schedule

ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
History = Sequence[tuple[int, Tensor, Tensor]]


# ---- grids ---------------------------------------------------------------------------------


def _to_uint8(images: Tensor) -> np.ndarray:
    """[B, C, H, W] float in [0, 1] (or uint8) -> uint8 numpy [B, H, W, C]."""
    x = images.detach().cpu()
    if x.dtype == torch.uint8:
        return x.permute(0, 2, 3, 1).numpy()
    if not x.is_floating_point():
        raise ConfigError(f"images must be floats in [0, 1] or uint8; got dtype {x.dtype}")
    x = torch.nan_to_num(x.float(), nan=0.0).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _integer(name: str, value, low: int) -> int:
    if not isinstance(value, numbers.Integral) or value < low:
        kind = "a positive" if low == 1 else "a non-negative"
        raise ConfigError(f"{name} must be {kind} integer; got {value!r}")
    return int(value)


def _auto_scale(height: int, target: int = 64) -> int:
    """The smallest integer scale that makes an image of ``height`` at least ``target`` px tall."""
    return max(1, math.ceil(target / height))


def make_grid(
    images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0, scale: int = 1
) -> np.ndarray:
    """Tile images [B, C, H, W] in [0, 1] (C = 1 or 3) into one uint8 array.

    ``nrow`` images per row (default ceil(sqrt(B)), at most B); each image is enlarged ``scale``
    times by nearest neighbour; ``padding`` pixels of ``pad_value`` (in [0, 1]) lie between cells
    and around the border, and fill unused cells of the last row. Returns [H', W', 3] for RGB,
    [H', W'] for grayscale, with H' = rows * (H * scale + padding) + padding (likewise W').
    """
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ConfigError(f"make_grid needs images of shape [B, 1 or 3, H, W] with B >= 1; got {list(images.shape)}")
    scale = _integer("scale", scale, 1)
    padding = _integer("padding", padding, 0)
    b, c, h, w = images.shape
    ncol = min(math.ceil(math.sqrt(b)) if nrow is None else _integer("nrow", nrow, 1), b)
    rows = math.ceil(b / ncol)
    cells = _to_uint8(images)
    if scale > 1:
        cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    ch, cw = h * scale, w * scale
    fill = int(round(min(max(float(pad_value), 0.0), 1.0) * 255))
    grid = np.full((rows * (ch + padding) + padding, ncol * (cw + padding) + padding, c), fill, np.uint8)
    for i in range(b):
        top, left = padding + (i // ncol) * (ch + padding), padding + (i % ncol) * (cw + padding)
        grid[top : top + ch, left : left + cw] = cells[i]
    return grid[:, :, 0] if c == 1 else grid


def save_grid(
    images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2, scale: int | None = None,
    text: dict[str, str] | None = None,
) -> Path:
    """Write :func:`make_grid` of images [B, C, H, W] in [0, 1] to ``path`` (PNG; .jpg/.webp also work).

    ``scale=None`` picks the smallest integer scale that makes each cell at least 64 px tall;
    ``text`` goes into the PNG's text chunks (e.g. :func:`ddpm.runs.records.png_text`).
    """
    if images.ndim not in (3, 4):
        raise ConfigError(f"save_grid needs images of shape [B, C, H, W]; got {list(images.shape)}")
    scale = _auto_scale(images.shape[-2]) if scale is None else scale
    grid = make_grid(images, nrow=nrow, padding=padding, scale=scale)
    return save_still(Image.fromarray(grid), path, text)


def save_image(image: Tensor, path: str | Path, scale: int = 1, text: dict[str, str] | None = None) -> Path:
    """Write one image [C, H, W] in [0, 1] to ``path`` (PNG; .jpg/.webp also work), ``scale`` times
    larger; ``text`` goes into the PNG's text chunks."""
    if image.ndim != 3:
        raise ConfigError(f"save_image needs one image of shape [C, H, W]; got {list(image.shape)}")
    return save_still(Image.fromarray(make_grid(image[None], nrow=1, padding=0, scale=scale)), path, text)


# ---- animations ----------------------------------------------------------------------------


def _frame_image(frame: np.ndarray | Tensor) -> Image.Image:
    if isinstance(frame, Tensor):
        if frame.ndim != 3:
            raise ConfigError(f"a tensor frame must be one image [C, H, W] in [0, 1]; got {list(frame.shape)}")
        frame = make_grid(frame[None], nrow=1, padding=0)
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
        raise ConfigError(f"an array frame must be uint8 [H, W, 3] or [H, W]; got {frame.dtype} {list(frame.shape)}")
    return Image.fromarray(frame).convert("RGB")


def save_animation(
    frames: Sequence[np.ndarray] | Sequence[Tensor],
    path: str | Path,
    *,
    duration_ms: int = 80,
    loop: int = 0,
    last_frame_ms: int | None = 1000,
) -> Path:
    """Write ``frames`` (uint8 [H, W, 3] / [H, W] arrays or [C, H, W] tensors in [0, 1]) as an
    animated GIF, or WebP when ``path`` ends in .webp (lossless).

    Each frame shows for ``duration_ms``, the last for ``last_frame_ms`` (None: the same);
    ``loop=0`` repeats forever. Both encoders merge consecutive identical frames into one.
    """
    fmt = image_format(path, ANIMATION_FORMATS)
    if len(frames) == 0:
        raise ConfigError("save_animation needs at least one frame; got none")
    duration_ms, loop = _integer("duration_ms", duration_ms, 1), _integer("loop", loop, 0)
    last_frame_ms = None if last_frame_ms is None else _integer("last_frame_ms", last_frame_ms, 1)
    images = [_frame_image(f) for f in frames]
    if len({im.size for im in images}) > 1:
        raise ConfigError(f"all frames must have the same size; got {sorted({im.size for im in images})}")
    durations = [duration_ms] * len(images)
    if last_frame_ms is not None:
        durations[-1] = last_frame_ms
    first, rest = images[0], images[1:]
    if fmt == "GIF":
        def write(tmp: Path) -> None:
            first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=durations, loop=loop)
    else:
        def write(tmp: Path) -> None:
            first.save(
                tmp, format="WEBP", save_all=True, append_images=rest, duration=durations, loop=loop, lossless=True
            )
    return atomic_write(path, write)


# ---- diffusion views -----------------------------------------------------------------------


def forward_process_strip(
    x0: Tensor,
    schedule: Schedule,
    timesteps: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    clamp: bool = True,
) -> Tensor:
    """x0 [B, C, H, W] in [-1, 1] noised to each of ``timesteps`` -> [B * K, C, H, W] in [0, 1].

    Row b holds image b at t = timesteps[0], ..., timesteps[K-1] (use ``save_grid(..., nrow=K)``).
    Every row uses ONE noise draw eps_b for all its t (Ho et al. eq. 4, x_t = sqrt(ab_t) x0 +
    sqrt(1 - ab_t) eps_b), so the strip shows the same noise growing. ``clamp=False`` returns
    (x_t + 1) / 2 without clipping to [0, 1], keeping the exact values.
    """
    if x0.ndim != 4:
        raise ConfigError(f"forward_process_strip needs x0 of shape [B, C, H, W]; got {list(x0.shape)}")
    T = schedule.num_timesteps
    ts = [int(t) for t in timesteps]
    if not ts or any(t < 0 or t >= T for t in ts):
        raise ConfigError(f"timesteps must be a non-empty list of integers in [0, {T - 1}]; got {list(timesteps)}")
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    b = x0.shape[0]
    cols = [q_sample(schedule, x0, torch.full((b,), t, device=x0.device, dtype=torch.long), noise) for t in ts]
    out = (torch.stack(cols, dim=1).flatten(0, 1) + 1) / 2  # [B, K, ...] -> [B*K, ...], row-major
    return out.clamp(0, 1) if clamp else out


def _check_history(history: History) -> None:
    if len(history) == 0:
        raise ConfigError("the sampling history is empty; record it with a sampler callback first")
    shapes = {tuple(x.shape) for _, x, _ in history} | {tuple(p.shape) for _, _, p in history}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ConfigError(
            f"every x_t and pred_x0 in the history must share one [B, C, H, W] shape; got {sorted(shapes)}"
        )


def _to_unit(x: Tensor) -> Tensor:
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def denoising_frames(
    history: History,
    *,
    nrow: int | None = None,
    scale: int | None = None,
    show_x0: bool = True,
    total_steps: int | None = None,
) -> list[np.ndarray]:
    """One uint8 frame [H', W', 3] per recorded step of ``history`` = [(i, x_t, pred_x0), ...].

    x_t and pred_x0 are [B, C, H, W] in [-1, 1], as a sampler callback receives them. A frame is a
    label strip "step i+1/N" above the grid of x_t and, with ``show_x0``, the grid of the predicted
    x_0 beside it. N is ``total_steps`` (default: the largest recorded i + 1); ``scale=None`` makes
    each cell at least 64 px tall. Feed the list to :func:`save_animation`.
    """
    _check_history(history)
    n = total_steps if total_steps is not None else max(int(i) for i, _, _ in history) + 1
    scale = _auto_scale(history[0][1].shape[-2]) if scale is None else scale
    font = text_font(12)
    strip_h, gap = 18, 8
    frames = []
    for i, x, p in history:
        grids = [make_grid(_to_unit(x), nrow=nrow, scale=scale)]
        if show_x0:
            grids.append(make_grid(_to_unit(p), nrow=nrow, scale=scale))
        grids = [np.repeat(g[:, :, None], 3, axis=2) if g.ndim == 2 else g for g in grids]
        gh, gw = grids[0].shape[:2]
        canvas = np.full((strip_h + gh, len(grids) * gw + (len(grids) - 1) * gap, 3), 255, np.uint8)
        for k, g in enumerate(grids):
            canvas[strip_h:, k * (gw + gap) : k * (gw + gap) + gw] = g
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        draw_text(draw, f"step {int(i) + 1}/{n}", font, 3, strip_h / 2, "left", "middle")
        if show_x0:
            draw_text(draw, "predicted x0", font, gw + gap + 3, strip_h / 2, "left", "middle")
        frames.append(np.asarray(img))
    return frames


def denoising_grid(history: History, *, num_columns: int = 10, show: str = "x_t") -> Tensor:
    """A still of the sampling: [B * num_columns, C, H, W] in [0, 1], row b = sample b over time.

    Columns are ``num_columns`` evenly spaced entries of ``history`` (always the first and the
    last; with fewer recorded steps than columns some repeat, so the shape stays fixed). ``show``
    is ``"x_t"`` or ``"pred_x0"``. Save it with ``save_grid(..., nrow=num_columns)``.
    """
    _check_history(history)
    num_columns = _integer("num_columns", num_columns, 1)
    if show not in ("x_t", "pred_x0"):
        raise ConfigError(f"unknown denoising_grid show {show!r}; choose one of x_t, pred_x0")
    picks = np.rint(np.linspace(0, len(history) - 1, num_columns)).astype(int)
    cols = [_to_unit(history[k][1] if show == "x_t" else history[k][2]) for k in picks]
    return torch.stack(cols, dim=1).flatten(0, 1)


def inpainting_frames(
    history: History,
    keep: Tensor,
    labels: Sequence[str],
    *,
    nrow: int | None = None,
    scale: int | None = None,
) -> list[np.ndarray]:
    """One uint8 frame per entry of ``history`` = [(i, x_t, pred_x0), ...] of an inpainting
    (RePaint's callback): the known region of x_t (the given image noised to t), the model's
    region of x_t and the predicted x_0, side by side under a strip with ``labels[k]``.

    ``keep`` [B or 1, 1 or C, H, W] is True where the image is kept; the region a panel does not
    show is drawn mid-grey. x_t and pred_x0 are in [-1, 1] as the callback receives them.
    """
    _check_history(history)
    if len(labels) != len(history):
        raise ConfigError(f"inpainting_frames needs one label per recorded step; got {len(labels)} for {len(history)}")
    keep = keep.detach().cpu().bool()
    scale = _auto_scale(history[0][1].shape[-2]) if scale is None else scale
    font = text_font(12)
    strip_h, gap = 18, 8
    frames = []
    for (_, x, p), label in zip(history, labels):
        x = x.detach().float().cpu()
        grey = torch.zeros_like(x)
        panels = [torch.where(keep, x, grey), torch.where(keep, grey, x), p]
        grids = [make_grid(_to_unit(g), nrow=nrow, scale=scale) for g in panels]
        grids = [np.repeat(g[:, :, None], 3, axis=2) if g.ndim == 2 else g for g in grids]
        gh, gw = grids[0].shape[:2]
        canvas = np.full((2 * strip_h + gh, 3 * gw + 2 * gap, 3), 255, np.uint8)
        for k, g in enumerate(grids):
            canvas[2 * strip_h :, k * (gw + gap) : k * (gw + gap) + gw] = g
        img = Image.fromarray(canvas)
        draw = ImageDraw.Draw(img)
        draw_text(draw, label, font, 3, strip_h / 2, "left", "middle")
        for k, name in enumerate(("known: image at t", "model at t", "predicted x0")):
            draw_text(draw, name, font, k * (gw + gap) + 3, 1.5 * strip_h, "left", "middle")
        frames.append(np.asarray(img))
    return frames


def slerp(a: Tensor, b: Tensor, weights: Tensor | Sequence[float], *, parallel_threshold: float = 0.9995) -> Tensor:
    """Spherical interpolation of two same-shaped noise tensors -> [len(weights), *a.shape].

    out_w = sin((1 - w) theta) / sin(theta) a + sin(w theta) / sin(theta) b, with theta the angle
    between a and b flattened (Shoemake 1985); w = 0 gives a and w = 1 gives b exactly. Gaussian
    noise lives near a sphere, so unlike lerp this keeps interpolants at a typical norm. When
    |cos theta| > ``parallel_threshold`` (nearly parallel or opposite, or a zero tensor) it falls
    back to lerp (1 - w) a + w b.
    """
    if a.shape != b.shape:
        raise ConfigError(f"slerp needs two tensors of the same shape; got {list(a.shape)} and {list(b.shape)}")
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
    work = torch.promote_types(a.dtype, torch.float32)  # reductions in at least float32
    af, bf = a.detach().to(work).flatten(), b.detach().to(work).flatten()
    norms = af.norm().item() * bf.norm().item()
    cos = (af @ bf).item() / norms if norms > 0 else 1.0
    if abs(cos) > parallel_threshold:
        ca, cb = 1.0 - w, w
    else:
        theta = math.acos(max(-1.0, min(1.0, cos)))
        ca, cb = torch.sin((1.0 - w) * theta) / math.sin(theta), torch.sin(w * theta) / math.sin(theta)
    shape = (-1,) + (1,) * a.ndim
    ca, cb = ca.to(a.device, a.dtype).reshape(shape), cb.to(a.device, a.dtype).reshape(shape)
    return ca * a + cb * b


__all__ = [
    "PALETTE",
    "denoising_frames",
    "denoising_grid",
    "forward_process_strip",
    "inpainting_frames",
    "line_plot",
    "make_grid",
    "save_animation",
    "save_grid",
    "save_image",
    "schedule_plot",
    "slerp",
]
