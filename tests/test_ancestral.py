import math

import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.diffusion import p_mean_variance
from ddpm.sampling import get_timesteps, sample_ancestral
from ddpm.schedules import get_schedule

MEAN, STD = 0.3, 0.2


def _exact_output_moments(schedule, timesteps, variance_type):
    """Mean and variance of what the sampler returns, propagated in closed form.

    With the exact Gaussian model and no clipping every step is affine in x_t plus Gaussian
    noise, x_{t-1} = A x_t + B + sigma z, so the moments follow m <- A m + B, v <- A^2 v + sigma^2.
    """
    chain = schedule if len(timesteps) == schedule.num_timesteps else schedule.respaced(timesteps)
    model = gaussian_model(schedule, MEAN, STD)
    xs = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    m, v = 0.0, 1.0
    for idx in reversed(range(len(timesteps))):
        out = model(xs, torch.tensor([timesteps[idx]] * 2))
        p = p_mean_variance(chain, out, xs, torch.tensor([idx, idx]), variance_type=variance_type, clip=None)
        B = p.mean[0].item()
        A = p.mean[1].item() - B
        m, v = A * m + B, A * A * v + (p.variance[0].item() if idx > 0 else 0.0)
    return m, v


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ancestral_sampler_reproduces_gaussian_data(variance_type):
    s = get_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x = sample_ancestral(gaussian_model(s, MEAN, STD), torch.randn(4000, 1, 4, 4, generator=g), s,
                         variance_type=variance_type, clip=None, generator=g)
    # 64,000 values: the standard error of the mean is 0.0008, of the std about 0.0006
    assert x.mean().item() == pytest.approx(MEAN, abs=0.004)
    assert x.std().item() == pytest.approx(STD, rel=0.025)
    # and exactly the distribution the chain's algebra predicts
    m, v = _exact_output_moments(s, list(range(1000)), variance_type)
    assert x.mean().item() == pytest.approx(m, abs=0.003)
    assert x.std().item() == pytest.approx(math.sqrt(v), rel=0.01)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_respaced_chain_follows_its_own_algebra(variance_type):
    """100 of 1000 steps: the mean stays right; fixed variances bracket the data's std (small
    below, large above, each within 15%) and the samples follow the chain's exact moments."""
    s = get_schedule("linear", 1000)
    ts = get_timesteps("uniform", s, 100)
    g = torch.Generator().manual_seed(1)
    x = sample_ancestral(gaussian_model(s, MEAN, STD), torch.randn(4000, 1, 4, 4, generator=g), s, steps=100,
                         grid="uniform", variance_type=variance_type, clip=None, generator=g)
    assert x.mean().item() == pytest.approx(MEAN, abs=0.004)
    assert (x.std().item() < STD) == (variance_type == "fixed_small")
    assert x.std().item() == pytest.approx(STD, rel=0.15)
    m, v = _exact_output_moments(s, ts, variance_type)
    assert x.mean().item() == pytest.approx(m, abs=0.003)
    assert x.std().item() == pytest.approx(math.sqrt(v), rel=0.01)


def test_callback_seed_and_learned_variance():
    s = get_schedule("cosine", 20)
    model = gaussian_model(s, MEAN, STD)
    calls = []
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def cb(i, x, x0):
        calls.append((i, x.shape, x0.shape))

    a = sample_ancestral(model, x_T, s, generator=torch.Generator().manual_seed(5), callback=cb)
    b = sample_ancestral(model, x_T, s, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)
    assert [c[0] for c in calls] == list(range(20)) and calls[0][1] == (2, 1, 4, 4)
    # a learned variance at the lower end (v = -1) is the fixed-small sampler
    learned = lambda x, t: torch.cat([model(x, t), -torch.ones_like(x)], dim=1)
    c = sample_ancestral(learned, x_T, s, variance_type="learned_range", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, c)
