"""The built-in text encoder: a word vocabulary and a small transformer trained with the Unet.

For closed-vocabulary captions (label-derived ones, a folder's short tags) it needs no extra
package. The vocabulary is the most frequent words of the training captions (recorded in the
run's config, ``text_vocab``); a word outside it reads as one unknown token. The tokenizer
(:class:`WordTokenizer`) is the frozen part and follows the :class:`~ddpm.text.base.TextEncoder`
interface, returning token ids; :class:`BuiltinTextEncoder` is an ``nn.Module`` inside the Unet
that turns the ids into token embeddings and a pooled vector, so it is trained, saved, averaged
(EMA) and resumed with the rest of the network.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import TextBatch, check_prompts

PAD, UNK = 0, 1  # ids 0 and 1; the vocabulary's words follow from 2
MAX_VOCAB = 5000
_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # runs of letters and digits; punctuation separates words


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocab(captions: Iterable[str], max_words: int = MAX_VOCAB) -> tuple[str, ...]:
    """The ``max_words`` most frequent words of ``captions`` (ties: alphabetical)."""
    counts = Counter(w for c in captions for w in words(c))
    return tuple(w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_words])


class WordTokenizer:
    """Prompts -> token ids [B, L] (the longest prompt's word count) and mask, for the built-in encoder."""

    name = "builtin"

    def __init__(self, vocab: Sequence[str], max_tokens: int, dim: int):
        if not vocab:
            raise ConfigError("the built-in text encoder needs a vocabulary (the words of the training captions); got none")
        self.vocab = tuple(vocab)
        self.index = {w: i + 2 for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens
        self.dim = dim

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(words(p)) for p in prompts]

    def unknown_words(self, prompts: Sequence[str]) -> list[str]:
        """Words of ``prompts`` outside the vocabulary, in order of appearance, each once."""
        return list(dict.fromkeys(w for p in prompts for w in words(p) if w not in self.index))

    def encode(self, prompts: Sequence[str]) -> TextBatch:
        prompts = check_prompts(prompts, self)
        rows = [[self.index.get(w, UNK) for w in words(p)] for p in prompts]
        empty = [p for p, r in zip(prompts, rows) if not r]
        if empty:
            raise ConfigError(f"prompt {empty[0]!r} has no words (letters or digits) for the built-in text encoder")
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        return TextBatch(ids, ids != PAD)


class _Block(nn.Module):
    """A pre-norm transformer layer: x [B, L, D] -> [B, L, D], attending to unmasked keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + self.out(a.transpose(1, 2).reshape(b, n, d))
        return x + self.ff(self.norm2(x))


class BuiltinTextEncoder(nn.Module):
    """Token ids [B, L] and mask -> a float TextBatch (tokens [B, L, dim], pooled [B, dim]).

    Word and position embeddings, ``layers`` pre-norm transformer layers, a final LayerNorm; the
    pooled vector is the mean over the real tokens.
    """

    def __init__(self, vocab_size: int, dim: int = 128, layers: int = 2, heads: int = 4, max_tokens: int = 77):
        super().__init__()
        if dim < 1 or dim % heads or layers < 0 or vocab_size < 1 or max_tokens < 1:
            raise ConfigError(
                f"the built-in text encoder needs a width divisible by its {heads} heads, layers >= 0 and a vocabulary; "
                f"got width {dim}, {layers} layers, {vocab_size} words"
            )
        self.dim, self.max_tokens = dim, max_tokens
        self.word = nn.Embedding(vocab_size + 2, dim)
        self.position = nn.Embedding(max_tokens, dim)
        nn.init.normal_(self.word.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, text: TextBatch) -> TextBatch:
        ids, mask = text.tokens, text.mask
        if ids.shape[1] > self.max_tokens:
            raise ConfigError(f"{ids.shape[1]} tokens given to a built-in text encoder that takes {self.max_tokens}")
        x = self.word(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))[None]
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x) * mask[..., None]
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return TextBatch(x, mask, pooled, text.drop)


__all__ = ["BuiltinTextEncoder", "MAX_VOCAB", "WordTokenizer", "build_vocab", "words"]
