"""The UNet's building blocks: residual blocks, self-attention, down- and up-sampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import register_choices
from ..errors import ConfigError


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ConfigError(
            f"GroupNorm needs channel counts divisible by resnet_block_groups={groups}; "
            f"a layer has {channels} channels (choose dim and dim_mults so every level is a multiple of {groups})"
        )
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity (improved-diffusion)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """x [B, in, H, W], emb [B, E] -> [B, out, H, W].

    GroupNorm, SiLU, 3x3 conv; then the time (and label) embedding modulates the second
    normalisation as h * (1 + scale) + shift (the scale-shift norm of Dhariwal & Nichol); SiLU,
    dropout and a zero-initialised 3x3 conv complete the residual branch.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


ATTENTION_IMPLS = ("auto", "sdpa", "math")
register_choices("attn_impl", ATTENTION_IMPLS)

CPU_MATH_ATTENTION_MAX_TOKENS = 512
"""On a CPU with bf16/fp16 activations, sequences up to this many positions use two plain
matrix products: PyTorch's fused CPU kernel took 1.5-3.5x longer from 16 to 256 positions
(forward + backward; benchmarks/README.md) and was still no faster at 1024. Longer sequences keep
the fused kernel for its memory: the plain products hold all N x N attention weights at once."""


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, [B, C, H, W] -> same, residual.

    softmax(q k^T / sqrt(d)) v (Vaswani et al. eq. 1). ``impl`` picks how: ``sdpa`` calls
    ``F.scaled_dot_product_attention`` (fused flash or memory-efficient kernels where the device
    has them), ``math`` writes the two matrix products out, and ``auto`` (the default) takes
    ``sdpa`` except for short bf16/fp16 sequences on a CPU, where ``math`` is faster.
    """

    def __init__(self, channels: int, *, heads: int = 4, dim_head: int = 32, groups: int = 8, impl: str = "auto"):
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ConfigError(f"unknown attention implementation {impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
        self.heads, self.dim_head, self.impl = heads, dim_head, impl
        inner = heads * dim_head
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.out = zero_init(nn.Conv2d(inner, channels, 1))

    def use_sdpa(self, qkv: Tensor) -> bool:
        if self.impl != "auto":
            return self.impl == "sdpa"
        low_precision = qkv.dtype in (torch.bfloat16, torch.float16)
        return qkv.device.type != "cpu" or not low_precision or qkv.shape[-1] > CPU_MATH_ATTENTION_MAX_TOKENS

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, self.dim_head, h * w)  # [B, 3, heads, d, N]
        if self.use_sdpa(qkv):
            # [B, heads, N, d] with unit stride in d: the fused kernels (CPU flash, CUDA flash and
            # memory-efficient) need it; strided inputs fall back to the slower math kernel
            q, k, v = qkv.transpose(-1, -2).contiguous().unbind(1)
            out = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2)
        else:
            q, k, v = qkv.unbind(1)
            weights = torch.einsum("bhdi,bhdj->bhij", q * self.dim_head**-0.5, k).softmax(dim=-1)
            out = torch.einsum("bhij,bhdj->bhdi", weights, v)
        return x + self.out(out.reshape(b, self.heads * self.dim_head, h, w))


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv: [B, C, H, W] -> [B, out, H/2, W/2]."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour) then a 3x3 conv: [B, C, H, W] -> [B, out, 2H, 2W]."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def run_block(block: nn.Module, x: Tensor, emb: Tensor) -> Tensor:
    """Call a ResBlock with the embedding, any other block without it."""
    return block(x, emb) if isinstance(block, ResBlock) else block(x)


__all__ = ["ATTENTION_IMPLS", "Attention", "CPU_MATH_ATTENTION_MAX_TOKENS", "Downsample", "ResBlock", "Upsample", "group_norm", "run_block", "zero_init"]
