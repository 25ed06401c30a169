"""The training captions, encoded once and kept in the run directory.

A frozen encoder gives every caption the same embeddings at every step, so the trainer encodes
the distinct captions once, before the first step, and writes them to
``RUN/caption_embeddings.safetensors`` (token embeddings and pooled vectors in float16, half the
memory of float32 at a relative rounding of ~5e-4, far below what the network resolves; the
mask; the captions and the encoder's name in the header). A resumed run reads that file back
instead of encoding again, so it sees exactly the numbers the first part of the run saw (a fresh
encoding could differ in the last bits with another thread count), and needs no encoder at all.
For the built-in encoder the file holds the token ids.

A :class:`CaptionEmbeddings` is also a text encoder for its own captions, which is how the sample
grids drawn during training get their prompts without loading the encoder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write
from .base import TextBatch, TextEncoder, clean_caption

CACHE_FILE = "caption_embeddings.safetensors"
FORMAT = "torch-ddpm caption embeddings"
FORMAT_VERSION = 1


@dataclass
class CaptionEmbeddings:
    """texts [U]; tokens [U, L, D] float16 or ids [U, L] int64; mask [U, L] bool; pooled [U, D]
    float16 or None; what encoded them (``name``, ``dim``, ``max_tokens``)."""

    texts: list[str]
    tokens: Tensor
    mask: Tensor
    pooled: Tensor | None
    name: str
    dim: int
    max_tokens: int

    def __post_init__(self) -> None:
        self._index = {t: i for i, t in enumerate(self.texts)}

    def batch(self, indices: Tensor) -> TextBatch:
        """The captions ``indices`` [B] as a TextBatch (float32 embeddings), trimmed to their longest."""
        mask = self.mask[indices]
        length = max(int(mask.sum(1).max()), 1) if len(indices) else 1
        tokens = self.tokens[indices, :length]
        return TextBatch(tokens.float() if tokens.is_floating_point() else tokens, mask[:, :length],
                         self.pooled[indices].float() if self.pooled is not None else None)

    # the TextEncoder interface, for these captions only
    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [int(self.mask[self._lookup(p)].sum()) for p in prompts]

    def encode(self, prompts: Sequence[str]) -> TextBatch:
        return self.batch(torch.tensor([self._lookup(p) for p in prompts], dtype=torch.long))

    def _lookup(self, prompt: str) -> int:
        i = self._index.get(clean_caption(prompt))
        if i is None:
            raise ConfigError(f"prompt {prompt!r} is not one of the run's training captions, the only ones encoded here")
        return i


def captions_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def encode_captions(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 256,
                    log: Callable[[str], None] = print) -> CaptionEmbeddings:
    """Encode ``texts`` in batches into one padded table (float16 embeddings)."""
    texts = list(texts)
    parts = []
    for start in range(0, len(texts), batch_size):
        parts.append(encoder.encode(texts[start : start + batch_size]))
        if len(texts) > batch_size:
            log(f"  encoded {min(start + batch_size, len(texts))}/{len(texts)} captions")
    b = TextBatch.cat(parts)
    tokens = b.tokens.half() if b.tokens.is_floating_point() else b.tokens
    pooled = b.pooled.half() if b.pooled is not None else None
    return CaptionEmbeddings(texts, tokens, b.mask, pooled, encoder.name, encoder.dim, encoder.max_tokens)


def save_caption_embeddings(cache: CaptionEmbeddings, path: str | Path) -> Path:
    tensors = {"tokens": cache.tokens.contiguous(), "mask": cache.mask.to(torch.uint8).contiguous()}
    if cache.pooled is not None:
        tensors["pooled"] = cache.pooled.contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "encoder": cache.name, "dim": str(cache.dim),
            "max_tokens": str(cache.max_tokens), "captions": json.dumps(cache.texts, ensure_ascii=False),
            "captions_sha256": captions_digest(cache.texts)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_caption_embeddings(path: str | Path) -> CaptionEmbeddings:
    """Read a cache written by :func:`save_caption_embeddings` (safetensors and JSON only)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not a torch-ddpm caption cache")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        texts = json.loads(meta["captions"])
        dim, max_tokens = int(meta["dim"]), int(meta["max_tokens"])
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged file: one sentence
        raise CheckpointError(f"cannot read the caption cache {path} ({type(err).__name__}: {err})") from None
    if not (isinstance(texts, list) and len(texts) == tensors["tokens"].shape[0] == tensors["mask"].shape[0]):
        raise CheckpointError(f"the caption cache {path} does not hold one row per caption")
    return CaptionEmbeddings(texts, tensors["tokens"], tensors["mask"].bool(), tensors.get("pooled"), meta["encoder"],
                             dim, max_tokens)


def cached_caption_embeddings(path: str | Path, texts: Sequence[str], make_encoder: Callable[[], TextEncoder],
                              log: Callable[[str], None] = print) -> CaptionEmbeddings:
    """The embeddings of ``texts``: read from ``path`` if it exists (it must hold exactly these
    captions), else encoded with ``make_encoder()`` and written there."""
    path = Path(path)
    if path.exists():
        cache = load_caption_embeddings(path)
        if cache.texts != list(texts):
            raise CheckpointError(
                f"the captions recorded in {path} ({len(cache.texts)}) are not the data set's ({len(texts)}): the "
                "captions changed since the run started; resume needs the same captions (or start a new run)"
            )
        log(f"read the embeddings of {len(texts)} captions from {path}")
        return cache
    encoder = make_encoder()
    log(f"encoding {len(texts)} distinct captions with the {encoder.name} text encoder (once; kept in {path})")
    cache = encode_captions(encoder, texts, log=log)
    save_caption_embeddings(cache, path)
    return load_caption_embeddings(path)  # what a resumed run will read, bit for bit


__all__ = ["CACHE_FILE", "CaptionEmbeddings", "cached_caption_embeddings", "captions_digest", "encode_captions",
           "load_caption_embeddings", "save_caption_embeddings"]
