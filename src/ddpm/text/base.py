"""What a text encoder is to the rest of the library: prompts in, a :class:`TextBatch` out.

Any object with ``name``, ``dim``, ``max_tokens``, ``count_tokens(prompts)`` and
``encode(prompts)`` is a text encoder (:class:`TextEncoder` spells it out). To condition on CLIP
or T5 from your own environment, wrap it in such a class (tokens = its last hidden states,
mask = its attention mask, pooled = its sentence vector), build the ``Unet`` with
``text_dim=encoder.dim`` and hand the encoder to ``GaussianDiffusion(..., text_encoder=...)``.

Encoders are frozen: none is an ``nn.Module`` of the diffusion model, so ``diffusion.parameters()``
never reaches them. The built-in encoder is the exception by design: its words are tokenized
here, but the embedding of the tokens is a module inside the Unet, trained with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError


@dataclass
class TextBatch:
    """Encoded prompts, one row per image.

    tokens: [B, L, D] float token embeddings, or [B, L] int64 token ids when the Unet embeds the
        tokens itself (the built-in encoder, trained jointly).
    mask: [B, L] bool, True at real tokens (every row has at least one).
    pooled: [B, D] float sentence vector, or None with token ids.
    drop: [B] bool or None: rows that take the learned null embedding instead (caption dropout
        during training, the unconditional half of classifier-free guidance).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor | None = None
    drop: Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def is_ids(self) -> bool:
        return not self.tokens.is_floating_point()

    def to(self, device: torch.device | str) -> "TextBatch":
        move = lambda v: None if v is None else v.to(device, non_blocking=True)  # noqa: E731
        return TextBatch(move(self.tokens), move(self.mask), move(self.pooled), move(self.drop))

    def with_drop(self, drop: Tensor | None) -> "TextBatch":
        return TextBatch(self.tokens, self.mask, self.pooled, drop)

    def select(self, index: Tensor | slice) -> "TextBatch":
        pick = lambda v: None if v is None else v[index]  # noqa: E731
        return TextBatch(pick(self.tokens), pick(self.mask), pick(self.pooled), pick(self.drop))

    @staticmethod
    def cat(parts: Sequence["TextBatch"]) -> "TextBatch":
        """Rows of several batches, padded to the longest token length."""
        length = max(p.tokens.shape[1] for p in parts)

        def pad(v: Tensor) -> Tensor:
            extra = length - v.shape[1]
            if extra == 0:
                return v
            shape = (v.shape[0], extra) + tuple(v.shape[2:])
            return torch.cat([v, v.new_zeros(shape)], dim=1)

        drops = [p.drop if p.drop is not None else torch.zeros(len(p), dtype=torch.bool, device=p.mask.device) for p in parts]
        pooled = None if any(p.pooled is None for p in parts) else torch.cat([p.pooled for p in parts])
        any_drop = any(p.drop is not None for p in parts)
        return TextBatch(torch.cat([pad(p.tokens) for p in parts]), torch.cat([pad(p.mask) for p in parts]), pooled,
                         torch.cat(drops) if any_drop else None)


class TextEncoder(Protocol):
    """The interface every text encoder offers (a structural type: no base class needed)."""

    name: str  # recorded in runs and caches, e.g. "minilm"
    dim: int  # D, the width of the token embeddings and of the pooled vector
    max_tokens: int  # the longest prompt it takes, in its own tokens (special tokens included)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """The number of tokens of each prompt, without truncation."""
        ...

    def encode(self, prompts: Sequence[str]) -> TextBatch:
        """Prompts (each checked by :func:`check_prompts`) -> a TextBatch on the CPU."""
        ...


def clean_caption(text: str) -> str:
    """A caption as the library stores it: surrounding space stripped, inner runs of white space
    (line breaks included) made one space."""
    return " ".join(text.split())


def check_prompts(prompts: Sequence[str] | str, encoder: TextEncoder) -> list[str]:
    """Prompts as a list of cleaned strings; a ConfigError for an empty or over-long one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise ConfigError(f"a prompt must be a string; got {type(p).__name__} {p!r}")
        c = clean_caption(p)
        if not c:
            raise ConfigError(f"prompt {p!r} is empty; give some words")
        out.append(c)
    if not out:
        raise ConfigError("no prompts were given; give at least one")
    for p, n in zip(out, encoder.count_tokens(out)):
        if n > encoder.max_tokens:
            raise ConfigError(
                f"prompt {p[:60]!r}{'...' if len(p) > 60 else ''} has {n} tokens, more than the {encoder.max_tokens} "
                f"the {encoder.name} text encoder of this model takes; shorten it"
            )
    return out


__all__ = ["TextBatch", "TextEncoder", "check_prompts", "clean_caption"]
