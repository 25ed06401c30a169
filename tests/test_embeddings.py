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


def test_fractional_times_are_embedded_and_the_unet_takes_them():
    """Continuous time: sin/cos of a fractional t, and the Unet accepts a float time tensor (an
    integer-valued one gives the same output as the long tensor)."""
    from ddpm.models import Unet

    emb = sinusoidal_embedding(torch.tensor([2.5]), 4)
    freqs = [1.0, math.exp(-math.log(10000) / 2)]
    torch.testing.assert_close(emb[0], torch.tensor([math.sin(2.5 * f) for f in freqs] + [math.cos(2.5 * f) for f in freqs]))
    torch.manual_seed(0)
    net = Unet(dim=8, dim_mults=(1, 2), channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        whole = net.time_embed(torch.tensor([3, 700]))
        torch.testing.assert_close(net.time_embed(torch.tensor([3.0, 700.0])), whole)
        assert not torch.allclose(net.time_embed(torch.tensor([3.5, 700.25])), whole)
        assert net(x, torch.tensor([3.5, 700.25])).shape == (2, 1, 8, 8)  # (its last layer starts at zero)
