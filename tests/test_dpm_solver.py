import math

import numpy as np
import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.sampling import get_timesteps, sample_dpmpp_2m, sample_dpmpp_3m
from ddpm.sampling.ddim import ddim_coefficients
from ddpm.sampling.dpm_solver import multistep_coefficients
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
