"""The training captions' embeddings: computed once, kept in the run directory, read back exactly."""

import pytest
import torch

from ddpm.errors import CheckpointError, ConfigError
from ddpm.text.base import TextBatch
from ddpm.text.builtin import WordTokenizer
from ddpm.text.cache import cached_caption_embeddings, encode_captions, load_caption_embeddings, save_caption_embeddings


class CountingEncoder:
    """A frozen 'encoder' whose embeddings are a closed form of the text; counts its calls."""

    name, dim, max_tokens = "counting", 3, 10

    def __init__(self):
        self.calls = 0

    def count_tokens(self, prompts):
        return [len(p.split()) + 2 for p in prompts]

    def encode(self, prompts):
        self.calls += 1
        n = max(self.count_tokens(prompts))
        tokens = torch.zeros(len(prompts), n, 3)
        mask = torch.zeros(len(prompts), n, dtype=torch.bool)
        for i, p in enumerate(prompts):
            k = self.count_tokens([p])[0]
            tokens[i, :k] = torch.arange(k)[:, None] * 0.1 + torch.tensor([len(p), 1.0, -0.5])
            mask[i, :k] = True
        return TextBatch(tokens, mask, tokens.sum(1) / mask.sum(1, keepdim=True))


def test_encoded_once_then_read_back(tmp_path):
    texts = ["a cat", "a big red dog", "x"]
    enc = CountingEncoder()
    path = tmp_path / "run" / "caption_embeddings.safetensors"
    first = cached_caption_embeddings(path, texts, lambda: enc, log=lambda m: None)
    assert enc.calls == 1 and path.is_file()
    lines = []
    again = cached_caption_embeddings(path, texts, lambda: pytest.fail("the encoder must not be built again"), log=lines.append)
    assert lines == [f"read the embeddings of 3 captions from {path}"]
    for a, b in ((first.tokens, again.tokens), (first.mask, again.mask), (first.pooled, again.pooled)):
        assert torch.equal(a, b)
    # what the trainer gets: float32 rows, trimmed to the batch's longest caption, equal to the encoder's to fp16 rounding
    rows = again.batch(torch.tensor([2, 0]))
    direct = enc.encode(["x", "a cat"])
    assert rows.tokens.dtype == torch.float32 and rows.tokens.shape == (2, 4, 3) and torch.equal(rows.mask, direct.mask)
    torch.testing.assert_close(rows.tokens, direct.tokens, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(rows.pooled, direct.pooled, rtol=1e-3, atol=1e-3)
    # it is a text encoder for its own captions
    assert torch.equal(again.encode([" a  cat "]).tokens, again.batch(torch.tensor([0])).tokens)
    assert again.count_tokens(["a big red dog"]) == [6]
    with pytest.raises(ConfigError, match="'a bird' is not one of the run's training captions"):
        again.encode(["a bird"])


def test_other_captions_are_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    cached_caption_embeddings(path, ["a", "b"], CountingEncoder, log=lambda m: None)
    with pytest.raises(CheckpointError, match=r"the captions recorded in .* \(2\) are not the data set's \(3\)"):
        cached_caption_embeddings(path, ["a", "b", "c"], CountingEncoder, log=lambda m: None)


def test_token_ids_round_trip(tmp_path):
    tok = WordTokenizer(["cat", "dog"], 8, 16)
    cache = encode_captions(tok, ["a cat", "dog dog dog"], log=lambda m: None)
    save_caption_embeddings(cache, tmp_path / "ids.safetensors")
    back = load_caption_embeddings(tmp_path / "ids.safetensors")
    assert back.pooled is None and back.tokens.dtype == torch.int64
    assert back.tokens.tolist() == [[1, 2, 0], [3, 3, 3]] and back.name == "builtin" and back.dim == 16


def test_foreign_and_damaged_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something else"})
    with pytest.raises(CheckpointError, match="is not a torch-ddpm caption cache"):
        load_caption_embeddings(tmp_path / "other.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="cannot read the caption cache"):
        load_caption_embeddings(tmp_path / "bad.safetensors")
