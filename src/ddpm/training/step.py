"""One optimizer step of the training loop, kept apart so that benchmarks/throughput.py times the
very step that ``ddpm train`` takes (a hand copy there drifted from the loop's).

The loop decides what a step sees (the seeded draws, the batch and its augmentation) and what
follows it (logging, samples, checkpoints, stopping); :class:`Stepper` takes the step itself.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..text.base import TextBatch
from .distributed import Distributed
from .ema import EMA


@dataclass
class Micro:
    """One micro-batch: images in [-1, 1] as the sources deliver them. ``t``, ``noise`` and
    ``keep`` left None are drawn by ``loss_terms`` from the global generator (the benchmark);
    the loop draws them itself for the whole global batch and passes this rank's slice."""

    images: Tensor
    labels: Tensor | None = None
    t: Tensor | None = None
    noise: Tensor | None = None
    keep: Tensor | None = None
    text: TextBatch | None = None  # the images' encoded captions (a text-conditional model)


@dataclass
class StepResult:
    loss: float  # the loss of the whole step: the micro-batches' mean losses, averaged
    grad_norm: Tensor  # before clipping
    finite: bool  # False: loss or gradient was not finite on some rank, and nothing was updated


class Stepper:
    """Forward under bf16 autocast (when ``bf16``), the loss and its backward for each of
    ``grad_accum`` micro-batches, gradient clipping (``grad_clip`` 0: none, but the norm is still
    measured), the non-finite guard, then the optimizer, the learning-rate schedule and the EMA.

    ``net`` is what the forward calls: the model, or a DDP and/or compiled wrapper of it;
    clipping and the EMA read ``diffusion.model``'s own parameters."""

    def __init__(self, diffusion: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler, ema: EMA, *,
                 grad_accum: int = 1, grad_clip: float = 1.0, bf16: bool = False, ddp: nn.Module | None = None,
                 dist: Distributed | None = None):
        self.diffusion, self.net, self.model = diffusion, net, diffusion.model
        self.optimizer, self.scheduler, self.ema = optimizer, scheduler, ema
        self.grad_accum = grad_accum
        self.max_norm = grad_clip if grad_clip > 0 else math.inf
        self.ddp, self.dist = ddp, dist or Distributed()
        self.device = next(self.model.parameters()).device
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def step(self, micro_batch: Callable[[int], Micro]) -> StepResult:
        """One optimizer step over ``micro_batch(0)`` ... ``micro_batch(grad_accum - 1)``, each
        asked for just before its forward (so only one micro-batch is held at a time)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        for micro in range(self.grad_accum):
            b = micro_batch(micro)
            # with accumulation, gradients are all-reduced once, after the last micro-batch
            accumulate = self.ddp is not None and micro < self.grad_accum - 1
            with self.autocast, (self.ddp.no_sync() if accumulate else nullcontext()):
                terms = self.diffusion.loss_terms((b.images + 1) / 2, b.labels, t=b.t, noise=b.noise, keep_labels=b.keep,
                                                  network=self.net, text=b.text)
                loss = terms.loss.mean() / self.grad_accum
                loss.backward()
            loss_value += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        # every rank takes the same branch, or DDP's next all-reduce would hang
        finite = self.dist.all_true(math.isfinite(loss_value) and bool(torch.isfinite(grad_norm)), self.device)
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.ema.update(self.model)
        else:  # drop the bad gradients now; the caller counts the skip and decides whether to stop
            self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_value, grad_norm, finite)
