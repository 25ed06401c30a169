import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.errors import ConfigError
from ddpm.sampling import guided_model_fn, sample_ddim, sample_dpmpp_2m
from ddpm.schedules import get_schedule

NULL = 10


class FakeNet:
    """A class-conditional 'network' whose output depends on x, t and the label in a way no two
    labels share; it counts its calls and the batch sizes it saw."""

    def __init__(self, channels_out_factor: int = 1):
        self.calls: list[int] = []
        self.factor = channels_out_factor

    def __call__(self, x, t, classes):
        self.calls.append(x.shape[0])
        c = classes.to(x.dtype).reshape(-1, 1, 1, 1)
        out = torch.sin(3.1 * x * (c + 1.3)) + 0.001 * t.to(x.dtype).reshape(-1, 1, 1, 1) * c
        return torch.cat([out, torch.tanh(out + c)], dim=1) if self.factor == 2 else out


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=dtype)
    return x, torch.tensor([5, 17, 999]), torch.tensor([0, 3, 7])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_one_is_the_conditional_model_and_zero_the_unconditional(dtype):
    x, t, y = _inputs(dtype)
    net = FakeNet()
    assert torch.equal(guided_model_fn(net, y, 1.0, NULL)(x, t), net(x, t, y))
    assert torch.equal(guided_model_fn(net, y, 0.0, NULL)(x, t), net(x, t, torch.full_like(y, NULL)))


@pytest.mark.parametrize("w", [-0.5, 0.3, 0.5, 0.7, 2.0, 7.5])
def test_other_scales_extrapolate_linearly_in_one_batched_call(w):
    x, t, y = _inputs(torch.float64)
    net = FakeNet()
    out = guided_model_fn(net, y, w, NULL)(x, t)
    assert net.calls == [6]  # one forward pass over the doubled batch
    cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, NULL))
    torch.testing.assert_close(out, uncond + w * (cond - uncond), rtol=0, atol=1e-12)


def test_learned_variance_is_taken_from_the_conditional_half():
    x, t, y = _inputs(torch.float64)
    net = FakeNet(channels_out_factor=2)
    out = guided_model_fn(net, y, 3.0, NULL)(x, t)
    cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, NULL))
    assert out.shape == (3, 4, 4, 4)
    assert torch.equal(out[:, 2:], cond[:, 2:])
    torch.testing.assert_close(out[:, :2], uncond[:, :2] + 3.0 * (cond[:, :2] - uncond[:, :2]), rtol=0, atol=1e-12)
    assert torch.equal(guided_model_fn(net, y, 1.0, NULL)(x, t), cond)


def test_samplers_need_not_know_about_guidance():
    """A guided run at w = 1 is the conditional run, image for image; one forward per step."""
    s = get_schedule("cosine", 100)
    models = {3: gaussian_model(s, 0.3, 0.2), NULL: gaussian_model(s, 0.0, 0.5)}

    def net(x, t, classes):
        calls.append(x.shape[0])
        return torch.where((classes == NULL).reshape(-1, 1, 1, 1), models[NULL](x, t), models[3](x, t))

    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.full((8,), 3)
    calls: list[int] = []
    guided = sample_ddim(guided_model_fn(net, y, 1.0, NULL), x_T, s, 10)
    assert calls == [16] * 10
    plain = sample_ddim(lambda x, t: net(x, t, y), x_T, s, 10)
    assert torch.equal(guided, plain)
    # guidance towards the class moves the samples' mean from the null model's 0 towards 0.3 and past it
    strong = sample_dpmpp_2m(guided_model_fn(net, y, 3.0, NULL), x_T, s, 20, clip=None)
    weak = sample_dpmpp_2m(guided_model_fn(net, y, 0.0, NULL), x_T, s, 20, clip=None)
    assert abs(weak.mean().item()) < 0.25 and strong.mean().item() > plain.mean().item()


def test_label_count_must_match_the_batch():
    x, t, _ = _inputs()
    with pytest.raises(ConfigError, match="guidance got 2 class labels for a batch of 3 images"):
        guided_model_fn(FakeNet(), torch.tensor([1, 2]), 2.0, NULL)(x, t)
    with pytest.raises(ConfigError, match="one class label per image"):
        guided_model_fn(FakeNet(), torch.tensor([[1, 2, 3]]), 2.0, NULL)


class FakeTextNet:
    """A text-conditional 'network': its output depends on x, t, the pooled vector, and on the
    drop flag (dropped rows see a fixed 'null' vector instead)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, x, t, text):
        self.calls.append(x.shape[0])
        v = text.pooled.sum(1)
        if text.drop is not None:
            v = torch.where(text.drop, torch.full_like(v, -0.7), v)
        return torch.sin(2.3 * x * (v.reshape(-1, 1, 1, 1) + 1.1)) + 0.001 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def _text(dtype=torch.float64):
    from ddpm.text.base import TextBatch

    g = torch.Generator().manual_seed(5)
    return TextBatch(torch.randn(3, 4, 2, generator=g, dtype=dtype), torch.ones(3, 4, dtype=torch.bool),
                     torch.randn(3, 2, generator=g, dtype=dtype))


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0, 2.0, 5.0])
def test_text_guidance_is_the_same_rule_with_the_null_caption(w):
    from ddpm.sampling import text_guided_model_fn

    x, t, _ = _inputs(torch.float64)
    net, text = FakeTextNet(), _text()
    out = text_guided_model_fn(net, text, w)(x, t)
    assert net.calls == [6]
    cond = net(x, t, text)
    uncond = net(x, t, text.with_drop(torch.ones(3, dtype=torch.bool)))
    if w == 1.0:
        assert torch.equal(out, cond)
    elif w == 0.0:
        assert torch.equal(out, uncond)
    else:
        torch.testing.assert_close(out, uncond + w * (cond - uncond), rtol=0, atol=1e-12)
    with pytest.raises(ConfigError, match="guidance got 3 prompts for a batch of 2 images"):
        text_guided_model_fn(net, text, w)(x[:2], t[:2])
