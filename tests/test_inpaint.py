"""RePaint (ddpm.sampling.inpaint): the jump schedule, the exact conditional law of a correlated
Gaussian data set, kept pixels bit for bit, and its reuse of the ancestral sampler's step."""

import pytest
import torch

from ddpm import GaussianDiffusion, Unet
from ddpm.analytic import (correlated_gaussian_conditional, correlated_gaussian_model, gaussian_model,
                           gaussian_model_exact_variance)
from ddpm.errors import ConfigError
from ddpm.sampling import sample_ancestral
from ddpm.sampling.inpaint import check_keep, model_evaluations, model_levels, repaint_schedule, sample_repaint
from ddpm.sampling.plan import make_plan
from ddpm.schedules import Schedule, get_schedule


def test_the_papers_jump_schedule():
    path = repaint_schedule(250, 10, 10)
    assert path[0] == 249 and path[-1] == -1 and len(path) == 4571  # the paper's 4,570 transitions
    assert all(abs(a - b) == 1 for a, b in zip(path, path[1:]))
    ups = [a for a, b in zip(path, path[1:]) if b > a]
    starts = [a for i, (a, b) in enumerate(zip(path, path[1:])) if b > a and (i == 0 or path[i - 1] > a)]
    assert sorted(set(starts)) == list(range(0, 240, 10))  # jump points: 0, 10, ..., 230 (never 240)
    assert all(starts.count(j) == 9 for j in range(0, 240, 10))  # each passed 10 times: 9 jumps back up
    assert len(ups) == 24 * 9 * 10
    assert model_evaluations(250, 10, 10) == 250 + 24 * 9 * 10 == 2410
    assert max(path) == 249 and min(path) == -1
    # one resampling per point is plain replacement: straight down, one model call per level
    assert repaint_schedule(50, 5, 1) == list(range(49, -2, -1)) and model_evaluations(50, 5, 1) == 50
    assert model_evaluations(50, 5, 5) == 50 + 9 * 4 * 5
    assert repaint_schedule(5, 2, 2) == [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert model_levels(5, 2, 2) == [4, 3, 4, 3, 2, 1, 2, 1, 0]


@pytest.mark.parametrize("args, message", [
    ((250, 250, 2), "jump_length 250 leaves no room to jump back on a chain of 250 steps"),
    ((0, 1, 1), "steps must be a positive integer; got 0"),
    ((10, 0, 2), "jump_length must be a positive integer; got 0"),
    ((10, 2, 1.5), "jump_n_sample must be a positive integer; got 1.5"),
])
def test_bad_schedules(args, message):
    with pytest.raises(ConfigError, match=message):
        repaint_schedule(*args)


def test_keep_masks():
    assert check_keep(torch.tensor([[1, 0], [0, 1]]), (3, 1, 2, 2)).dtype == torch.bool
    assert check_keep(torch.ones(1, 1, 2, 2, dtype=torch.bool), (3, 2, 2, 2)).shape == (3, 2, 2, 2)
    with pytest.raises(ConfigError, match="must hold only 0 .generate. and 1 .keep."):
        check_keep(torch.full((2, 2), 0.5), (1, 1, 2, 2))
    with pytest.raises(ConfigError, match=r"a keep mask of shape \[3, 3\] does not broadcast to the images' shape \[1, 1, 2, 2\]"):
        check_keep(torch.ones(3, 3), (1, 1, 2, 2))


S = get_schedule("cosine", 1000)
MEAN, SHARED, PIXEL = 0.1, 0.5, 0.2  # x_0 = MEAN + c 1 + e, c ~ N(0, SHARED^2), e ~ N(0, PIXEL^2 I)
TOP = torch.tensor([0.9, 0.45, 0.7, 0.55, 0.3, 0.6, 0.8, 0.5], dtype=torch.float64)  # the known top half


def _inpaint_top_half(steps, jump_length, jump_n_sample, n=1000, grid="quadratic"):
    """Mean and per-pixel std of the generated bottom half over n inpaintings of one 1x4x4 image."""
    keep = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :2, :] = True
    known = torch.zeros(n, 1, 4, 4, dtype=torch.float64)
    known[:, 0, :2, :] = TOP.reshape(2, 4)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64)
    out = sample_repaint(correlated_gaussian_model(S, MEAN, SHARED, PIXEL), x_T, S, steps, known=known, keep=keep,
                         jump_length=jump_length, jump_n_sample=jump_n_sample, grid=grid, clip=None, generator=g)
    assert torch.equal(out[:, :, :2], known[:, :, :2])
    bottom = out[:, 0, 2:, :].flatten(1)  # [n, 8]
    return bottom.mean().item(), bottom.std(0).mean().item()


def test_repaint_draws_the_exact_conditional_law_and_replacement_does_not():
    """The data's pixels share an offset, so the top half tells where the bottom half lies: given it,
    each bottom pixel is N(0.590, 0.212^2) (Sherman-Morrison, ``correlated_gaussian_conditional``).
    RePaint at the paper's setting (250 levels, jump length 10, 10 resamplings; on the quadratic grid)
    must land within 3% of the way from the prior mean (0.1) to it, and within 4% of its std. What is
    left is mostly the ancestral sampler's own: with fixed_small variances it draws too little noise
    (about -1% of std on N(0, 0.2^2) data at 250 steps), and resampling repeats that. Measured on
    1000 draws: RePaint -1.0% (standard error 0.6%) and -2.6%; plain replacement, the same chain
    without jumps, -16% and +13%; the fast setting 100 / 10 / 5 -0.9% and -0.8%."""
    exact_mean, exact_std = correlated_gaussian_conditional(TOP[None], MEAN, SHARED, PIXEL)
    exact_mean, exact_std = exact_mean.item(), exact_std.item()
    assert exact_mean == pytest.approx(0.1 + 0.25 * 4.0 / (0.04 + 8 * 0.25)) and exact_std == pytest.approx(0.2119, abs=1e-4)
    shift = exact_mean - MEAN

    mean, std = _inpaint_top_half(250, 10, 10)
    assert abs(mean - exact_mean) < 0.03 * shift, (mean, exact_mean)
    assert abs(std / exact_std - 1) < 0.04, (std, exact_std)

    mean, std = _inpaint_top_half(100, 10, 5)  # the fast setting: 460 model evaluations
    assert abs(mean - exact_mean) < 0.03 * shift and abs(std / exact_std - 1) < 0.04, (mean, std)

    mean, std = _inpaint_top_half(250, 10, 1)  # replacement: the generated half lags behind the kept one
    assert exact_mean - mean > 0.10 * shift and std / exact_std - 1 > 0.08, (mean, std)


def test_nothing_kept_and_no_resampling_is_the_ancestral_sampler_step_for_step():
    s = get_schedule("linear", 100)
    fn = gaussian_model(s, 0.2, 0.3)
    x_T = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []
    a = sample_repaint(fn, x_T, s, 20, known=torch.zeros_like(x_T), keep=torch.zeros(4, 4, dtype=torch.bool),
                       jump_length=5, jump_n_sample=1, grid="quadratic", generator=torch.Generator().manual_seed(2),
                       callback=lambda i, x, x0: calls.append(i))
    b = sample_ancestral(fn, x_T, s, 20, grid="quadratic", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and calls == list(range(20))


def test_through_the_facade_kept_pixels_are_bit_exact_and_guidance_composes():
    calls = []

    class Counting(Unet):
        def forward(self, x, time, classes=None):
            calls.append((x.shape[0], None if classes is None else classes.tolist()))
            return super().forward(x, time, classes)

    torch.manual_seed(0)
    diffusion = GaussianDiffusion(Counting(dim=8, dim_mults=(1, 2), channels=1, num_classes=3), 8, timesteps=50)
    images = torch.rand(2, 1, 8, 8)
    images[0, 0, 0, :3] = torch.tensor([1e-8, 0.1, 1.0])  # values that (2x - 1 + 1) / 2 would not give back
    keep = torch.zeros(8, 8)
    keep[:4] = 1
    seen = []
    out = diffusion.inpaint(images, keep, steps=10, jump_length=3, jump_n_sample=2, classes=[2, 0], guidance_scale=3.0,
                            generator=torch.Generator().manual_seed(0), callback=lambda i, x, x0: seen.append(i))
    assert torch.equal(out[:, :, :4], images[:, :, :4]) and out.shape == images.shape
    assert not torch.equal(out[:, :, 4:], images[:, :, 4:]) and 0 <= out.min() and out.max() <= 1
    n = model_evaluations(10, 3, 2)
    assert seen == list(range(n))
    assert calls == [(4, [2, 0, 3, 3])] * n  # conditional and null labels in one batch, every model step
    again = diffusion.inpaint(images, keep, steps=10, jump_length=3, jump_n_sample=2, classes=[2, 0], guidance_scale=3.0,
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the same generator, the same images
    with pytest.raises(ConfigError, match="keeps every pixel, which leaves nothing to inpaint"):
        diffusion.inpaint(images, torch.ones(8, 8))
    with pytest.raises(ConfigError, match="keeps nothing"):
        diffusion.inpaint(images, torch.zeros(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="guidance_scale needs class labels"):
        diffusion.inpaint(images, keep, guidance_scale=2.0)
    with pytest.raises(ConfigError, match=r"images must be floats in \[0, 1\]; got values from"):
        diffusion.inpaint(images * 255, keep)


# ---- fidelity on closed-form data (issue 28, item 6) ----------------------------------------------
# For Gaussian data x_0 ~ N(mu, Sigma) with the exact denoiser every move of RePaint is linear-Gaussian,
# so the law of its output is Gaussian and _repaint_law computes it exactly by carrying the mean and
# covariance of x through the walk; no sampling noise. The Monte Carlo tests check sample_repaint
# against it, and the law itself separates the reverse step's variance (a sampler setting) from the
# method's own approximation.

LINEAR = get_schedule("linear", 1000)


def _repaint_law(schedule, mu, cov, keep, known, steps=250, jump_length=10, jump_n_sample=10, variance="fixed_small"):
    """Mean [U] and covariance [U, U] of the generated pixels of RePaint's output (x_T ~ N(0, I),
    uniform grid) for data N(mu [D], cov [D, D]), the pixels ``keep`` [D] kept at ``known`` [D].
    ``variance``: fixed_small, fixed_large, or "exact" (the true reverse covariance of each step,
    beta-tilde I + c1^2 Cov(x_0 | x_k), what no per-pixel variance can beat)."""
    dim, eye = len(mu), torch.eye(len(mu), dtype=torch.float64)
    ab = list(make_plan(schedule, steps, "uniform").alpha_bars[:-1][::-1])
    chain = Schedule.from_alpha_bars(ab)
    m, c = torch.zeros(dim, dtype=torch.float64), eye.clone()
    path = repaint_schedule(steps, jump_length, jump_n_sample)
    for k, k_next in zip(path, path[1:]):
        if k_next > k:  # x_{k+1} = sqrt(1 - beta) x_k + sqrt(beta) z
            beta = float(chain.betas[k_next])
            m, c = (1 - beta) ** 0.5 * m, (1 - beta) * c + beta * eye
            continue
        a, s2 = ab[k] ** 0.5, 1 - ab[k]
        m = torch.where(keep, a * known, m)  # kept pixels: fresh draws of q(x_k | x_0), independent of the rest
        c = torch.where(keep[:, None] | keep[None, :], 0.0, c) + torch.diag(torch.where(keep, s2, 0.0))
        gain = a * cov @ torch.linalg.inv(a * a * cov + s2 * eye)  # E[x_0 | x_k] = mu + gain (x_k - a mu)
        lin = float(chain.posterior_mean_coef1[k]) * gain + float(chain.posterior_mean_coef2[k]) * eye
        m, c = lin @ m + float(chain.posterior_mean_coef1[k]) * (mu - a * gain @ mu), lin @ c @ lin.T
        if k > 0:  # the last step returns the posterior mean
            if variance == "exact":
                c = c + chain.posterior_variance[k] * eye + chain.posterior_mean_coef1[k] ** 2 * (cov - a * gain @ cov)
            else:
                c = c + (chain.posterior_log_variance_clipped[k].exp() if variance == "fixed_small" else chain.betas[k]) * eye
    gen = ~keep
    return m[gen], c[gen][:, gen]


def _conditional(mu, cov, keep, known):
    """The exact conditional N(mean [U], cov [U, U]) of the generated pixels given the kept ones."""
    gen = ~keep
    s_gk, s_kk = cov[gen][:, keep], cov[keep][:, keep]
    return (mu[gen] + s_gk @ torch.linalg.solve(s_kk, known[keep] - mu[keep]),
            cov[gen][:, gen] - s_gk @ torch.linalg.solve(s_kk, s_gk.T))


def _std_ratio(law, target):
    return (law[1].diagonal().sqrt() / target[1].diagonal().sqrt()).mean().item()


IND_MEAN, IND_STD = 0.1, 0.2  # independent pixels: the generated ones must come out N(0.1, 0.2^2), whatever is kept
KEEP4 = torch.tensor([True, True, False, False])


def test_the_law_of_repaint_on_gaussian_data_separates_the_variance_setting_from_the_method():
    """Independent pixels: the kept ones say nothing about the rest, so exact inpainting is the
    marginal N(0.1, 0.2^2). With the true reverse variance RePaint's jumps, replacement and last
    step give it (-0.12%: the last step's Var(x_0 | x at t = 0), left out as in the paper's code);
    with fixed_small (beta-tilde, Ho et al.'s lower end) every reverse step draws too little noise,
    already in the plain ancestral sampler (-6.1% on this chain), and the 9 extra passes of the jumps
    repeat it (-8.6%); fixed_large errs the other way (+1.2%). Correlated pixels: even with the true
    reverse covariance RePaint is only approximately the conditional (mean 2.6% short of the way,
    std +3.7%): that part is the method's own (its fresh draws of the kept pixels, eq. 8)."""
    mu, cov = torch.full((4,), IND_MEAN, dtype=torch.float64), IND_STD**2 * torch.eye(4, dtype=torch.float64)
    known = torch.tensor([0.6, 0.6, 0.0, 0.0], dtype=torch.float64)
    target = _conditional(mu, cov, KEEP4, known)
    assert torch.allclose(target[0], mu[2:]) and torch.allclose(target[1], cov[2:, 2:])
    ratio = {(jumps, var): _std_ratio(_repaint_law(LINEAR, mu, cov, KEEP4, known, jump_n_sample=jumps, variance=var), target)
             for jumps in (1, 10) for var in ("exact", "fixed_small", "fixed_large")}
    assert ratio[1, "exact"] == pytest.approx(0.9988, abs=5e-4) and ratio[10, "exact"] == pytest.approx(0.9988, abs=5e-4)
    assert ratio[1, "fixed_small"] == pytest.approx(0.9387, abs=1e-3) and ratio[10, "fixed_small"] == pytest.approx(0.9144, abs=1e-3)
    assert ratio[1, "fixed_large"] == pytest.approx(1.0226, abs=1e-3) and ratio[10, "fixed_large"] == pytest.approx(1.0119, abs=1e-3)

    cov = 0.04 * torch.eye(4, dtype=torch.float64) + 0.25  # x_0 = mu + c 1 + e as correlated_gaussian_model(.., 0.5, 0.2)
    known = torch.tensor([0.6, 0.5, 0.0, 0.0], dtype=torch.float64)
    target = _conditional(mu, cov, KEEP4, known)
    shift = (target[0] - mu[2:]).mean().item()
    for jumps, variance, mean_lag, std_ratio in [(10, "exact", 0.026, 1.037), (10, "fixed_small", 0.026, 0.9545),
                                                 (10, "fixed_large", 0.026, 1.045), (1, "exact", 0.281, 1.235)]:
        law = _repaint_law(LINEAR, mu, cov, KEEP4, known, jump_n_sample=jumps, variance=variance)
        assert (target[0] - law[0]).mean().item() / shift == pytest.approx(mean_lag, abs=1e-3), (jumps, variance)
        assert _std_ratio(law, target) == pytest.approx(std_ratio, abs=1e-3), (jumps, variance)


def _repaint_independent(n, variance_type, seed=0):
    """The generated half [n, 4] of n 1x2x4 images of independent N(0.1, 0.2^2) pixels, top row kept,
    by RePaint at the paper's setting on the linear schedule."""
    keep = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    keep[..., 0, :] = True
    known = torch.zeros(n, 1, 2, 4, dtype=torch.float64)
    known[:, :, 0] = torch.tensor([0.6, -0.3, 0.1, 0.9], dtype=torch.float64)  # any values: they say nothing
    if variance_type == "learned_range":  # what a perfectly trained learned-variance network gives
        fn = gaussian_model_exact_variance(LINEAR, IND_MEAN, IND_STD, make_plan(LINEAR, 250, "uniform").times)
    else:
        fn = gaussian_model(LINEAR, IND_MEAN, IND_STD)
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, 1, 2, 4, generator=g, dtype=torch.float64)
    out = sample_repaint(fn, x_T, LINEAR, known=known, keep=keep, variance_type=variance_type, clip=None, generator=g)
    assert torch.equal(out[:, :, 0], known[:, :, 0])
    return out[:, 0, 1]


def test_with_exact_reverse_steps_repaint_keeps_the_marginal_of_independent_pixels():
    """The part of RePaint that is ours (jump schedule, eq. 9's forward steps on the respaced chain,
    the kept pixels' draws, the last step) is exact here: 16,000 generated pixels have the marginal's
    mean within 4 standard errors and its std within 2.5% (standard error 0.56%)."""
    gen = _repaint_independent(4000, "learned_range")
    assert abs(gen.mean().item() - IND_MEAN) < 4 * IND_STD / 16000**0.5, gen.mean()
    assert abs(gen.std(0).mean().item() / IND_STD - 1) < 0.025, gen.std(0)


def test_with_fixed_small_variances_repaint_is_as_narrow_as_its_law_says():
    """The default reverse variance (fixed_small) narrows the generated pixels to 0.914 of the
    marginal's std (``_repaint_law``); sample_repaint draws exactly that, and the mean stays right."""
    gen = _repaint_independent(4000, "fixed_small", seed=1)
    assert abs(gen.mean().item() - IND_MEAN) < 4 * IND_STD / 16000**0.5, gen.mean()
    assert abs(gen.std(0).mean().item() / IND_STD - 0.9144) < 0.025, gen.std(0)


def test_correlated_pixels_at_the_papers_setting_on_the_uniform_grid():
    """Strongly correlated pixels (correlation 0.86), half kept, default settings (250 uniform levels of
    the linear schedule, jump length 10, 10 passes, fixed_small): the generated half's mean within
    4 standard errors of the law's, 2.6% of the way short of the exact conditional mean, and its std
    within 3% of the law's 0.9545 of the conditional's (standard error about 0.7%)."""
    n = 6000
    keep = torch.tensor([[True, True], [False, False]])
    known = torch.zeros(n, 1, 2, 2, dtype=torch.float64)
    known[:, 0, 0] = torch.tensor([0.6, 0.5], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64)
    out = sample_repaint(correlated_gaussian_model(LINEAR, IND_MEAN, 0.5, 0.2), x_T, LINEAR, known=known, keep=keep,
                         clip=None, generator=g)
    gen = out[:, 0, 1]
    exact_mean, exact_std = correlated_gaussian_conditional(known[:1, 0, 0], IND_MEAN, 0.5, 0.2)
    mu, cov = torch.full((4,), IND_MEAN, dtype=torch.float64), 0.04 * torch.eye(4, dtype=torch.float64) + 0.25
    law_mean, law_cov = _repaint_law(LINEAR, mu, cov, KEEP4, known[0].flatten())
    assert abs(gen.mean().item() - law_mean.mean().item()) < 4 * exact_std.item() / n**0.5
    assert law_mean.mean().item() == pytest.approx(exact_mean.item() - 0.026 * (exact_mean.item() - IND_MEAN), abs=1e-3)
    ratio = gen.std(0).mean().item() / exact_std.item()
    assert abs(ratio - law_cov.diagonal().sqrt().mean().item() / exact_std.item()) < 0.03, ratio
