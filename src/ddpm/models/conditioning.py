"""Text conditioning of the Unet: projections of the encoder's outputs, a learned null caption,
and cross-attention from image positions to the caption's tokens.

As in GLIDE (Nichol et al. 2022, section 2.3) and Imagen (Saharia et al. 2022, section 2.2): the
pooled text vector is projected and added to the timestep embedding, so every residual block
sees it through its scale-shift norm, and the token embeddings are projected to a context that
attention layers at the low resolutions attend to. Rows marked ``drop`` take a learned null
embedding instead (one null context token and a null pooled vector): caption dropout trains it,
classifier-free guidance samples with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..text.base import TextBatch
from .layers import group_norm, zero_init


@dataclass
class Context:
    """What cross-attention attends to: tokens [B, L, context_dim] and mask [B, L] (True = real)."""

    tokens: Tensor
    mask: Tensor


class TextConditioning(nn.Module):
    """A TextBatch (float, [B, L, text_dim]) -> (an addition to the time embedding [B, emb_dim],
    the cross-attention Context [B, L, context_dim]); ``text=None`` means every row dropped."""

    def __init__(self, text_dim: int, emb_dim: int, context_dim: int):
        super().__init__()
        self.text_dim = text_dim
        self.token_norm = nn.LayerNorm(text_dim)
        self.token_proj = nn.Linear(text_dim, context_dim)
        self.pooled_proj = nn.Sequential(nn.Linear(text_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.null_token = nn.Parameter(torch.randn(context_dim) * 0.02)
        self.null_pooled = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, text: TextBatch | None, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Context]:
        if text is None:  # unconditional: the null caption for every row
            null = self.null_token.to(dtype).expand(batch, 1, -1)
            return self.null_pooled.to(dtype).expand(batch, -1), Context(null, torch.ones(batch, 1, dtype=torch.bool, device=device))
        if text.tokens.shape[-1] != self.text_dim or text.pooled is None:
            raise ConfigError(f"text embeddings of width {text.tokens.shape[-1]} given to a Unet built for text_dim={self.text_dim}")
        tokens = self.token_proj(self.token_norm(text.tokens))
        pooled = self.pooled_proj(text.pooled)
        mask = text.mask
        if text.drop is not None:
            drop = text.drop.to(device)
            pooled = torch.where(drop[:, None], self.null_pooled.to(pooled.dtype), pooled)
            # a dropped row attends to the null token alone (position 0; the others masked out)
            first = torch.zeros_like(mask)
            first[:, 0] = True
            tokens = torch.where(drop[:, None, None], self.null_token.to(tokens.dtype), tokens)
            # (a boolean select written with & and |: onnxruntime has no Where for booleans)
            mask = (first & drop[:, None]) | (mask & ~drop[:, None])
        return pooled, Context(tokens, mask)


class CrossAttention(nn.Module):
    """Image positions attend to the context tokens, [B, C, H, W] -> same, residual.

    q from the normalised feature map, k and v from the context; softmax(q k^T / sqrt(d)) v over
    the unmasked tokens (Vaswani et al. eq. 1), projected back by a zero-initialised 1x1 conv so
    that the block starts as the identity.
    """

    def __init__(self, channels: int, context_dim: int, *, heads: int = 4, dim_head: int = 32, groups: int = 8):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, inner, 1, bias=False)
        self.kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.out = zero_init(nn.Conv2d(inner, channels, 1))

    def forward(self, x: Tensor, context: Context) -> Tensor:
        b, _, h, w = x.shape
        q = self.q(self.norm(x)).reshape(b, self.heads, self.dim_head, h * w).transpose(-1, -2)  # [B, heads, N, d]
        kv = self.kv(context.tokens.to(q.dtype))  # [B, L, 2 * inner]
        k, v = kv.reshape(b, -1, 2, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)  # each [B, heads, L, d]
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous(),
                                             attn_mask=context.mask[:, None, None, :])
        return x + self.out(out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w))


__all__ = ["Context", "CrossAttention", "TextConditioning"]
