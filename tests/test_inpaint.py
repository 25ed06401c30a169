"""RePaint (ddpm.sampling.inpaint): the jump schedule, the exact conditional law of a correlated
Gaussian data set, kept pixels bit for bit, and its reuse of the ancestral sampler's step."""

import pytest
import torch

from ddpm import GaussianDiffusion, Unet
from ddpm.analytic import correlated_gaussian_conditional, correlated_gaussian_model, gaussian_model
from ddpm.errors import ConfigError
from ddpm.sampling import sample_ancestral
from ddpm.sampling.inpaint import check_keep, model_evaluations, model_levels, repaint_schedule, sample_repaint
from ddpm.schedules import get_schedule


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
