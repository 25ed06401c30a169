import math

import numpy as np
import pytest
import torch

from ddpm.analytic import gaussian_model
from ddpm.errors import ConfigError
from ddpm.sampling import get_timesteps, sample_dpmpp_2m, sample_unipc
from ddpm.sampling.dpm_solver import multistep_coefficients
from ddpm.sampling.unipc import unipc_coefficients
from ddpm.schedules import get_schedule


def _lambda(ab):
    return 0.5 * math.log(ab / (1 - ab))


def _visited(name="cosine", steps=12, grid="logsnr"):
    s = get_schedule(name, 1000)
    return [s.alphas_cumprod[t].item() for t in get_timesteps(grid, s, steps)[::-1]]


def _exact_step(ab, i, degree):
    """sigma_{i+1} int e^lambda (lambda - lambda_i)^degree dlambda over step i (Lu et al. eq. 9),
    by Gauss-Legendre quadrature: what a step must add for x0_hat(lambda) = (lambda - lambda_i)^degree."""
    a, b = _lambda(ab[i]), _lambda(ab[i + 1])
    nodes, weights = np.polynomial.legendre.leggauss(40)
    u = 0.5 * (b - a) * nodes + 0.5 * (a + b)
    return math.sqrt(1 - ab[i + 1]) * 0.5 * (b - a) * np.sum(weights * np.exp(u) * (u - a) ** degree)


@pytest.mark.parametrize("order", [2, 3])
def test_corrector_is_exact_for_polynomials_of_its_order(order):
    """UniC-p uses p + 1 predictions (the new one included) and integrates x0_hat exactly when it is
    a polynomial of degree p in lambda (Zhao et al. Theorem 3.3); the predictor UniP-3 is exact up
    to degree 2, UniP-2 (rho = 1/2, the bh2 simplification) and UniC-1 for constants only. 11 of 12
    steps are checked (the last goes to lambda = inf)."""
    ab = _visited()
    lam = [_lambda(a) for a in ab]
    table = unipc_coefficients(ab, order, lower_order_final=False)
    checked = 0
    for i, ((c_x, c_m), corrector) in enumerate(table[:-1]):
        assert c_x == pytest.approx(math.sqrt((1 - ab[i + 1]) / (1 - ab[i])), rel=1e-12)
        p = len(c_m)
        for degree in range(order + 1):
            exact = _exact_step(ab, i, degree)
            # a prediction made at lambda_j enters as (lambda_j - lambda_i)^degree
            pred = sum(c * (lam[i - j] - lam[i]) ** degree for j, c in enumerate(c_m))
            cx, cm, c_new = corrector
            corr = sum(c * (lam[i - j] - lam[i]) ** degree for j, c in enumerate(cm)) + c_new * (lam[i + 1] - lam[i]) ** degree
            assert (pred == pytest.approx(exact, rel=1e-9, abs=1e-12)) == (degree < p if p != 2 else degree == 0), (i, degree)
            if degree <= (p if p > 1 else 0):  # UniC-1 takes rho = 1/2 (the paper's choice): exact for constants
                assert corr == pytest.approx(exact, rel=1e-9, abs=1e-12), (i, degree)
                checked += 1
            else:
                assert corr != pytest.approx(exact, rel=1e-6)
    assert checked == (1 + 3 * 10 if order == 2 else 1 + 3 + 4 * 9)  # every corrector at degrees 0..p


def test_orders_warm_up_and_fall_at_the_end():
    orders = lambda ab, order, low=True: [len(p[1]) for p, _ in unipc_coefficients(ab, order, low)]
    assert orders(_visited(steps=10), 3) == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert orders(_visited(steps=20), 3) == [1, 2] + [3] * 16 + [2, 1]  # UniPC lowers the order at any length
    assert orders(_visited(steps=10), 2, low=False) == [1] + [2] * 8 + [1]  # the step to clean data is first order
    table = unipc_coefficients(_visited(steps=10), 2)
    assert table[-1][1] is None and all(c is not None for _, c in table[:-1])  # no model call after the last step


def test_unipc2_predictor_is_dpm_solver_2m():
    """UniP-2 with B(h) = e^h - 1 and rho = 1/2 is DPM-Solver++(2M)'s step (Zhao et al. section 3.3)."""
    ab = _visited(steps=15)
    for (pu, _), (c_x, c_m) in zip(unipc_coefficients(ab, 2), multistep_coefficients(ab, 2)):
        assert pu[0] == pytest.approx(c_x, rel=1e-12) and pu[1] == pytest.approx(c_m, rel=1e-10)


def _affine_error(order, s, steps):
    """|A - A_exact| for the output A x_T + B on Gaussian data N(0.3, 0.2^2) (as in test_dpm_solver)."""
    ab = s.alphas_cumprod
    v = lambda t: ab[t] * 0.04 + 1 - ab[t]
    T = s.num_timesteps
    exact = (v(0).sqrt() / v(T - 1).sqrt() * ab[0].sqrt() * 0.04 / v(0)).item()
    y = sample_unipc(gaussian_model(s, 0.3, 0.2), torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1), s,
                     steps, grid="logsnr", clip=None, order=order).flatten()
    return abs((y[1] - y[0]).item() - exact)


def test_convergence_orders():
    """On a fine discretisation (T = 10^5) halving the step divides UniPC-2's error by about 8
    (order 3: the corrector adds one) and UniPC-3's by more (measured 8.3, 8.1 and 7.8, 19 from 40
    to 160 steps; 31 from 20 to 40)."""
    s = get_schedule("cosine", 100_000)
    e2 = [_affine_error(2, s, n) for n in (40, 80, 160)]
    e3 = [_affine_error(3, s, n) for n in (40, 80, 160)]
    for a, b in zip(e2, e2[1:]):
        assert 6.5 < a / b < 10.0
    assert (e3[0] / e3[-1]) ** (1 / 2) > 10.0 and all(a / b > 6.0 for a, b in zip(e3, e3[1:]))
    assert all(a < b for a, b in zip(e3, e2))
    # and against DPM-Solver++(2M), the same predictor without the corrector: an order below
    m = gaussian_model(s, 0.3, 0.2)
    x = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    ab = s.alphas_cumprod
    exact = ((ab[0] * 0.04 + 1 - ab[0]).sqrt() / (ab[-1] * 0.04 + 1 - ab[-1]).sqrt() * ab[0].sqrt() * 0.04
             / (ab[0] * 0.04 + 1 - ab[0])).item()
    y = sample_dpmpp_2m(m, x, s, 160, grid="logsnr", clip=None).flatten()
    assert abs((y[1] - y[0]).item() - exact) > 5 * e2[-1]


def test_bad_order():
    s = get_schedule("linear", 100)
    with pytest.raises(ConfigError, match="UniPC is implemented for orders 1 to 3; got order=4"):
        sample_unipc(gaussian_model(s, 0.3, 0.2), torch.zeros(1, 1, 2, 2), s, 10, order=4)
