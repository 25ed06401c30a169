import math

import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.models.layers import Attention, Downsample, ResBlock, Upsample


def test_attention_equals_softmax_attention_written_out():
    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8, groups=4)
    torch.nn.init.normal_(attn.out.weight)  # undo the zero init so the branch matters
    x = torch.randn(2, 16, 3, 5)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 2, 8, 15).unbind(1)  # [B, heads, d, N]
    weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(8), dim=-1)
    out = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(2, 16, 3, 5)
    torch.testing.assert_close(attn(x), x + attn.out(out), rtol=1e-5, atol=1e-5)


def test_resblock_starts_as_its_skip_path_and_uses_the_embedding():
    block = ResBlock(8, 16, 12, groups=4)
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    torch.testing.assert_close(block(x, emb), block.skip(x))  # the last conv is zero-initialised
    torch.nn.init.normal_(block.conv2.weight)
    assert not torch.allclose(block(x, emb), block(x, emb * 2))


def test_resampling_shapes():
    x = torch.randn(1, 4, 6, 10)
    assert Downsample(4, 8)(x).shape == (1, 8, 3, 5)
    assert Upsample(4, 2)(x).shape == (1, 2, 12, 20)


def test_group_count_must_divide_channels():
    with pytest.raises(ConfigError, match="divisible by resnet_block_groups=8; a layer has 12 channels"):
        ResBlock(12, 12, 4)
