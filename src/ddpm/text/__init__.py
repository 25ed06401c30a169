"""Text conditioning: captions, text encoders and the cache of the training captions' embeddings.

- :mod:`.base`: :class:`TextBatch` (what the Unet takes) and the :class:`TextEncoder` interface;
- :mod:`.minilm`: all-MiniLM-L6-v2, frozen (the ``[text]`` extra and its weights package);
- :mod:`.builtin`: a word tokenizer and a small transformer trained with the Unet;
- :mod:`.captions`, :mod:`.label_captions`: captions from image folders and from class labels;
- :mod:`.cache`: the training captions encoded once, in the run directory.
"""

from __future__ import annotations

from typing import Sequence

from ..config import register_choices
from ..errors import ConfigError
from .base import TextBatch, TextEncoder, check_prompts, clean_caption
from .builtin import BuiltinTextEncoder, WordTokenizer, build_vocab
from .minilm import DIM as MINILM_DIM

TEXT_ENCODERS = ("minilm", "builtin")
register_choices("text_encoder", TEXT_ENCODERS)


def check_encoder_name(name: str) -> str:
    if name not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    return name


def text_width(name: str, builtin_dim: int) -> int:
    """The width D of the embeddings that encoder ``name`` gives the Unet."""
    return MINILM_DIM if check_encoder_name(name) == "minilm" else builtin_dim


def make_text_encoder(name: str, *, max_tokens: int, vocab: Sequence[str] = (), builtin_dim: int = 128,
                      device: str = "cpu") -> TextEncoder:
    """The frozen part of encoder ``name``: MiniLM (loads its weights), or the built-in word tokenizer."""
    if check_encoder_name(name) == "minilm":
        from .minilm import MiniLMEncoder

        return MiniLMEncoder(max_tokens=max_tokens, device=device)
    return WordTokenizer(vocab, max_tokens, builtin_dim)


__all__ = ["BuiltinTextEncoder", "MINILM_DIM", "TEXT_ENCODERS", "TextBatch", "TextEncoder", "WordTokenizer",
           "build_vocab", "check_encoder_name", "check_prompts", "clean_caption", "make_text_encoder", "text_width"]
