"""Embeddings of the conditioning signals: the timestep and, optionally, a class label."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, theta: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal features of t [B] (any real values) -> [B, dim].

    Half the features are sin(t * f_k), half cos(t * f_k), with frequencies f_k spaced
    geometrically from 1 down to 1/theta (Vaswani et al. section 3.5; Ho et al. appendix B).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(theta) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=1)
    return emb


class TimestepEmbedding(nn.Module):
    """t [B] -> [B, out_dim]: sinusoidal features followed by a two-layer MLP."""

    def __init__(self, dim: int, out_dim: int, theta: float = 10000.0):
        super().__init__()
        self.dim, self.theta = dim, theta
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.dim, self.theta))


class LabelEmbedding(nn.Module):
    """Class labels [B] -> [B, out_dim], with one extra learned row for "no label".

    Index ``num_classes`` is the null label used for unconditional predictions; classifier-free
    guidance (Ho & Salimans 2022) trains it by dropping labels and samples with it.
    """

    def __init__(self, num_classes: int, out_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, out_dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding(labels)
