import math

import pytest
import torch

from ddpm.analytic import discrete_gaussian_entropy_bits, gaussian_model, mixture_model, quantize
from ddpm.diffusion import x0_and_eps
from ddpm.schedules import get_schedule

S = get_schedule("cosine", 200)


def _log_q(x, t, means, stds, weights):
    """log q(x_t) of a mixture of isotropic Gaussians, with torch.distributions."""
    a = S.sqrt_alphas_cumprod[t].item()
    comps = []
    for m, s, w in zip(means, stds, weights):
        loc = torch.tensor(a * m, dtype=torch.float64)
        d = torch.distributions.Normal(loc, torch.tensor(math.sqrt(a * a * s * s + 1 - a * a), dtype=torch.float64))
        comps.append(math.log(w) + d.log_prob(x).flatten(1).sum(1))
    return torch.logsumexp(torch.stack(comps), dim=0)


@pytest.mark.parametrize("t", [0, 60, 199])
def test_mixture_model_is_minus_sigma_times_the_score(t):
    means, stds, weights = (-0.5, 0.6), (0.1, 0.2), (0.3, 0.7)
    x = (torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(t)).double() * 0.6).requires_grad_(True)
    score = torch.autograd.grad(_log_q(x, t, means, stds, weights).sum(), x)[0]
    sigma = math.sqrt(1 - S.alphas_cumprod[t].item())
    eps = mixture_model(S, means, stds, [w * 10 for w in weights])(x.detach(), torch.full((5,), t))
    torch.testing.assert_close(eps, -sigma * score, rtol=1e-7, atol=1e-9)


def test_single_component_mixture_equals_the_gaussian_model():
    x = torch.randn(3, 1, 4, 4).double()
    t = torch.tensor([3, 100, 150])
    torch.testing.assert_close(mixture_model(S, [0.2], [0.3], [1.0])(x, t), gaussian_model(S, 0.2, 0.3)(x, t))


@pytest.mark.parametrize("objective", ["pred_x0", "pred_v"])
def test_other_objectives_describe_the_same_prediction(objective):
    x = torch.randn(2, 1, 2, 2).double()
    t = torch.tensor([10, 150])
    eps = gaussian_model(S, 0.1, 0.4)(x, t)
    _, got = x0_and_eps(S, objective, gaussian_model(S, 0.1, 0.4, objective)(x, t), x, t)
    torch.testing.assert_close(got, eps)


def test_entropy_and_quantize():
    assert discrete_gaussian_entropy_bits(1 / 255, 1e-4) == pytest.approx(0.0, abs=1e-6)  # all mass in one bin
    assert discrete_gaussian_entropy_bits(0.0, 1e-4) == pytest.approx(1.0, abs=1e-6)  # 0 sits between two bins
    wide = discrete_gaussian_entropy_bits(0.0, 100.0)
    assert wide < 8.0 and wide > 1.0  # mostly in the two end bins
    q = quantize(torch.tensor([-2.0, -1.0, 0.0, 0.001, 1.0]))
    torch.testing.assert_close(q, torch.tensor([-1.0, -1.0, 1 / 255, 1 / 255, 1.0]))


def test_exact_models_stay_finite_at_zero_terminal_snr():
    zero = get_schedule("linear", 100, zero_terminal_snr=True)
    x = torch.randn(2, 1, 2, 2).double()
    t = torch.tensor([99, 99])
    for objective in ("pred_x0", "pred_v"):
        for model in (gaussian_model(zero, 0.3, 0.2, objective), mixture_model(zero, [0.3, -0.4], [0.2, 0.1], [1, 1], objective)):
            assert torch.isfinite(model(x, t)).all()
    # at zero SNR nothing is known about x_0 but its mean, and v = -E[x_0]
    torch.testing.assert_close(gaussian_model(zero, 0.3, 0.2, "pred_v")(x, t), torch.full_like(x, -0.3))


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_correlated_gaussian_model_is_the_dense_posterior_mean(objective):
    """E[x_0 | x_t] = mean + a S (a^2 S + sigma^2 I)^-1 (x_t - a mean), with the covariance S built
    densely and solved by torch.linalg, against the Sherman-Morrison closed form."""
    from ddpm.analytic import correlated_gaussian_model

    mean, sc, se = 0.1, 0.5, 0.2
    fn = correlated_gaussian_model(S, mean, sc, se, objective)
    cov = se**2 * torch.eye(16, dtype=torch.float64) + sc**2 * torch.ones(16, 16, dtype=torch.float64)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (0, 37, 120.5, 199):
        a = S.alpha_bar_at(torch.tensor(float(t))).sqrt()
        sigma = (1 - a**2).sqrt()
        m = a**2 * cov + sigma**2 * torch.eye(16, dtype=torch.float64)
        x0 = mean + a * (cov @ torch.linalg.solve(m, (x.flatten(1) - a * mean).T)).T
        eps = (x.flatten(1) - a * x0) / sigma
        want = {"pred_noise": eps, "pred_x0": x0, "pred_v": a * eps - sigma * x0}[objective]
        time = torch.full((3,), t) if isinstance(t, int) else torch.full((3,), t, dtype=torch.float64)
        torch.testing.assert_close(fn(x, time).flatten(1), want, rtol=1e-10, atol=1e-12)


def test_correlated_gaussian_conditional_is_dense_gaussian_conditioning():
    from ddpm.analytic import correlated_gaussian_conditional

    mean, sc, se = -0.2, 0.4, 0.3
    cov = se**2 * torch.eye(10, dtype=torch.float64) + sc**2 * torch.ones(10, 10, dtype=torch.float64)
    known = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # pixels 0-5 known
    k, u = slice(0, 6), slice(6, 10)
    gain = cov[u, k] @ torch.linalg.inv(cov[k, k])
    want_mean = mean + (gain @ (known - mean).T).T  # [2, 4], all four unknown pixels alike
    want_var = torch.diagonal(cov[u, u] - gain @ cov[k, u])
    got_mean, got_std = correlated_gaussian_conditional(known, mean, sc, se)
    torch.testing.assert_close(got_mean[:, None].expand(2, 4), want_mean)
    torch.testing.assert_close(got_std[:, None].expand(2, 4) ** 2, want_var.expand(2, 4))
