import math

import numpy as np
import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.sampling import get_timesteps, sample_ddim, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m
from ddpm.sampling.ddim import ddim_coefficients
from ddpm.sampling import Denoiser, make_plan
from ddpm.sampling.dpm_solver import multistep_coefficients, run_multistep, sde_coefficients
from ddpm.schedules import get_schedule


def _lambda(ab):
    return 0.5 * math.log(ab / (1 - ab))


def _visited(name="linear", steps=12, grid="logsnr", **kw):
    s = get_schedule(name, 1000, **kw)
    return [s.alphas_cumprod[t].item() for t in get_timesteps(grid, s, steps)[::-1]]


@pytest.mark.parametrize("order", [1, 2, 3])
def test_first_step_is_ddim(order):
    """The first (and every first-order) step is DDIM with eta = 0 (Lu et al. eq. 10)."""
    ab = _visited()
    c_x, c_m = multistep_coefficients(ab, order)[0]
    c_x0, c_eps, _ = ddim_coefficients(ab[0], ab[1], 0.0)
    # DDIM: x' = c_x0 x0 + c_eps (x - a x0) / sigma
    assert c_x == pytest.approx(c_eps / math.sqrt(1 - ab[0]), rel=1e-12)
    assert c_m == pytest.approx((c_x0 - c_eps * math.sqrt(ab[0]) / math.sqrt(1 - ab[0]),), rel=1e-12)


@pytest.mark.parametrize("order, degree, rows", [(2, 0, 11), (3, 0, 11), (3, 1, 8), (3, 2, 8)])
def test_steps_integrate_polynomial_predictions_exactly(order, degree, rows):
    """If x0_hat(lambda) is a polynomial of degree < the step's order, the step is the exact
    solution x_t = (sigma_t / sigma_s) x_s + sigma_t int e^lambda x0_hat(lambda) dlambda (Lu et al.
    eq. 9), here integrated by Gauss-Legendre quadrature. Third-order steps (8 of 12) must be exact
    for quadratics; the second-order midpoint rule (Algorithm 2) is exact for constants only."""
    ab = _visited("cosine", 12)
    lam = [_lambda(a) for a in ab]
    nodes, weights = np.polynomial.legendre.leggauss(40)
    checked = 0
    for i, (c_x, c_m) in enumerate(multistep_coefficients(ab, order)[:-1]):  # the last goes to lambda = inf
        assert c_x == pytest.approx(math.sqrt((1 - ab[i + 1]) / (1 - ab[i])), rel=1e-12)
        if degree > 0 and len(c_m) < 3:
            continue
        a, b = lam[i], lam[i + 1]
        u = 0.5 * (b - a) * nodes + 0.5 * (a + b)
        exact = math.sqrt(1 - ab[i + 1]) * 0.5 * (b - a) * np.sum(weights * np.exp(u) * (u - a) ** degree)
        got = sum(c * (lam[i - j] - a) ** degree for j, c in enumerate(c_m))
        assert got == pytest.approx(exact, rel=1e-10, abs=1e-12)
        checked += 1
    assert checked == rows


def test_orders_warm_up_and_fall_at_the_end():
    orders = lambda ab, order: [len(c_m) for _, c_m in multistep_coefficients(ab, order)]
    assert orders(_visited(steps=10), 3) == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert orders(_visited(steps=20), 3) == [1, 2] + [3] * 17 + [1]
    assert orders(_visited(steps=10), 2) == [1] + [2] * 8 + [1]
    no_final = [len(c) for _, c in multistep_coefficients(_visited(steps=10), 3, lower_order_final=False)]
    assert no_final == [1, 2] + [3] * 7 + [1]
    # at zero terminal SNR the first prediction (lambda = -inf) is not used for derivatives
    zero = _visited(steps=20, grid="uniform", zero_terminal_snr=True)
    assert zero[0] == 0.0
    assert orders(zero, 3) == [1, 1, 2] + [3] * 16 + [1]
    c_x, c_m = multistep_coefficients(zero, 3)[0]
    assert c_x == pytest.approx(math.sqrt(1 - zero[1])) and c_m == pytest.approx((math.sqrt(zero[1]),))


def _affine_error(sampler, s, steps):
    """|A - A_exact| for the output A x_T + B on Gaussian data N(0.3, 0.2^2): the probability-flow
    ODE maps x_T to a_t 0.3 + sqrt(v_t) (x_T - a_T 0.3) / sqrt(v_T), v_t = a_t^2 0.04 + 1 - a_t^2,
    and the last step returns the posterior mean at t = 0."""
    ab = s.alphas_cumprod
    v = lambda t: ab[t] * 0.04 + 1 - ab[t]
    T = s.num_timesteps
    exact = (v(0).sqrt() / v(T - 1).sqrt() * ab[0].sqrt() * 0.04 / v(0)).item()
    y = sampler(gaussian_model(s, 0.3, 0.2), torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1), s,
                steps, grid="logsnr", clip=None).flatten()
    return abs((y[1] - y[0]).item() - exact)


def test_convergence_orders():
    """On a fine discretisation (T = 10^5, so the integer grid is nearly even in lambda) halving
    the step divides the error by about 4 for 2M and by well over 8 for 3M."""
    s = get_schedule("cosine", 100_000)
    e2 = [_affine_error(sample_dpmpp_2m, s, n) for n in (40, 80, 160)]
    e3 = [_affine_error(sample_dpmpp_3m, s, n) for n in (40, 80, 160)]
    for a, b in zip(e2, e2[1:]):
        assert 3.3 < a / b < 5.0
    for a, b in zip(e3, e3[1:]):
        assert a / b > 9.0


def test_first_order_sde_steps_are_the_ddpm_posterior():
    """SDE-DPM-Solver++ at first order is q(x_t | x_s, x0_hat) of the respaced chain: DDIM with
    eta = 1 (mean and standard deviation of the noise)."""
    ab = _visited("cosine", 12)
    for i, (c_x, c_m, c_z) in enumerate(sde_coefficients(ab, 1)[:-1]):
        c_x0, c_eps, sigma = ddim_coefficients(ab[i], ab[i + 1], 1.0)
        assert c_x == pytest.approx(c_eps / math.sqrt(1 - ab[i]), rel=1e-10)
        assert c_m == pytest.approx((c_x0 - c_eps * math.sqrt(ab[i]) / math.sqrt(1 - ab[i]),), rel=1e-10)
        assert c_z == pytest.approx(sigma, rel=1e-10)
    c_x, c_m, c_z = sde_coefficients(ab, 2)[-1]  # the last step returns x0_hat
    assert (c_x, c_m, c_z) == (0.0, (1.0,), 0.0)


def test_first_order_sde_sampler_equals_ddim_with_eta_one():
    s = get_schedule("linear", 1000)
    model = gaussian_model(s, 0.3, 0.2)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = sample_ddim(model, x_T, s, 15, grid="logsnr", eta=1.0, clip=None, generator=torch.Generator().manual_seed(1))
    sde = run_multistep(Denoiser(model, clip=None), x_T, make_plan(s, 15, "logsnr"), order=1, lower_order_final=True,
                        stochastic=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sde, ddim, rtol=1e-9, atol=1e-9)


def test_second_order_sde_steps_are_exact_for_constants_and_third_order_locally():
    """Against the mean of the SDE's exact solution, x_t = (sigma_t / sigma_s) e^-h x_s +
    2 alpha_t int_{lambda_s}^{lambda_t} e^{-2 (lambda_t - lambda)} x0_hat(lambda) dlambda: exact
    for a constant x0_hat; for a linear one the local error falls like h^3 (second order)."""

    def step_error(h: float, slope: float) -> float:
        lam = [-0.5 - h, -0.5, -0.5 + h]  # previous, current, next: even steps in lambda
        ab = [1 / (1 + math.exp(-2 * v)) for v in lam]  # lambda = log(alpha / sigma)
        c_x, c_m, c_z = sde_coefficients(ab[:2] + [ab[2], 0.9999], 2)[1]  # step 1 goes lam[1] -> lam[2]
        x0 = lambda v: 0.7 + slope * (v - lam[1])
        got = c_m[0] * x0(lam[1]) + c_m[1] * x0(lam[0])
        u = np.linspace(lam[1], lam[2], 20001)
        f = 2 * math.sqrt(ab[2]) * np.exp(-2 * (lam[2] - u)) * x0(u)
        exact = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(u)))  # trapezoid, error ~1e-10
        assert c_x == pytest.approx(math.sqrt((1 - ab[2]) / (1 - ab[1])) * math.exp(-h), rel=1e-12)
        assert c_z == pytest.approx(math.sqrt((1 - ab[2]) * -math.expm1(-2 * h)), rel=1e-12)
        return abs(got - exact)

    assert step_error(0.2, 0.0) < 1e-9
    errors = [step_error(h, 1.0) for h in (0.2, 0.1, 0.05)]
    assert errors[0] > 1e-4  # not exact for a slope: a real test of the order
    for a, b in zip(errors, errors[1:]):
        assert 7.0 < a / b < 9.0


def test_sde_sampler_is_stochastic_and_seeded():
    s = get_schedule("cosine", 1000)
    model = gaussian_model(s, 0.3, 0.2)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    run = lambda seed: sample_dpmpp_2m_sde(model, x_T, s, 10, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1)) and not torch.allclose(run(1), run(2))
