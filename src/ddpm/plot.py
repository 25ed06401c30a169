"""Line charts drawn with Pillow: the loss curve and the schedules compared.

:func:`line_plot` draws ``{name: (xs, ys)}`` with "nice" ticks, an optional log y axis and a
legend; :func:`schedule_plot` plots alpha_bar_t or the log-SNR of several schedules over t.
Files are written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .errors import ConfigError
from .fileio import save_still
from .schedules import Schedule

# One colour per series, in order (the widely used "tab10" hues; lines are drawn without
# anti-aliasing, so these exact values appear in the PNG).
PALETTE = (
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip



def text_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # scalable default font: Pillow >= 10.1 with FreeType
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def draw_text(draw: ImageDraw.ImageDraw, text: str, font, x: float, y: float, ha: str = "left", va: str = "top") -> None:
    """Draw ``text`` in black with its ink box aligned to (x, y) (ha: left/center/right, va: top/middle/bottom)."""
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    dx = {"left": 0, "center": (r - l) / 2, "right": r - l}[ha]
    dy = {"top": 0, "middle": (b - t) / 2, "bottom": b - t}[va]
    draw.text((round(x - dx - l), round(y - dy - t)), text, font=font, fill=(0, 0, 0))


def text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
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
    font, tfont = text_font(fs), text_font(round(fs * 1.3))
    pad, tick = max(4, fs // 2), max(3, fs // 3)
    line_h = text_size(draw, "0123456789Ag", font)[1]
    top = pad + (text_size(draw, title, tfont)[1] + pad if title else 0)
    left = pad + (line_h + pad if ylabel else 0) + max(text_size(draw, s, font)[0] for s in ylabels) + tick + 3
    bottom = height - (pad + (line_h + pad if xlabel else 0) + line_h + tick + 3)
    right = width - pad - max(text_size(draw, xlabels[-1], font)[0] // 2, pad)
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
        draw_text(draw, s, font, x, bottom + tick + 3, "center", "top")
    for v, s in zip(yticks, ylabels):
        y = round(float(py(np.float64(v))))
        draw.line([(left, y), (right, y)], fill=(232, 232, 232))
        draw.line([(left - tick, y), (left, y)], fill=(0, 0, 0))
        draw_text(draw, s, font, left - tick - 3, y, "right", "middle")
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if title:
        draw_text(draw, title, tfont, (left + right) / 2, pad, "center", "top")
    if xlabel:
        draw_text(draw, xlabel, font, (left + right) / 2, height - pad, "center", "bottom")
    if ylabel:  # rotated: draw into a mask, turn it, paste black through it
        w, h = text_size(draw, ylabel, font)
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
        box_w = pad // 2 + sw + 2 * pad + max(text_size(draw, n, font)[0] for n in names) + pad
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
            draw_text(draw, name, font, x0 + pad // 2 + sw + pad, cy, "left", "middle")
    return save_still(img, path)


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

