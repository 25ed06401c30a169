"""What a text-conditional run needs before its first step: the captions of its images (those
without one are left out), the builtin encoder's vocabulary, and the captions' embeddings,
computed once and kept in the run directory (see :mod:`ddpm.text.cache`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..config import RunConfig
from ..data import ImageDataset
from ..errors import DataError
from ..text import build_vocab, make_text_encoder
from ..text.builtin import words
from ..text.base import TextBatch
from ..text.cache import CACHE_FILE, CaptionEmbeddings, cached_caption_embeddings
from ..text.captions import CaptionSet, dataset_captions, drop_long_captions
from ..text.label_captions import label_phrasings
from .distributed import Distributed
from ..runs.validate import validate_text_settings

GRID_PROMPTS = 8  # folder runs: the sample grids show this many of the captions


def _token_counter(config: RunConfig) -> Callable[[list[str]], list[int]]:
    m = config.model
    if m.text_encoder == "minilm":  # the tokenizer alone: the network is not needed to count
        from ..text.minilm import minilm_tokenizer

        tok = minilm_tokenizer()
        return lambda texts: [len(e.ids) for e in tok.encode_batch(list(texts))]
    return lambda texts: [len(words(t)) for t in texts]


def resolve_captions(config: RunConfig, data: ImageDataset, log: Callable[[str], None]) -> tuple[ImageDataset, CaptionSet, RunConfig]:
    """The images that have a usable caption, their CaptionSet, and the config with the builtin
    encoder's vocabulary filled in."""
    validate_text_settings(config)  # before the captions are read and counted with those settings
    captions, keep = dataset_captions(config.data.dataset, data, log)
    if not bool(keep.all()):
        data = data.subset(keep)
    captions, keep = drop_long_captions(captions, _token_counter(config), config.model.text_max_tokens, log)
    if not bool(keep.all()):
        data = data.subset(keep)
    if len(data) == 0:  # pragma: no cover - drop_long_captions refuses first
        raise DataError(f"no image of {config.data.dataset} is left with a caption")
    vocab: tuple[str, ...] = ()
    if config.model.text_encoder == "builtin":
        vocab = build_vocab(captions.texts)
    return data, captions, replace(config, data=replace(config.data, text_vocab=vocab))


def grid_prompts(config: RunConfig, data: ImageDataset, captions: CaptionSet) -> list[str]:
    """The prompts of the sample grids drawn during training: each class's first phrasing
    (label-derived captions), else the first few distinct captions."""
    if config.data.dataset.startswith("folder:"):
        return captions.texts[:GRID_PROMPTS]
    return [p[0] for p in label_phrasings(config.data.dataset, data.class_names, int(data.num_classes))]


def caption_embeddings(config: RunConfig, captions: CaptionSet, run_dir: Path, dist: Distributed, device: torch.device,
                       log: Callable[[str], None]) -> CaptionEmbeddings:
    """The embeddings of the run's distinct captions from ``RUN/caption_embeddings.safetensors``:
    rank 0 encodes and writes them when the file is missing, the other ranks then read it."""
    m = config.model

    def make():
        return make_text_encoder(m.text_encoder, max_tokens=m.text_max_tokens, vocab=config.data.text_vocab,
                                 builtin_dim=m.builtin_text_dim, device=str(device) if m.text_encoder == "minilm" else "cpu")

    path = run_dir / CACHE_FILE
    cache = cached_caption_embeddings(path, captions.texts, make, log) if dist.is_main else None
    if dist.enabled:
        dist.barrier()
        if cache is None:
            cache = cached_caption_embeddings(path, captions.texts, make, lambda msg: None)
    return cache


class CaptionBatches:
    """The captions of a batch as the network takes them: each image's caption chosen by ``u``."""

    def __init__(self, captions: CaptionSet, embeddings: CaptionEmbeddings):
        self.captions, self.embeddings = captions, embeddings

    def __call__(self, indices: Tensor, u: Tensor) -> TextBatch:
        return self.embeddings.batch(self.captions.pick(indices, u.cpu()))


__all__ = ["CaptionBatches", "caption_embeddings", "grid_prompts", "resolve_captions"]
