import math

import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.diffusion import q_posterior
from ddpm.errors import ConfigError
from ddpm.sampling import get_timesteps, sample_ancestral, sample_ddim
from ddpm.sampling.ddim import ddim_coefficients
from ddpm.schedules import get_schedule

MEAN, STD = 0.3, 0.2


def test_eta_one_step_is_the_ddpm_posterior():
    """Song et al.: with eta = 1, eq. 12 is q(x_{t-1} | x_t, x0_hat) (Ho et al. eqs. 6-7)."""
    s = get_schedule("linear", 1000)
    t = torch.arange(1, 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(999, 3, generator=g, dtype=torch.float64)
    xt = torch.randn(999, 3, generator=g, dtype=torch.float64)
    ab = s.alphas_cumprod
    rows = [ddim_coefficients(ab[k].item(), ab[k - 1].item(), 1.0) for k in range(1, 1000)]
    c_x0, c_eps, sigma = (torch.tensor(c, dtype=torch.float64)[:, None] for c in zip(*rows))
    eps = (xt - ab[t, None].sqrt() * x0) / (1 - ab[t, None]).sqrt()
    mean, var, _ = q_posterior(s, x0, xt, t)
    torch.testing.assert_close(c_x0 * x0 + c_eps * eps, mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sigma**2, var, rtol=1e-9, atol=0)
    # eta = 0 keeps the whole remaining noise in the eps direction (eq. 13)
    assert ddim_coefficients(0.5, 0.8, 0.0) == pytest.approx((math.sqrt(0.8), math.sqrt(0.2), 0.0), rel=1e-15)
    # the last step (to alpha_bar = 1) returns x0_hat at any eta
    assert ddim_coefficients(0.9, 1.0, 1.0) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("steps, clip", [(None, None), (None, "static"), (25, None)])
def test_eta_one_is_the_ancestral_sampler(steps, clip):
    """Same noise draws in the same order: DDIM(eta=1) and ancestral sampling (fixed_small) on
    the same grid produce the same images, full chain or respaced."""
    s = get_schedule("cosine", 100)
    model = gaussian_model(s, MEAN, STD)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = sample_ddim(model, x_T, s, steps, grid="uniform", eta=1.0, clip=clip,
                    generator=torch.Generator().manual_seed(9))
    b = sample_ancestral(model, x_T, s, steps, grid="uniform", clip=clip, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _exact_moments(s, ts, eta):
    """Mean and variance of DDIM's output for x_T ~ N(0, 1) and data N(MEAN, STD^2), written out
    independently: x0_hat = MEAN + k (x - a MEAN) with k = a STD^2 / (a^2 STD^2 + 1 - a^2) (the
    Gaussian posterior mean), every step affine in x plus independent noise."""
    m, v = 0.0, 1.0
    ab = [s.alphas_cumprod[t].item() for t in ts]
    for k in reversed(range(len(ts))):
        a, prev = math.sqrt(ab[k]), ab[k - 1] if k > 0 else 1.0
        gain = a * STD**2 / (a * a * STD**2 + 1 - a * a)
        sigma = eta * math.sqrt((1 - prev) / (1 - ab[k]) * (1 - ab[k] / prev))
        c_eps = math.sqrt(1 - prev - sigma**2)
        # x_prev = sqrt(prev) x0_hat + c_eps (x - a x0_hat) / sqrt(1 - a^2) + sigma z
        c_x0 = math.sqrt(prev) - c_eps * a / math.sqrt(1 - a * a)
        A = c_x0 * gain + c_eps / math.sqrt(1 - a * a)
        B = c_x0 * (MEAN - gain * a * MEAN)
        m, v = A * m + B, A * A * v + sigma**2
    return m, v


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_follows_its_own_algebra(eta, steps):
    s = get_schedule("linear", 1000)
    model = gaussian_model(s, MEAN, STD)
    ts = get_timesteps("quadratic", s, steps)
    m, v = _exact_moments(s, ts, eta)
    g = torch.Generator().manual_seed(steps)
    x = sample_ddim(model, torch.randn(4000, 1, 4, 4, generator=g, dtype=torch.float64), s, steps,
                    grid="quadratic", eta=eta, clip=None, generator=g)
    # 64,000 values: standard errors about 0.0008 (mean) and 0.3% (std)
    assert x.mean().item() == pytest.approx(m, abs=0.003)
    assert x.std().item() == pytest.approx(math.sqrt(v), rel=0.012)
    if eta == 0:  # deterministic: the output is exactly A x_T + B
        y = sample_ddim(model, torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1), s, steps,
                        grid="quadratic", clip=None).flatten()
        assert y[0].item() == pytest.approx(m, abs=1e-12)
        assert (y[1] - y[0]).item() == pytest.approx(math.sqrt(v), abs=1e-12)


def test_learned_variance_is_ignored_and_bad_options_are_refused():
    s = get_schedule("cosine", 50)
    model = gaussian_model(s, MEAN, STD)
    x_T = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    learned = lambda x, t: torch.cat([model(x, t), torch.rand_like(x) * 2 - 1], dim=1)
    a = sample_ddim(model, x_T, s, 10)
    b = sample_ddim(learned, x_T, s, 10, variance_type="learned_range")
    assert torch.equal(a, b)
    eta_message = r"eta must lie between 0 \(deterministic DDIM\) and 1 \(ancestral noise\); got 1.5"
    with pytest.raises(ConfigError, match=eta_message):
        sample_ddim(model, x_T, s, 10, eta=1.5)
    with pytest.raises(ConfigError, match="unknown variance type 'learned'; choose one of"):
        sample_ddim(model, x_T, s, 10, variance_type="learned")
    with pytest.raises(ConfigError, match="unknown clip mode 'soft'; choose one of static, dynamic, none"):
        sample_ddim(model, x_T, s, 10, clip="soft")
    with pytest.raises(ConfigError, match="unknown objective 'eps'"):
        sample_ddim(model, x_T, s, 10, objective="eps")
