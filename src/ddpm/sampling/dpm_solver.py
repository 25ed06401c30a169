"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models"): the probability-flow ODE solved in the data prediction x0_hat.

With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) and lambda = log(alpha / sigma), the
ODE's exact solution from lambda_s to lambda_t (h = lambda_t - lambda_s) is (Lu et al. eq. 9)

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0_hat(lambda) dlambda.

Expanding x0_hat in a Taylor series around lambda_s and integrating term by term gives

    x_t = (sigma_t / sigma_s) x_s - alpha_t phi_1 x0 + alpha_t h phi_2 x0' - alpha_t h^2 phi_3 x0''

with phi_1 = expm1(-h), phi_2 = phi_1 / h + 1, phi_3 = phi_2 / h - 1/2; the multistep methods
estimate the derivatives from earlier predictions. Every coefficient depends only on the grid,
so the whole table is computed in Python floats before the loop.

SDE-DPM-Solver++(2M) (Lu et al. 2022, section 5 and appendix) solves the reverse SDE instead,
which adds fresh noise each step and so corrects part of the network's error, as ancestral
sampling does, where the ODE carries it to the end:

    x_t = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) D + sigma_t sqrt(1 - e^-2h) z,

with D = x0_hat_s first order (then exactly the DDPM posterior q(x_t | x_s, x0_hat) of the
respaced chain, i.e. DDIM with eta = 1) and D = (1 + 1/2r) x0_s - 1/2r x0_prev second order.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from .common import Callback, lambda_steps
from .denoiser import Denoiser
from .plan import Plan
from .public import public_sampler

LOWER_ORDER_FINAL_BELOW = 15
"""With fewer steps than this the final steps drop order (``lower_order_final``), as the
reference implementation does: extrapolating over the few huge last steps is unstable."""


def _step_order(i: int, n: int, order: int, lam: list[float], lower_order_final: bool) -> int:
    """The order of step i of n: at most ``order`` and the number of usable predictions so far
    (those at lambda > -inf), first order on a step to clean data (lambda = +inf, where every
    order's formula reduces to x0_hat) or of zero length, and with ``lower_order_final`` and fewer
    than 15 steps at most n - i."""
    if lam[i + 1] == math.inf or lam[i + 1] == lam[i]:
        return 1
    usable = sum(1 for j in range(i + 1) if lam[j] > -math.inf)
    k = max(1, min(order, usable))
    return min(k, n - i) if lower_order_final and n < LOWER_ORDER_FINAL_BELOW else k


def _ordered_steps(alpha_bars_visited: list[float], end: float, order: int, lower_order_final: bool
                   ) -> tuple[list[float], list[tuple[int, int, float, float, float, float]]]:
    """lambda at every level and, per step i, (i, its order, alpha_t, sigma_t, sigma_s, h) (see
    :func:`~ddpm.sampling.common.lambda_steps`): the walk the ODE's and the SDE's tables share."""
    lam, steps = lambda_steps(alpha_bars_visited, end)
    n = len(steps)
    return lam, [(i, _step_order(i, n, order, lam, lower_order_final), *step) for i, step in enumerate(steps)]


def multistep_coefficients(
    alpha_bars_visited: list[float], order: int, lower_order_final: bool = True, end: float = 1.0
) -> list[tuple[float, tuple[float, ...]]]:
    """Per step i, (c_x, c_m) with x_{i+1} = c_x x_i + sum_j c_m[j] x0_hat_{i-j}.

    ``alpha_bars_visited`` lists alpha_bar at the visited timesteps in sampling order (noisiest
    first); step i goes from entry i to entry i + 1, the last step to alpha_bar = ``end`` (1: clean
    data, where every order's formula reduces to x_0 = x0_hat, so it is taken first order; a step
    of zero length, as from t = 0 to ``end`` = alpha_bar_0, leaves x as it is). Step i uses order
    min(order, i + 1): the first step is first order, the second at most second order, ...; with
    ``lower_order_final`` and fewer than 15 steps, also at most n - i near the end. A prediction at
    zero SNR (lambda = -inf) is never used for a derivative: its step is infinitely
    long, and its first-order update alpha_t x0_hat + sigma_t x_T is the exact limit.
    """
    lam, steps = _ordered_steps(alpha_bars_visited, end, order, lower_order_final)
    table = []
    for i, k, alpha_t, sigma_t, sigma_s, h in steps:
        if h == 0:
            table.append((1.0, (0.0,)))
            continue
        phi_1 = math.expm1(-h)
        c_x = sigma_t / sigma_s
        if k == 1:  # DDIM (Lu et al. eq. 10)
            c_m: tuple[float, ...] = (-alpha_t * phi_1,)
        elif k == 2:  # Lu et al. Algorithm 2: D = (1 + 1/2r) x0_i - 1/2r x0_{i-1}
            r = (lam[i] - lam[i - 1]) / h
            c_m = (-alpha_t * phi_1 * (1.0 + 0.5 / r), alpha_t * phi_1 * 0.5 / r)
        else:  # third order: h x0' and h^2 x0'' from divided differences of three predictions
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            d10 = (1.0 / r0, -1.0 / r0, 0.0)  # (x0_i - x0_{i-1}) / r0 ~ h x0' - h h_0 x0'' / 2
            d11 = (0.0, 1.0 / r1, -1.0 / r1)
            dd = tuple((a - b) / (r0 + r1) for a, b in zip(d10, d11))  # ~ h^2 x0'' / 2
            d1 = tuple(a + r0 * b for a, b in zip(d10, dd))  # ~ h x0'
            # dd is HALF of h^2 x0'', hence the 2 below; with a 1 there (as in some implementations)
            # the step is only second-order accurate (tests: exact on quadratics, error ~ h^3)
            c_m = tuple(
                -alpha_t * phi_1 * (j == 0) + alpha_t * phi_2 * d1[j] - 2.0 * alpha_t * phi_3 * dd[j]
                for j in range(3)
            )
        table.append((c_x, c_m))
    return table


def sde_coefficients(alpha_bars_visited: list[float], order: int = 2, lower_order_final: bool = True,
                     end: float = 1.0) -> list[tuple[float, tuple[float, ...], float]]:
    """Per step i, (c_x, c_m, c_z) with x_{i+1} = c_x x_i + sum_j c_m[j] x0_hat_{i-j} + c_z z,
    z ~ N(0, I), for SDE-DPM-Solver++ of order 1 or 2; the steps' orders follow the same rules as
    :func:`multistep_coefficients`. A last step to alpha_bar = 1 returns x0_hat, noiseless."""
    if order not in (1, 2):
        raise ValueError(f"SDE-DPM-Solver++ has orders 1 and 2; got {order}")
    lam, steps = _ordered_steps(alpha_bars_visited, end, order, lower_order_final)
    table = []
    for i, k, alpha_t, sigma_t, sigma_s, h in steps:
        if h == 0:
            table.append((1.0, (0.0,), 0.0))
            continue
        keep = -math.expm1(-2.0 * h)  # 1 - e^-2h: the share of x_t that is new (data and noise)
        c_x = sigma_t / sigma_s * math.exp(-h)
        if k == 1:
            c_m: tuple[float, ...] = (alpha_t * keep,)
        else:
            r = (lam[i] - lam[i - 1]) / h
            c_m = (alpha_t * keep * (1.0 + 0.5 / r), -alpha_t * keep * 0.5 / r)
        table.append((c_x, c_m, sigma_t * math.sqrt(keep)))
    return table


@torch.inference_mode()
def run_multistep(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, order: int, lower_order_final: bool = True, stochastic: bool = False,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> Tensor:
    """x [B, C, H, W] at ``plan.times[0]`` -> x_0 by the DPM-Solver++ ODE solver of ``order`` or,
    with ``stochastic``, the SDE solver (noise from ``generator``); a learned variance is ignored."""
    ab = plan.alpha_bars
    if stochastic:
        table = sde_coefficients(ab[:-1], order, lower_order_final, end=ab[-1])
    else:
        table = [(c_x, c_m, 0.0) for c_x, c_m in multistep_coefficients(ab[:-1], order, lower_order_final, end=ab[-1])]
    history: list[Tensor] = []  # x0_hat of the latest steps, newest first
    for i, (t, (c_x, c_m, c_z)) in enumerate(zip(plan.times, table)):
        x0, _, _ = denoiser(x, t, ab[i])
        if callback is not None:
            callback(i, x, x0)
        history = [x0, *history[: order - 1]]
        x = c_x * x
        for c, m in zip(c_m, history):
            x = x + c * m
        if c_z > 0:  # a Python float: no device sync; zero for the ODE and on a last step to clean data
            x = x + c_z * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


run_dpmpp_2m = partial(run_multistep, order=2)
run_dpmpp_3m = partial(run_multistep, order=3)
run_dpmpp_2m_sde = partial(run_multistep, order=2, stochastic=True)
OWN = {"lower_order_final": True}

sample_dpmpp_2m = public_sampler("sample_dpmpp_2m", run_dpmpp_2m, grid="tapered", own=OWN, doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by DPM-Solver++(2M)
    (Lu et al. Algorithm 2). Deterministic (``generator`` is unused); one model call per step; a
    learned variance is ignored. Common settings: :mod:`ddpm.sampling.common`; ``lower_order_final``:
    below 15 steps the last steps drop to the orders that are left, as the reference code does.""")

sample_dpmpp_3m = public_sampler("sample_dpmpp_3m", run_dpmpp_3m, grid="tapered", own=OWN, doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by third-order multistep
    DPM-Solver++. Warms up with a first- and a second-order step; deterministic; a learned variance
    is ignored. Settings as for :func:`sample_dpmpp_2m`.""")

sample_dpmpp_2m_sde = public_sampler("sample_dpmpp_2m_sde", run_dpmpp_2m_sde, grid="tapered", own=OWN, doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by SDE-DPM-Solver++(2M)
    (Lu et al. 2022). Stochastic: fresh noise from ``generator`` every step but a last one to clean
    data; one model call per step; a learned variance is ignored. Settings as for
    :func:`sample_dpmpp_2m`.""")
