"""The noise-prediction network: a UNet with residual blocks, self-attention and skip connections."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from ..text.base import TextBatch
from .conditioning import Context, CrossAttention, TextConditioning
from .embeddings import LabelEmbedding, TimestepEmbedding
from .layers import Attention, Downsample, ResBlock, Upsample, group_norm, run_block, zero_init


class EmbedSequential(nn.ModuleList):
    """Blocks applied in order; residual blocks also receive the conditioning embedding, and
    cross-attention blocks the text context."""

    def forward(self, x: Tensor, emb: Tensor, context: Context | None = None) -> Tensor:
        for block in self:
            x = block(x, context) if isinstance(block, CrossAttention) else run_block(block, x, emb)
        return x


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """An ``image_size`` given as an int (square) or a (height, width) pair, as (height, width)."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = (image_size[0], image_size[1])
    else:
        raise ConfigError(f"image_size must be an int or a (height, width) pair; got {image_size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ConfigError(f"image_size must hold positive integers; got {image_size!r}")
    return hw


class Level(nn.Module):
    """One resolution of the UNet: residual blocks, then a transition to the next level."""

    def __init__(self, blocks: list[EmbedSequential], transition: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.transition = transition


class Unet(nn.Module):
    """eps_theta(x_t, t[, y]): [B, channels, H, W], [B] -> [B, out_dim, H, W].

    The names follow lucidrains' denoising-diffusion-pytorch, so ``Unet(dim=64, dim_mults=(1, 2,
    4, 8))`` builds the familiar network with the same widths (35,966,019 parameters for 3 channels;
    lucidrains' has 35.71M).

    With widths ``dims = [init_dim, dim * dim_mults[0], dim * dim_mults[1], ...]``, level ``i``
    works at resolution (H, W) / 2**i with ``dims[i]`` channels: ``num_res_blocks`` residual
    blocks on the way down, each leaving a skip connection, then a stride-2 conv to
    ``dims[i + 1]`` channels (the lowest level keeps its resolution). The middle works at
    ``dims[-1]``; the way up mirrors the way down, each block taking one skip connection.
    Self-attention runs at the levels where ``full_attn`` is true (default: the lowest
    resolution) and always in the middle.

    Args:
        channels: image channels (1 for MNIST, 3 for colour).
        num_classes: adds a label embedding with a reserved null label for classifier-free
            guidance; ``forward(x, t, classes=None)`` then means "unconditional".
        learned_variance: doubles the output channels (prediction, variance interpolation).
        flash_attn: accepted for compatibility; ``attn_impl`` decides.
        attn_impl: ``auto`` (default), ``sdpa`` or ``math``; see :class:`~ddpm.models.layers.Attention`.
        grad_checkpoint: recompute activations in the backward pass to save memory.
        text_dim: width D of the text encoder's token embeddings and pooled vector: adds text
            conditioning (see :mod:`ddpm.models.conditioning`): the pooled vector joins the time
            embedding, and a cross-attention block follows every self-attention block (the
            levels of ``full_attn`` and the middle). ``forward(x, t, text=TextBatch)``; ``text=None``
            means "unconditional" (the learned null caption).
        text_encoder: a module trained with the Unet that turns token ids into embeddings of
            width ``text_dim`` (:class:`ddpm.text.builtin.BuiltinTextEncoder`); None for a frozen
            encoder whose embeddings are given to ``forward``.
    """

    def __init__(
        self,
        dim: int = 64,
        init_dim: int | None = None,
        out_dim: int | None = None,
        dim_mults: Sequence[int] = (1, 2, 4, 8),
        channels: int = 3,
        *,
        num_res_blocks: int = 2,
        full_attn: Sequence[bool] | None = None,
        attn_heads: int = 4,
        attn_dim_head: int = 32,
        dropout: float = 0.0,
        num_classes: int | None = None,
        learned_variance: bool = False,
        resnet_block_groups: int = 8,
        sinusoidal_pos_emb_theta: float = 10000.0,
        flash_attn: bool = False,
        grad_checkpoint: bool = False,
        attn_impl: str = "auto",
        text_dim: int | None = None,
        text_encoder: nn.Module | None = None,
    ):
        super().__init__()
        dim_mults = tuple(dim_mults)
        # the arguments as given, so that ddpm.Trainer can write this network into a run's config
        self.init_args = dict(dim=dim, init_dim=init_dim, out_dim=out_dim, dim_mults=dim_mults, channels=channels,
                              num_res_blocks=num_res_blocks, full_attn=None if full_attn is None else tuple(full_attn),
                              attn_heads=attn_heads, attn_dim_head=attn_dim_head, dropout=dropout, num_classes=num_classes,
                              learned_variance=learned_variance, resnet_block_groups=resnet_block_groups,
                              sinusoidal_pos_emb_theta=sinusoidal_pos_emb_theta, flash_attn=flash_attn,
                              grad_checkpoint=grad_checkpoint, attn_impl=attn_impl)
        if dim < 1 or channels < 1 or not dim_mults or min(dim_mults) < 1 or num_res_blocks < 1:
            raise ConfigError(
                f"Unet needs dim >= 1, channels >= 1, num_res_blocks >= 1 and positive dim_mults; "
                f"got dim={dim}, channels={channels}, num_res_blocks={num_res_blocks}, dim_mults={dim_mults}"
            )
        levels = len(dim_mults)
        full_attn = tuple(full_attn) if full_attn is not None else (False,) * (levels - 1) + (True,)
        if len(full_attn) != levels:
            raise ConfigError(f"full_attn needs one entry per level ({levels}); got {len(full_attn)}")
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer or None; got {num_classes}")

        self.channels = channels
        self.learned_variance = learned_variance
        self.out_dim = out_dim if out_dim is not None else channels * (2 if learned_variance else 1)
        self.num_classes = num_classes
        self.downsample_factor = 2 ** (levels - 1)
        self.grad_checkpoint = grad_checkpoint
        self.self_condition = False  # lucidrains' attribute; self-conditioning is not implemented
        if text_dim is not None and text_dim < 1:
            raise ConfigError(f"text_dim must be a positive integer or None; got {text_dim}")
        if text_encoder is not None and text_dim is None:
            raise ConfigError("a text_encoder needs text_dim, the width of its embeddings")
        self.text_dim = text_dim
        init_dim = init_dim or dim
        emb_dim = 4 * dim
        g = resnet_block_groups

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout=dropout, groups=g)

        def attn(ch: int) -> list[nn.Module]:
            blocks: list[nn.Module] = [Attention(ch, heads=attn_heads, dim_head=attn_dim_head, groups=g, impl=attn_impl)]
            if text_dim is not None:  # attend to the caption where the image attends to itself
                blocks.append(CrossAttention(ch, context_dim, heads=attn_heads, dim_head=attn_dim_head, groups=g))
            return blocks

        self.time_embed = TimestepEmbedding(dim, emb_dim, sinusoidal_pos_emb_theta)
        self.label_embed = LabelEmbedding(num_classes, emb_dim) if num_classes else None
        context_dim = attn_heads * attn_dim_head
        self.text_encoder = text_encoder
        self.text_cond = TextConditioning(text_dim, emb_dim, context_dim) if text_dim is not None else None
        self.init_conv = nn.Conv2d(channels, init_dim, 3, padding=1)

        # dims[i] is the width of level i; leaving level i changes it to dims[i + 1]. The same
        # arguments therefore give the same widths as lucidrains' Unet (36.0M parameters against its
        # 35.7M for dim=64, dim_mults=(1, 2, 4, 8)).
        dims = [init_dim] + [dim * m for m in dim_mults]
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in range(levels):
            c_in, c_out = dims[level], dims[level + 1]
            down = [EmbedSequential([res(c_in, c_in)] + (attn(c_in) if full_attn[level] else []))
                    for _ in range(num_res_blocks)]
            last = level == levels - 1
            self.downs.append(Level(down, nn.Conv2d(c_in, c_out, 3, padding=1) if last else Downsample(c_in, c_out)))
            up = [EmbedSequential([res(c_out + c_in, c_out)] + (attn(c_out) if full_attn[level] else []))
                  for _ in range(num_res_blocks)]
            first = level == 0
            self.ups.insert(0, Level(up, nn.Conv2d(c_out, c_in, 3, padding=1) if first else Upsample(c_out, c_in)))
        self.mid = EmbedSequential([res(dims[-1], dims[-1]), *attn(dims[-1]), res(dims[-1], dims[-1])])
        self.final = res(2 * init_dim, dim)  # also sees the first convolution's output
        self.out_norm = group_norm(dim, g)
        self.out_conv = zero_init(nn.Conv2d(dim, self.out_dim, 3, padding=1))

    def check_image_size(self, height: int, width: int) -> None:
        """Raise a ConfigError unless the down-sampling can halve (height, width) exactly."""
        f = self.downsample_factor
        if height % f or width % f:
            good = (max(f, round(height / f) * f), max(f, round(width / f) * f))
            n = f.bit_length() - 1
            raise ConfigError(
                f"image size {height}x{width} cannot be halved {n} time{'s' if n > 1 else ''} by this Unet "
                f"({f.bit_length()} levels in dim_mults); use a height and width divisible by {f}, "
                f"such as {good[0]}x{good[1]}, or fewer dim_mults"
            )

    def forward(self, x: Tensor, time: Tensor, classes: Tensor | None = None, text: TextBatch | None = None) -> Tensor:
        self.check_image_size(x.shape[-2], x.shape[-1])
        if time.ndim == 0:
            time = time.expand(x.shape[0])
        emb = self.time_embed(time)
        if self.label_embed is not None:
            if classes is None:
                classes = torch.full((x.shape[0],), self.label_embed.null_label, device=x.device)
            emb = emb + self.label_embed(classes.long())
        elif classes is not None:
            raise ConfigError("class labels were given to a Unet built without num_classes")
        context = None
        if self.text_cond is not None:
            if text is not None and self.text_encoder is not None:
                text = self.text_encoder(text)  # token ids -> embeddings, trained with the Unet
            pooled, context = self.text_cond(text, x.shape[0], x.device, emb.dtype)
            emb = emb + pooled
        elif text is not None:
            raise ConfigError("a prompt (text) was given to a Unet built without text_dim")

        h = self.init_conv(x)
        first = h
        skips = []
        for level in self.downs:
            for block in level.blocks:
                h = self._run(block, h, emb, context)
                skips.append(h)
            h = level.transition(h)
        h = self._run(self.mid, h, emb, context)
        for level in self.ups:
            for block in level.blocks:
                h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, context)
            h = level.transition(h)
        h = self.final(torch.cat([h, first], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))

    def _run(self, block: EmbedSequential, h: Tensor, emb: Tensor, context: Context | None = None) -> Tensor:
        if self.grad_checkpoint and self.training and h.requires_grad:
            return checkpoint(block, h, emb, context, use_reentrant=False)
        return block(h, emb, context)
