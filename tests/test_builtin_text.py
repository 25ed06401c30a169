import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.text.base import TextBatch, check_prompts
from ddpm.text.builtin import PAD, UNK, BuiltinTextEncoder, WordTokenizer, build_vocab, words


def test_vocabulary_and_tokens():
    assert words("A hand-written SEVEN, 7!") == ["a", "hand", "written", "seven", "7"]
    vocab = build_vocab(["a cat", "a dog", "the dog", "a  cat"], max_words=3)
    assert vocab == ("a", "cat", "dog")  # by frequency, ties alphabetical, cut at 3
    tok = WordTokenizer(vocab, max_tokens=4, dim=8)
    b = tok.encode(["a dog", "the  cat a dog"])
    assert b.tokens.tolist() == [[2, 4, PAD, PAD], [UNK, 3, 2, 4]] and b.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert tok.unknown_words(["the cat", "a bird", "the end"]) == ["the", "bird", "end"]
    with pytest.raises(ConfigError, match="has 5 tokens, more than the 4 the builtin text encoder"):
        tok.encode(["a a a a a"])
    with pytest.raises(ConfigError, match="prompt '!!!' has no words"):
        tok.encode(["!!!"])
    with pytest.raises(ConfigError, match="needs a vocabulary"):
        WordTokenizer((), 4, 8)


def test_check_prompts():
    tok = WordTokenizer(("a",), 8, 8)
    assert check_prompts(" a \n cat ", tok) == ["a cat"]
    for bad, message in (([], "no prompts were given"), ([3], "a prompt must be a string"), (["\t"], "is empty")):
        with pytest.raises(ConfigError, match=message):
            check_prompts(bad, tok)


def test_encoder_ignores_padding_and_pools_over_real_tokens():
    torch.manual_seed(0)
    enc = BuiltinTextEncoder(vocab_size=5, dim=16, layers=2, heads=4, max_tokens=6).eval()
    tok = WordTokenizer(("a", "b", "c", "d", "e"), 6, 16)
    alone = enc(tok.encode(["a b"]))
    both = enc(tok.encode(["a b", "c d e a b"]))
    torch.testing.assert_close(both.tokens[0, :2], alone.tokens[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(both.pooled[0], alone.pooled[0], atol=1e-6, rtol=0)
    assert not both.tokens[0, 2:].any()
    torch.testing.assert_close(both.pooled[1], both.tokens[1].mean(0), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="7 tokens given to a built-in text encoder that takes 6"):
        enc(TextBatch(torch.ones(1, 7, dtype=torch.long), torch.ones(1, 7, dtype=torch.bool)))
    with pytest.raises(ConfigError, match="width divisible by its 4 heads"):
        BuiltinTextEncoder(5, dim=10)


def test_textbatch_cat_pads_and_keeps_drop():
    a = TextBatch(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4))
    b = TextBatch(torch.full((1, 5, 4), 2.0), torch.ones(1, 5, dtype=torch.bool), torch.zeros(1, 4), torch.tensor([True]))
    c = TextBatch.cat([a, b])
    assert c.tokens.shape == (3, 5, 4) and c.mask.sum(1).tolist() == [3, 3, 5] and not c.tokens[:2, 3:].any()
    assert c.drop.tolist() == [False, False, True] and c.select(slice(1, 3)).pooled.tolist() == [[1.0] * 4, [0.0] * 4]
