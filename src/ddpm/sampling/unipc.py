"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models"), the B(h) = e^h - 1 variant ("bh2") in the data prediction x0_hat, as
DPM-Solver++ uses it.

With lambda = log(alpha / sigma), step i goes from lambda_i to lambda_{i+1}, h = lambda_{i+1} -
lambda_i, and earlier predictions enter through r_k = (lambda_{i-k} - lambda_i) / h and
D_k = (x0_{i-k} - x0_i) / r_k. The predictor UniP-p (Zhao et al. eq. 8 with data prediction,
Algorithm 2 / B.2) is

    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^-h - 1) x0_i - alpha_{i+1} B(h) sum_k rho_k D_k,

with rho solving sum_k rho_k r_k^(j-1) = b_j for j = 1..p-1 (rho = 1/2 at p = 2, the paper's
simplification), b_j = j! (-h) phi_{j+1}(-h) / B(h), phi_1(z) = (e^z - 1) / z and
phi_{j+1}(z) = (phi_j(z) - 1/j!) / z. The corrector UniC-p reuses the model's evaluation at the
predicted x_{i+1} (no extra model call): the same formula with D_p = x0_{i+1} - x0_i (r_p = 1)
added and rho solving the conditions for j = 1..p, which makes the corrected step exact for
x0_hat(lambda) a polynomial of degree p, one order above its predictor (Zhao et al. Theorem 3.3).
Every coefficient depends only on the grid and is computed in Python floats before the loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .common import Callback, lambda_steps
from .denoiser import Denoiser
from .plan import Plan
from .public import public_sampler

Step = tuple[float, tuple[float, ...]]
"""(c_x, c_m): x_next = c_x x + sum_j c_m[j] x0_hat_{i-j} (c_m[0] multiplies the newest)."""


def _b(h: float, p: int) -> list[float]:
    """b_1..b_p for a step of length h in lambda (B(h) = e^-h - 1 in the data prediction)."""
    hh = -h
    b_h = math.expm1(hh)
    g = b_h / hh - 1.0  # hh phi_2(hh)
    out, fact = [], 1.0
    for j in range(1, p + 1):
        out.append(g * fact / b_h)
        fact *= j + 1
        g = g / hh - 1.0 / fact  # hh phi_{j+2}(hh)
    return out


def _update(alpha_t: float, h: float, rks: list[float], rho: list[float]) -> list[float]:
    """Coefficients of x0_i, x0_{i-1}, ... in -alpha_t (e^-h - 1) x0_i - alpha_t B(h) sum_k rho_k D_k,
    D_k = (x0_{i-k} - x0_i) / r_k."""
    b_h = math.expm1(-h)
    c = [-alpha_t * b_h] + [0.0] * len(rks)
    for k, (r, w) in enumerate(zip(rks, rho)):
        c[0] += alpha_t * b_h * w / r
        c[k + 1] -= alpha_t * b_h * w / r
    return c


def unipc_coefficients(
    alpha_bars_visited: list[float], order: int, lower_order_final: bool = True, end: float = 1.0
) -> list[tuple[Step, tuple[float, tuple[float, ...], float] | None]]:
    """Per step i, the predictor (c_x, c_m) with x_{i+1} = c_x x_i + sum_j c_m[j] x0_{i-j}, and the
    corrector that follows once x0_{i+1} is known: (c_x, c_m, c_new) with x_{i+1} = c_x x_i +
    sum_j c_m[j] x0_{i-j} + c_new x0_{i+1} (None after the last step: no model call follows).

    Step i has order min(order, usable predictions so far, and n - i with ``lower_order_final``);
    a step to clean data (lambda = +inf) or of zero length is first order, as in
    :mod:`ddpm.sampling.dpm_solver`; the corrector of a step has that step's order.
    """
    if order not in (1, 2, 3):
        raise ConfigError(f"UniPC is implemented for orders 1 to 3; got order={order!r}")
    lam, steps = lambda_steps(alpha_bars_visited, end)
    n = len(alpha_bars_visited)
    table = []
    for i, (alpha_t, sigma_t, sigma_s, h) in enumerate(steps):
        if h == 0:  # a zero-length step (t = 0 to alpha_bar_0): x stays
            table.append(((1.0, (0.0,)), None if i == n - 1 else (1.0, (0.0,), 0.0)))
            continue
        usable = sum(1 for j in range(i + 1) if lam[j] > -math.inf)
        p = max(1, min(order, usable, n - i if lower_order_final else order))
        if lam[i + 1] == math.inf:
            p = 1
        c_x = sigma_t / sigma_s
        rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)]
        b = _b(h, p) if math.isfinite(h) else []
        if p == 1:
            rho_p: list[float] = []
        elif p == 2:
            rho_p = [0.5]  # the bh2 simplification (Zhao et al. appendix)
        else:
            rmat = np.array([[r**j for r in rks] for j in range(p - 1)])
            rho_p = np.linalg.solve(rmat, np.array(b[: p - 1])).tolist()
        predictor = (c_x, tuple(_update(alpha_t, h, rks, rho_p)))
        corrector = None
        # no corrector after the last step (no model call follows) nor after a step from zero SNR,
        # whose predictor is already the exact limit alpha x0_hat + sigma x_T (and a polynomial in
        # lambda over an infinite step means nothing)
        if i < n - 1 and lam[i] > -math.inf:
            if p == 1:
                rho_c = [0.5]
            else:
                full = rks + [1.0]
                rmat = np.array([[r**j for r in full] for j in range(p)])
                rho_c = np.linalg.solve(rmat, np.array(b)).tolist()
            c = _update(alpha_t, h, rks, rho_c[:-1])
            b_h = math.expm1(-h)
            c[0] += alpha_t * b_h * rho_c[-1]  # the new point's D = x0_{i+1} - x0_i (r = 1)
            corrector = (c_x, tuple(c), -alpha_t * b_h * rho_c[-1])
        table.append((predictor, corrector))
    return table


@torch.inference_mode()
def run_unipc(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, order: int = 2, lower_order_final: bool = True,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> Tensor:
    """x [B, C, H, W] at ``plan.times[0]`` -> x_0 by UniPC-bh2 of ``order`` over the plan (see
    :func:`sample_unipc`; ``generator`` is unused)."""
    ab = plan.alpha_bars
    table = unipc_coefficients(ab[:-1], order, lower_order_final, end=ab[-1])
    history: list[Tensor] = []  # x0_hat, newest first
    x_before = x
    for i, t in enumerate(plan.times):
        x0, _, _ = denoiser(x, t, ab[i])
        if i > 0 and table[i - 1][1] is not None:  # correct the step that led here (UniC)
            c_x, c_m, c_new = table[i - 1][1]
            x = c_x * x_before + c_new * x0
            for c, m in zip(c_m, history):
                x = x + c * m
        if callback is not None:
            callback(i, x, x0)
        history = [x0, *history[: order - 1]]
        c_x, c_m = table[i][0]
        x_before = x
        x = c_x * x
        for c, m in zip(c_m, history):
            x = x + c * m
    return x


sample_unipc = public_sampler("sample_unipc", run_unipc, grid="tapered", own={"order": 2, "lower_order_final": True}, doc="""x_T [B, C, H, W] (x at the first visited time) -> x_0 [B, C, H, W] by UniPC-bh2 of ``order``
    (2 or 3; 1 is DDIM with a trapezoid corrector). One model call per step; deterministic
    (``generator`` is unused); a learned variance is ignored. Common settings: :mod:`ddpm.sampling.common`.
    """)
