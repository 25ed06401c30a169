import math

import pytest
import torch

from ddpm import diffusion as D
from ddpm.errors import ConfigError
from ddpm.schedules import get_schedule

S = get_schedule("linear", 1000)


def test_q_sample_has_the_marginal_of_eq_4():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    t = torch.full((20000,), 300)
    xt = D.q_sample(S, x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ab = S.alphas_cumprod[300].item()
    assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.03)
    mean, var, log_var = D.q_mean_variance(S, x0[:2], t[:2])
    assert mean[0, 0].item() == pytest.approx(math.sqrt(ab) * 0.7)
    assert var[0, 0].item() == pytest.approx(1 - ab) and log_var[0, 0].item() == pytest.approx(math.log(1 - ab))


def test_q_sample_composes_single_steps():
    """x_t from x_0 in one jump equals t+1 single steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z."""
    s = get_schedule("cosine", 20)
    x0 = torch.tensor([[0.5]], dtype=torch.float64)
    mean, var = x0.clone(), torch.zeros_like(x0)
    for step in range(8):
        b = s.betas[step]
        mean, var = (1 - b).sqrt() * mean, (1 - b) * var + b
    m, v, _ = D.q_mean_variance(s, x0, torch.tensor([7]))
    assert m.item() == pytest.approx(mean.item(), rel=1e-12)
    assert v.item() == pytest.approx(var.item(), rel=1e-12)


@pytest.mark.parametrize("t", [1, 10, 500, 999])
def test_posterior_equals_bayes_rule(t):
    """q(x_{t-1} | x_t, x_0) from Bayes' rule on two scalar Gaussians, independently of eq. 7."""
    ab_prev = S.alphas_cumprod[t - 1].item()
    alpha, beta = 1 - S.betas[t].item(), S.betas[t].item()
    x0 = torch.tensor([[0.3], [-0.8]], dtype=torch.float64)
    xt = torch.tensor([[1.1], [0.2]], dtype=torch.float64)
    # prior q(x_{t-1} | x_0) = N(sqrt(ab_prev) x0, 1 - ab_prev); likelihood q(x_t | x_{t-1}) = N(sqrt(alpha) x_{t-1}, beta)
    precision = 1 / (1 - ab_prev) + alpha / beta
    var = 1 / precision
    mean = var * (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(alpha) * xt / beta)
    m, v, log_v = D.q_posterior(S, x0, xt, torch.tensor([t, t]))
    torch.testing.assert_close(m, mean, rtol=1e-9, atol=1e-12)
    assert v[0].item() == pytest.approx(var, rel=1e-9)
    assert log_v[0].item() == pytest.approx(math.log(var), rel=1e-9)


def test_eps_x0_v_round_trips():
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 5, 500, 999])
    xt = D.q_sample(S, x0, t, eps)
    torch.testing.assert_close(D.x0_from_eps(S, xt, t, eps), x0)
    torch.testing.assert_close(D.eps_from_x0(S, xt, t, x0), eps)
    v = D.v_from_x0_eps(S, x0, t, eps)
    torch.testing.assert_close(D.x0_from_v(S, xt, t, v), x0)
    torch.testing.assert_close(D.eps_from_v(S, xt, t, v), eps)
    for objective, prediction in (("pred_noise", eps), ("pred_x0", x0), ("pred_v", v)):
        got_x0, got_eps = D.x0_and_eps(S, objective, prediction, xt, t)
        torch.testing.assert_close(got_x0, x0)
        torch.testing.assert_close(got_eps, eps)
        torch.testing.assert_close(D.training_target(S, objective, x0, t, eps), prediction)


def test_v_is_a_rotation_of_x0_and_eps():
    """With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar): (x_t, v) = R (x_0, eps), R orthogonal."""
    x0, eps, t = torch.tensor([[0.4]]).double(), torch.tensor([[-1.3]]).double(), torch.tensor([250])
    xt = D.q_sample(S, x0, t, eps)
    v = D.v_from_x0_eps(S, x0, t, eps)
    assert (xt**2 + v**2).item() == pytest.approx((x0**2 + eps**2).item())


def test_p_mean_matches_eq_11_without_clipping():
    g = torch.Generator().manual_seed(2)
    xt = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 100, 999])
    p = D.p_mean_variance(S, eps, xt, t, clip=None)
    beta = S.betas[t].reshape(-1, 1, 1, 1)
    ab = S.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    eq11 = (xt - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()
    torch.testing.assert_close(p.mean, eq11)
    torch.testing.assert_close(p.variance, S.posterior_variance[t].reshape(-1, 1, 1, 1).expand_as(xt))


def test_variance_types():
    xt = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 400])
    large = D.p_mean_variance(S, torch.zeros_like(xt), xt, t, variance_type="fixed_large").variance
    assert large[1, 0, 0, 0].item() == pytest.approx(S.betas[400].item())
    assert large[0, 0, 0, 0].item() == pytest.approx(S.posterior_variance[1].item())
    # learned_range: v = -1 gives the posterior variance, v = +1 gives beta_t
    for v, expected in ((-1.0, S.posterior_variance[400]), (1.0, S.betas[400])):
        out = torch.cat([torch.zeros_like(xt), torch.full_like(xt, v)], dim=1)
        got = D.p_mean_variance(S, out, xt, t, variance_type="learned_range").variance
        assert got[1, 0, 0, 0].item() == pytest.approx(expected.item(), rel=1e-9)


def test_static_clipping_bounds_the_predicted_x0():
    xt = torch.full((1, 1, 2, 2), 3.0, dtype=torch.float64)
    p = D.p_mean_variance(S, torch.zeros_like(xt), xt, torch.tensor([10]), clip="static")
    assert p.pred_x0.max().item() == 1.0
    # eps is recomputed to agree with the clipped x_0
    torch.testing.assert_close(D.x0_from_eps(S, xt, torch.tensor([10]), p.pred_eps), p.pred_x0)


def test_dynamic_threshold_rescales_by_the_percentile():
    x = torch.linspace(-3, 3, 1001).reshape(1, 1, 1, 1001)
    out = D.dynamic_threshold(x, percentile=0.9)
    s = torch.quantile(x.abs().flatten(), 0.9)
    assert out.abs().max().item() == pytest.approx(1.0)
    torch.testing.assert_close(out, x.clamp(-s, s) / s)
    small = torch.full((1, 1, 2, 2), 0.5)
    torch.testing.assert_close(D.dynamic_threshold(small), small)  # s never goes below 1


def test_unknown_choices_name_the_alternatives():
    with pytest.raises(ConfigError, match="unknown objective 'eps'; choose one of pred_noise, pred_x0, pred_v"):
        D.x0_and_eps(S, "eps", torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([0]))
    with pytest.raises(ConfigError, match="unknown clip mode"):
        D.clip_x0(torch.zeros(1), "sometimes")
    with pytest.raises(ConfigError, match="learned variance needs a model with 2 output channels"):
        D.split_output(torch.zeros(1, 1, 2, 2), 1, True)
