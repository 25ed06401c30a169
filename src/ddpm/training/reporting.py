"""What a run shows while it trains: the progress bar, metrics.csv, TensorBoard, sample grids
and the loss curve. Only rank 0 reports."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..config import RunConfig
from ..generate import class_layout, generate
from ..viz import line_plot, save_grid
from ..runs.build import build_diffusion
from .ema import EMA
from ..runs.run_dir import MetricsLog


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional extra is not installed
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


class Reporter:
    def __init__(
        self,
        config: RunConfig,
        run_dir: Path | None,
        diffusion,
        ema: EMA,
        data,
        metrics: MetricsLog | None,
        log: Callable[[str], None],
        progress: bool | None,
        start_step: int,
        *,
        enabled: bool = True,
        prompts: list[str] | None = None,
        text_encoder=None,
    ):
        self.config, self.run_dir, self.ema, self.data, self.metrics, self.log = config, run_dir, ema, data, metrics, log
        self.enabled = enabled
        self.last_loss = float("nan")
        self._losses: list[float] = []
        self._images = 0
        self._nonfinite = 0
        self._interval_start = time.monotonic()
        self._start = time.monotonic()
        self._paused = 0.0
        tc = config.train
        show_bar = sys.stderr.isatty() if progress is None else progress
        self.bar = tqdm(total=tc.max_steps, initial=start_step, disable=not (enabled and show_bar),
                        dynamic_ncols=True, unit="step", file=sys.stderr)
        self.writer = _tensorboard(run_dir) if enabled and tc.tensorboard and run_dir is not None else None
        # samples come from the EMA weights, wrapped in the same diffusion settings
        self.ema_diffusion = build_diffusion(config, ema.model, text_encoder) if enabled else None
        dc = config.data
        self.labels = class_layout(tc.num_samples, dc.num_classes) if dc.class_conditional else None
        # text runs: the prompts in turn, one grid column each
        self.prompts = [prompts[i % len(prompts)] for i in range(tc.num_samples)] if prompts else None
        self.columns = len(prompts) if prompts else None

    def skipped(self, total: int) -> None:
        self._nonfinite = total

    def step(self, step: int, loss: float, lr: float, grad_norm: float, images: int, nonfinite: int) -> None:
        if not self.enabled:
            return
        self._losses.append(loss)
        self._images += images
        self._nonfinite = nonfinite
        self.last_loss = loss
        self.bar.update(1)
        tc = self.config.train
        if step % tc.log_every and step != tc.max_steps:
            return
        now = time.monotonic()
        seconds = max(now - self._interval_start - self._paused, 1e-9)
        row = {
            "step": step,
            "loss": sum(self._losses) / len(self._losses),
            "lr": lr,
            "grad_norm": grad_norm,
            "images_per_s": self._images / seconds,
            "elapsed_s": now - self._start,
            "nonfinite_skipped": self._nonfinite,
        }
        self.metrics.append(row)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}")
        if self.bar.disable:
            eta = (tc.max_steps - step) * seconds / max(len(self._losses), 1)
            self.log(f"step {step}/{tc.max_steps}  loss {row['loss']:.4f}  {row['images_per_s']:.0f} img/s  "
                     f"lr {lr:.2e}  eta {eta:.0f} s")
        if self.writer is not None:
            for key in ("loss", "lr", "grad_norm", "images_per_s"):
                self.writer.add_scalar(f"train/{key}", row[key], step)
        self._losses, self._images, self._paused = [], 0, 0.0
        self._interval_start = now

    def samples(self, step: int, device: torch.device) -> None:
        """A grid from the EMA weights with a fixed seed (successive grids are comparable)."""
        if not self.enabled:
            return
        began = time.monotonic()
        tc = self.config.train
        images = generate(self.ema_diffusion, tc.num_samples, batch_size=tc.num_samples, sample=self.config.sample,
                          seed=tc.seed, labels=self.labels, prompts=self.prompts)
        nrow = self.config.data.num_classes if self.labels is not None else self.columns
        path = save_grid(images, self.run_dir / "samples" / f"step_{step:08d}.png", nrow=nrow)
        if self.writer is not None:
            self.writer.add_image("samples", torch.from_numpy(_grid_array(path)).permute(2, 0, 1), step)
        self.plot_loss()
        self._paused += time.monotonic() - began

    def plot_loss(self) -> None:
        rows = self.metrics.rows if self.metrics is not None else []
        if rows:
            losses = [r["loss"] for r in rows]
            # a log axis, unless a loss is not positive (a learned variance's bound term can make it so)
            logy = all(v > 0 for v in losses if v == v)
            line_plot({"loss": ([r["step"] for r in rows], losses)}, self.run_dir / "loss.png",
                      title="training loss", xlabel="step", ylabel="loss", logy=logy)

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.writer is not None:
            self.writer.close()


def _grid_array(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()
