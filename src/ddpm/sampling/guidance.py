"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around the model function.

The wrapped function has the plain ``model_fn(x_t, t)`` signature, so every sampler guides
without knowing it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
from ..text.base import TextBatch
from .common import ModelFn

ConditionalModel = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``model(x_t [B, C, H, W], t [B], classes [B] long) -> output [B, C or 2C, H, W]``."""


def guided_model_fn(model: ConditionalModel, classes: Tensor, guidance_scale: float, null_label: int) -> ModelFn:
    """``model_fn(x_t, t)`` returning uncond + w (cond - uncond) for the labels ``classes`` [B].

    w = ``guidance_scale``: 1 is the plain conditional model, 0 the unconditional one (the model
    called with ``null_label``, the label it was trained on when labels were dropped), w > 1
    strengthens the condition. (Ho & Salimans write eq. 6 with w' = w - 1.) Both halves come from
    ONE forward pass over the doubled batch [x; x] with labels [classes; null_label].

    Only the prediction part (the first C channels) is guided; a learned variance (channels C to
    2C) is taken from the conditional half. Guiding the raw output is right for every objective:
    for a fixed x_t and t, eps, x_0 and v are affine functions of one another with the same
    coefficients for both halves, so mixing any one of them linearly mixes the others the same way.
    """
    classes = torch.as_tensor(classes).long()
    if classes.ndim != 1:
        raise ConfigError(f"guidance needs one class label per image, a 1-D tensor; got shape {tuple(classes.shape)}")
    w = float(guidance_scale)

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        b, c = x.shape[0], x.shape[1]
        if classes.shape[0] != b:
            raise ConfigError(f"guidance got {classes.shape[0]} class labels for a batch of {b} images")
        labels = classes.to(x.device)
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null_label)]))
        return _combine(out, b, c, w)

    return model_fn


def _combine(out: Tensor, b: int, c: int, w: float) -> Tensor:
    """uncond + w (cond - uncond) from the doubled batch's output [cond; uncond] [2B, ...]."""
    cond, uncond = out[:b], out[b:]
    # torch.lerp computes end - (end - start)(1 - w) for w >= 0.5 and start + w (end - start)
    # below, so w = 1 returns cond and w = 0 returns uncond bit for bit
    guided = torch.lerp(uncond[:, :c], cond[:, :c], w)
    return torch.cat([guided, cond[:, c:]], dim=1) if out.shape[1] > c else guided


TextConditionalModel = Callable[..., Tensor]
"""``model(x_t [B, C, H, W], t [B], text=TextBatch) -> output``; ``TextBatch.drop`` marks the rows
that take the null caption."""


def text_guided_model_fn(model: TextConditionalModel, text: TextBatch, guidance_scale: float) -> ModelFn:
    """``model_fn(x_t, t)`` returning uncond + w (cond - uncond) for the encoded prompts ``text`` [B].

    The same rule as :func:`guided_model_fn`, with the learned null caption as the unconditional
    input: one forward pass over [x; x] with the prompts' rows twice, the second copy marked
    ``drop``. w = 1 is the plain text-conditional model, w = 0 the unconditional one.
    """
    b = len(text)
    drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    doubled = TextBatch.cat([text.with_drop(None), text.with_drop(None)]).with_drop(drop)
    w = float(guidance_scale)
    moved: dict[torch.device, TextBatch] = {}

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        if x.shape[0] != b:
            raise ConfigError(f"guidance got {b} prompts for a batch of {x.shape[0]} images")
        if x.device not in moved:
            moved[x.device] = doubled.to(x.device)
        out = model(torch.cat([x, x]), torch.cat([t, t]), text=moved[x.device])
        return _combine(out, b, x.shape[1], w)

    return model_fn
