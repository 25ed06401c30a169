import math

import torch

from ddpm.models.embeddings import LabelEmbedding, TimestepEmbedding, sinusoidal_embedding


def test_sinusoidal_embedding_values():
    t = torch.tensor([0.0, 3.0])
    emb = sinusoidal_embedding(t, 8)
    assert emb.shape == (2, 8)
    freqs = [math.exp(-math.log(10000) * k / 4) for k in range(4)]
    expected = [math.sin(3 * f) for f in freqs] + [math.cos(3 * f) for f in freqs]
    torch.testing.assert_close(emb[1], torch.tensor(expected))
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert sinusoidal_embedding(t, 7).shape == (2, 7)


def test_embeddings_shapes_and_null_label():
    assert TimestepEmbedding(16, 64)(torch.tensor([1, 2, 3])).shape == (3, 64)
    labels = LabelEmbedding(10, 32)
    assert labels.null_label == 10
    assert labels(torch.tensor([0, 10])).shape == (2, 32)
