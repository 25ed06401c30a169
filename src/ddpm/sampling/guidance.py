"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around the model function.

The wrapped function has the plain ``model_fn(x_t, t)`` signature, so every sampler guides
without knowing it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..errors import ConfigError
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
        cond, uncond = out[:b], out[b:]
        # torch.lerp computes end - (end - start)(1 - w) for w >= 0.5 and start + w (end - start)
        # below, so w = 1 returns cond and w = 0 returns uncond bit for bit
        guided = torch.lerp(uncond[:, :c], cond[:, :c], w)
        return torch.cat([guided, cond[:, c:]], dim=1) if out.shape[1] > c else guided

    return model_fn
