"""Exponential moving average of the weights, which is what samples are drawn from."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of a model whose weights track the model's: w_ema <- d w_ema + (1 - d) w.

    With ``warmup`` the decay starts low and rises as d_k = min(decay, (1 + k) / (10 + k)) for
    update k, so early averages are not dominated by the random initial weights. The update uses
    foreach ops: one kernel launch per group of tensors rather than one per parameter.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            from ..errors import ConfigError

            raise ConfigError(f"ema_decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_params = [p for p in self.model.parameters()]
        params = [p.detach() for p in model.parameters()]
        floats = [(e, p) for e, p in zip(ema_params, params) if e.dtype.is_floating_point]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p.to(e.dtype) for e, p in floats], 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
