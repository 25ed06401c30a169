"""Cross-attention and the text conditioning of the Unet, against closed forms."""

import math

import torch

from ddpm import Unet
from ddpm.models.conditioning import Context, CrossAttention, TextConditioning
from ddpm.text.base import TextBatch


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return module


def test_cross_attention_is_masked_softmax_attention():
    att = _randomise(CrossAttention(8, 6, heads=2, dim_head=4, groups=2)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 2, 3, generator=g, dtype=torch.float64)
    ctx = torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = att(x, Context(ctx, mask))
    # by hand: q from the normed map, k and v from the context, softmax over the real tokens (Vaswani et al. eq. 1)
    q = att.q(att.norm(x)).reshape(3, 2, 4, 6)  # [B, heads, d, N]
    k, v = att.kv(ctx).reshape(3, 5, 2, 2, 4).unbind(2)  # each [B, L, heads, d]
    scores = torch.einsum("bhdn,blhd->bhnl", q, k) / math.sqrt(4)
    weights = scores.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    mixed = torch.einsum("bhnl,blhd->bhdn", weights, v).reshape(3, 8, 2, 3)
    torch.testing.assert_close(out, x + att.out(mixed), rtol=0, atol=1e-12)
    # masked tokens do not matter
    changed = ctx.clone()
    changed[1, 2:] = 100.0
    torch.testing.assert_close(att(x, Context(changed, mask))[1], out[1], rtol=0, atol=1e-12)


def test_cross_attention_starts_as_the_identity():
    att = CrossAttention(8, 6, heads=2, dim_head=4, groups=2)
    x = torch.randn(2, 8, 3, 3)
    assert torch.equal(att(x, Context(torch.randn(2, 4, 6), torch.ones(2, 4, dtype=torch.bool))), x)


def test_dropped_rows_are_the_null_caption():
    cond = _randomise(TextConditioning(6, 10, 8))
    g = torch.Generator().manual_seed(2)
    text = TextBatch(torch.randn(3, 4, 6, generator=g), torch.ones(3, 4, dtype=torch.bool), torch.randn(3, 6, generator=g),
                     torch.tensor([False, True, False]))
    pooled, ctx = cond(text, 3, torch.device("cpu"), torch.float32)
    null_pooled, null_ctx = cond(None, 3, torch.device("cpu"), torch.float32)
    assert torch.equal(pooled[1], null_pooled[1]) and torch.equal(ctx.tokens[1, 0], null_ctx.tokens[1, 0])
    assert ctx.mask[1].tolist() == [True, False, False, False] and ctx.mask[0].all()
    kept, kept_ctx = cond(text.with_drop(None), 3, torch.device("cpu"), torch.float32)
    assert torch.equal(pooled[[0, 2]], kept[[0, 2]]) and torch.equal(ctx.tokens[[0, 2]], kept_ctx.tokens[[0, 2]])
    torch.testing.assert_close(kept[0], cond.pooled_proj(text.pooled[0]), rtol=0, atol=1e-6)


def test_unet_with_text_prompts_change_the_output_and_drop_equals_unconditional():
    torch.manual_seed(0)
    net = _randomise(Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4, text_dim=6), seed=3).eval()
    assert sum(isinstance(m, CrossAttention) for m in net.modules()) == 5  # 2 down + 2 up at the lowest level, 1 middle
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(2, 1, 8, 8, generator=g), torch.tensor([3, 700])
    text = TextBatch(torch.randn(2, 3, 6, generator=g), torch.ones(2, 3, dtype=torch.bool), torch.randn(2, 6, generator=g))
    other = TextBatch(text.tokens.flip(0), text.mask, text.pooled.flip(0))
    a, b = net(x, t, text=text), net(x, t, text=other)
    assert a.shape == (2, 1, 8, 8) and (a - b).abs().amax() > 1e-3
    dropped = net(x, t, text=text.with_drop(torch.tensor([True, True])))
    torch.testing.assert_close(dropped, net(x, t), rtol=0, atol=1e-5)
    # a Unet without text_dim has exactly the parameters it had before text conditioning existed
    plain = Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=4)
    assert not any("text" in k or "cross" in k for k in plain.state_dict())
