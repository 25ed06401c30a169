"""Pictures: image grids, line charts, animations and the diffusion-specific views built on them.

Pillow and numpy only. Every file is written atomically (a temporary file in the same directory,
flushed, fsynced and renamed over the target), so a crash never leaves half an image under the name.
Functions documented as taking [0, 1] images say so; the diffusion views take the library's [-1, 1].

- :func:`make_grid` -- [B, C, H, W] in [0, 1] -> uint8 grid array; :func:`save_grid`, :func:`save_image`.
- :func:`line_plot` -- a line chart with nice ticks, optional log y, legend; :func:`schedule_plot`.
- :func:`save_animation` -- GIF or WebP from frames.
- :func:`forward_process_strip` -- images noised to several t with one shared noise draw (eq. 4).
- :func:`denoising_frames`, :func:`denoising_grid` -- what a sampler callback collected, as
  animation frames or as one still.
- :func:`slerp` -- spherical interpolation between two noise tensors.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .diffusion import q_sample
from .errors import ConfigError
from .fileio import atomic_write
from .schedules import Schedule

# One colour per series, in order (the widely used "tab10" hues; lines are drawn without
# anti-aliasing, so these exact values appear in the PNG).
PALETTE = (
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
STILL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP"}
History = Sequence[tuple[int, Tensor, Tensor]]


# ---- files ---------------------------------------------------------------------------------


def _format_for(path: str | Path, formats: dict[str, str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ConfigError(f"cannot tell the format of {str(path)!r}; use a name ending in {', '.join(formats)}")
    return formats[suffix]


def _save_still(image: Image.Image, path: str | Path) -> Path:
    fmt = _format_for(path, STILL_FORMATS)
    if fmt == "JPEG":
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, quality=95))
    if fmt == "WEBP":  # lossless, so the saved pixels are the pixels we drew
        return atomic_write(path, lambda tmp: image.save(tmp, format=fmt, lossless=True))
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


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
    images: Tensor, path: str | Path, nrow: int | None = None, padding: int = 2, scale: int | None = None
) -> Path:
    """Write :func:`make_grid` of images [B, C, H, W] in [0, 1] to ``path`` (PNG; .jpg/.webp also work).

    ``scale=None`` picks the smallest integer scale that makes each cell at least 64 px tall.
    """
    if images.ndim not in (3, 4):
        raise ConfigError(f"save_grid needs images of shape [B, C, H, W]; got {list(images.shape)}")
    scale = _auto_scale(images.shape[-2]) if scale is None else scale
    grid = make_grid(images, nrow=nrow, padding=padding, scale=scale)
    return _save_still(Image.fromarray(grid), path)


def save_image(image: Tensor, path: str | Path, scale: int = 1) -> Path:
    """Write one image [C, H, W] in [0, 1] to ``path`` (PNG; .jpg/.webp also work), ``scale`` times larger."""
    if image.ndim != 3:
        raise ConfigError(f"save_image needs one image of shape [C, H, W]; got {list(image.shape)}")
    return _save_still(Image.fromarray(make_grid(image[None], nrow=1, padding=0, scale=scale)), path)


# ---- line charts ---------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # scalable default font: Pillow >= 10.1 with FreeType
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _put(draw: ImageDraw.ImageDraw, text: str, font, x: float, y: float, ha: str = "left", va: str = "top") -> None:
    """Draw ``text`` in black with its ink box aligned to (x, y) (ha: left/center/right, va: top/middle/bottom)."""
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    dx = {"left": 0, "center": (r - l) / 2, "right": r - l}[ha]
    dy = {"top": 0, "middle": (b - t) / 2, "bottom": b - t}[va]
    draw.text((round(x - dx - l), round(y - dy - t)), text, font=font, fill=(0, 0, 0))


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


def _nice_ticks(lo: float, hi: float, min_ticks: int = 4) -> tuple[list[float], int]:
    """Ticks inside [lo, hi] (hi > lo) at multiples of the largest 1-2-5 step that gives at least
    ``min_ticks`` of them; also returns the step's power of ten (for the number of decimals)."""
    top = math.floor(math.log10(hi - lo))
    for k in range(top, top - 4, -1):
        for m in (5, 2, 1):
            step = m * 10.0**k
            k0, k1 = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            if k1 - k0 + 1 >= min_ticks:
                return [round(i * step, max(0, -k) + 1) for i in range(k0, k1 + 1)], k
    raise AssertionError("unreachable: a step of span / 1000 always gives enough ticks")


def _fmt(v: float, e: int, biggest: float) -> str:
    """A tick label for a value on a grid of step m * 10**e: fixed decimals, or scientific when huge/tiny."""
    if e >= -4 and biggest < 1e6:
        s = f"{v:.{max(0, -e)}f}"
        return s.lstrip("-") if float(s) == 0 else s
    if v == 0:
        return "0"
    mant, exp = f"{v:.{max(0, math.floor(math.log10(biggest)) - e)}e}".split("e")
    return f"{mant}e{int(exp)}"


def _linear_axis(lo: float, hi: float) -> tuple[float, float, list[float], list[str]]:
    """Axis limits (the data range plus 4% each side) and labelled nice ticks inside them."""
    lo, hi = _expand(lo, hi)
    margin = 0.04 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    ticks, e = _nice_ticks(lo, hi)
    biggest = max(abs(ticks[0]), abs(ticks[-1]))
    return lo, hi, ticks, [_fmt(v, e, biggest) for v in ticks]


def _log_axis(lo: float, hi: float) -> tuple[float, float, list[float], list[str]]:
    """Like :func:`_linear_axis` for log10 values: ticks at powers of ten (every few decades when the
    range is wide), also at 2 and 5 times them when fewer than three fit, and at linear nice values
    when the range is narrower than that."""
    if hi - lo < 1e-9:  # a constant series: half a decade each side
        lo, hi = lo - 0.5, hi + 0.5
    margin = 0.04 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    k0, k1 = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    kstep = max(1, math.ceil((k1 - k0) / 8))
    ticks = [(float(k), _fmt(10.0**k, k, 1.0) if -4 <= k <= 5 else f"1e{k}") for k in range(k0, k1 + 1, kstep)]
    if len(ticks) < 3:
        for k in range(k0 - 1, k1 + 1):
            for m in (2, 5):
                if lo <= k + math.log10(m) <= hi:
                    ticks.append((k + math.log10(m), _fmt(m * 10.0**k, k, 1.0) if -4 <= k <= 5 else f"{m}e{k}"))
    if len(ticks) < 2:
        values, e = _nice_ticks(10.0**lo, 10.0**hi, min_ticks=3)
        ticks = [(math.log10(v), _fmt(v, e, values[-1])) for v in values if v > 0]
    ticks.sort()
    return lo, hi, [t for t, _ in ticks], [s for _, s in ticks]


def _expand(lo: float, hi: float) -> tuple[float, float]:
    """Widen a degenerate range (one point, a constant series) so it can be drawn in the middle."""
    if hi - lo > 1e-9 * max(abs(lo), abs(hi), 1e-300):
        return lo, hi
    d = abs(lo) * 0.1 if lo != 0 else 1.0
    return lo - d, hi + d


def _as_array(values) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _prepare_series(series, logy: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Validate the series; return (name, x, y) with y already in log10 when ``logy`` (NaN = skip)."""
    if not series:
        raise ConfigError("line_plot needs at least one series; got an empty dict")
    out = []
    for name, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigError(f"series {name!r} must be a pair (xs, ys)")
        x, y = _as_array(pair[0]), _as_array(pair[1])
        if len(x) != len(y) or len(x) == 0:
            raise ConfigError(
                f"series {name!r} needs as many x as y values and at least one point; got {len(x)} and {len(y)}"
            )
        ok = np.isfinite(x) & np.isfinite(y)
        if logy:
            bad = ok & (y <= 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise ConfigError(
                    f"logy needs positive y values; series {name!r} has {y[i]:g} at x = {x[i]:g}"
                )
            y = np.log10(np.where(ok, y, 1.0))
        out.append((str(name), np.where(ok, x, np.nan), np.where(ok, y, np.nan)))
    if not any(np.isfinite(x).any() for _, x, _ in out):
        raise ConfigError("line_plot found no finite point to draw in any series")
    return out


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    size: tuple[int, int] = (640, 400),
) -> Path:
    """Draw ``{name: (xs, ys)}`` as a line chart and write it to ``path`` (PNG).

    Axes span "nice" tick values (1-2-5 steps; powers of ten, with 2 and 5 on narrow ranges, when
    ``logy``). Each series gets the next colour of :data:`PALETTE` and a legend entry. Non-finite
    points are skipped and break the line there; a lone point is drawn as a dot; a constant series
    sits mid-axis. ``logy`` with a zero or negative y raises :class:`ConfigError`.
    """
    data = _prepare_series(series, logy)
    width, height = size
    if width < 160 or height < 120:
        raise ConfigError(f"line_plot size must be at least (160, 120) pixels; got {tuple(size)}")
    xs = np.concatenate([x for _, x, _ in data])
    ys = np.concatenate([y for _, _, y in data])
    xlo, xhi, xticks, xlabels = _linear_axis(float(np.nanmin(xs)), float(np.nanmax(xs)))
    make_y_axis = _log_axis if logy else _linear_axis
    ylo, yhi, yticks, ylabels = make_y_axis(float(np.nanmin(ys)), float(np.nanmax(ys)))

    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    fs = max(10, round(min(width, height) / 30))
    font, tfont = _font(fs), _font(round(fs * 1.3))
    pad, tick = max(4, fs // 2), max(3, fs // 3)
    line_h = _text_size(draw, "0123456789Ag", font)[1]
    top = pad + (_text_size(draw, title, tfont)[1] + pad if title else 0)
    left = pad + (line_h + pad if ylabel else 0) + max(_text_size(draw, s, font)[0] for s in ylabels) + tick + 3
    bottom = height - (pad + (line_h + pad if xlabel else 0) + line_h + tick + 3)
    right = width - pad - max(_text_size(draw, xlabels[-1], font)[0] // 2, pad)
    if right - left < 40 or bottom - top < 40:
        raise ConfigError(f"line_plot size {tuple(size)} leaves no room for the plot; make it larger")

    def px(x: np.ndarray) -> np.ndarray:
        return left + (x - xlo) / (xhi - xlo) * (right - left)

    def py(y: np.ndarray) -> np.ndarray:
        return bottom - (y - ylo) / (yhi - ylo) * (bottom - top)

    for v, s in zip(xticks, xlabels):
        x = round(float(px(np.float64(v))))
        draw.line([(x, top), (x, bottom)], fill=(232, 232, 232))
        draw.line([(x, bottom), (x, bottom + tick)], fill=(0, 0, 0))
        _put(draw, s, font, x, bottom + tick + 3, "center", "top")
    for v, s in zip(yticks, ylabels):
        y = round(float(py(np.float64(v))))
        draw.line([(left, y), (right, y)], fill=(232, 232, 232))
        draw.line([(left - tick, y), (left, y)], fill=(0, 0, 0))
        _put(draw, s, font, left - tick - 3, y, "right", "middle")
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if title:
        _put(draw, title, tfont, (left + right) / 2, pad, "center", "top")
    if xlabel:
        _put(draw, xlabel, font, (left + right) / 2, height - pad, "center", "bottom")
    if ylabel:  # rotated: draw into a mask, turn it, paste black through it
        w, h = _text_size(draw, ylabel, font)
        mask = Image.new("L", (w + 2, h + 2), 0)
        l, t, _, _ = draw.textbbox((0, 0), ylabel, font=font)
        ImageDraw.Draw(mask).text((1 - l, 1 - t), ylabel, font=font, fill=255)
        mask = mask.rotate(90, expand=True)
        y0 = max(0, round((top + bottom - mask.height) / 2))
        img.paste((0, 0, 0), (pad, y0, pad + mask.width, y0 + mask.height), mask)

    for k, (_, x, y) in enumerate(data):
        colour = PALETTE[k % len(PALETTE)]
        pts = np.stack([px(x), py(y)], axis=1)
        valid = np.isfinite(pts).all(axis=1)
        # split into runs of consecutive valid points: a skipped point breaks the line
        edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            run = [tuple(p) for p in pts[start:stop].round().tolist()]
            if len(run) == 1:
                (cx, cy), r = run[0], 3
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
            else:
                draw.line(run, fill=colour, width=2, joint="curve")

    names = [name for name, _, _ in data]
    if any(names):  # legend on a white box, in the plot corner where it hides the fewest drawn pixels
        sw = 3 * fs // 2
        box_w = pad // 2 + sw + 2 * pad + max(_text_size(draw, n, font)[0] for n in names) + pad
        box_h = len(names) * (line_h + pad // 2) + pad
        ink = np.asarray(img).min(axis=2) < 200  # series colours; not white, not the grey grid
        corners = [(right - box_w - pad, top + pad), (left + pad, top + pad),
                   (right - box_w - pad, bottom - box_h - pad), (left + pad, bottom - box_h - pad)]  # fmt: skip
        x0, y0 = min(corners, key=lambda c: ink[c[1] : c[1] + box_h + 1, c[0] : c[0] + box_w + 1].sum())
        draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=(255, 255, 255), outline=(160, 160, 160))
        for k, name in enumerate(names):
            cy = y0 + pad // 2 + k * (line_h + pad // 2) + (line_h + pad // 2) / 2
            swatch = [(x0 + pad // 2, round(cy)), (x0 + pad // 2 + sw, round(cy))]
            draw.line(swatch, fill=PALETTE[k % len(PALETTE)], width=3)
            _put(draw, name, font, x0 + pad // 2 + sw + pad, cy, "left", "middle")
    return _save_still(img, path)


def schedule_plot(
    schedules: dict[str, Schedule],
    path: str | Path,
    *,
    quantity: str = "alphas_cumprod",
    size: tuple[int, int] = (640, 400),
) -> Path:
    """Plot alpha_bar_t (``quantity="alphas_cumprod"``) or the log-SNR (``"log_snr"``) over t.

    A zero terminal SNR has log-SNR -inf; it is drawn one unit below the lowest finite value of
    all schedules and the y label says so.
    """
    if quantity not in ("alphas_cumprod", "log_snr"):
        raise ConfigError(f"unknown schedule quantity {quantity!r}; choose one of alphas_cumprod, log_snr")
    if not schedules:
        raise ConfigError("schedule_plot needs at least one schedule; got an empty dict")
    values = {name: getattr(s, quantity).detach().cpu().double() for name, s in schedules.items()}
    ylabel = "alpha_bar_t" if quantity == "alphas_cumprod" else "log SNR"
    if quantity == "log_snr" and any(bool(torch.isinf(v).any()) for v in values.values()):
        finite = torch.cat([v[torch.isfinite(v)] for v in values.values()])
        floor = math.floor(finite.min().item()) - 1 if finite.numel() else -1.0
        ceil = math.ceil(finite.max().item()) + 1 if finite.numel() else 1.0
        values = {n: v.clamp(floor, ceil) for n, v in values.items()}
        ylabel = f"log SNR (-inf drawn at {floor:g})"
    series = {n: (np.arange(v.numel()), v.numpy()) for n, v in values.items()}
    title = "alpha_bar_t over t" if quantity == "alphas_cumprod" else "log SNR over t"
    return line_plot(series, path, title=title, xlabel="t", ylabel=ylabel, size=size)


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
    fmt = _format_for(path, ANIMATION_FORMATS)
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
    font = _font(12)
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
        _put(draw, f"step {int(i) + 1}/{n}", font, 3, strip_h / 2, "left", "middle")
        if show_x0:
            _put(draw, "predicted x0", font, gw + gap + 3, strip_h / 2, "left", "middle")
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
