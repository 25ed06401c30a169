"""The sampler core (ddpm.sampling.denoiser, plan, public, settings): the Denoiser against the
closed forms of ddpm.diffusion, the Plan against the grids, the default-steps rule, and the public
wrappers against the cores they wrap, bit for bit."""

import inspect
import math

import pytest
import torch

from ddpm import diffusion as D
from ddpm.config import SampleConfig
from ddpm.runs.settings import sample_settings
from ddpm.sampling import (CORES, DEFAULT_GRIDS, DEFAULT_STEPS, SAMPLERS, Denoiser, Plan, make_plan, plan_for,
                           run_repaint, run_sampler, sample, sample_repaint, sampling_times, steps_and_grid)
from ddpm.schedules import get_schedule

S = get_schedule("cosine", 100)
W = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=torch.float64)


def model(x, t):
    return torch.tanh(torch.einsum("oc,bchw->bohw", W, x) + 0.01 * t.double()[:, None, None, None])


@pytest.mark.parametrize("steps, grid, timesteps, t_start, final", [
    (10, "uniform", None, None, "clean"),
    (7, "quadratic", None, 40, "t0"),
    (None, "trailing", None, 12, "clean"),
    (5, "karras-sigmas", None, 60.5, "t0"),
    (6, "lu-lambdas", None, None, "clean"),
    (None, "uniform", [0, 20.5, 50, 99], None, "t0"),
    (4, "tapered", None, 99, "clean"),
])
def test_plan_is_the_grid_and_its_noise_levels(steps, grid, timesteps, t_start, final):
    plan = make_plan(S, steps, grid, timesteps, t_start, final)
    times = sampling_times(S, steps, grid, timesteps, t_start)
    assert plan.times == tuple(times) and len(plan) == len(times)
    want = [S.alpha_bar_at(float(t)).item() for t in times] + [1.0 if final == "clean" else S.alphas_cumprod[0].item()]
    assert plan.alpha_bars == tuple(want) and plan.end == want[-1]


@pytest.mark.parametrize("sampler, steps, grid, t_start, want", [
    ("ancestral", None, None, None, (100, "quadratic")),
    ("ddim", None, None, None, (50, "quadratic")),
    ("dpm++2m", None, None, 30, (20, "tapered")),
    ("ddim", None, "uniform", 30, (31, "uniform")),  # capped at the whole timesteps up to t_start
    ("ddim", None, "lu-lambdas", 30.5, (50, "lu-lambdas")),  # a fractional grid is not capped
    ("unipc3", 7, None, 3, (7, "tapered")),  # steps given are kept (the grid refuses them)
])
def test_steps_and_grid_fill_in_the_defaults(sampler, steps, grid, t_start, want):
    assert steps_and_grid(sampler, steps, grid, 100, t_start=t_start) == want
    assert DEFAULT_GRIDS[sampler] == steps_and_grid(sampler, None, None, 100)[1]


def test_steps_and_grid_prefer_the_facades_own_default():
    assert steps_and_grid("ddim", None, None, 100, default_steps=12) == (12, "quadratic")
    assert steps_and_grid("ddim", None, None, 100, t_start=5, default_steps=12) == (6, "quadratic")


def test_plan_for_a_sample_config():
    sc = SampleConfig(sampler="ddim", steps=0, grid="", final="t0")
    plan = plan_for(S, sc, t_start=40)
    assert plan == make_plan(S, min(DEFAULT_STEPS["ddim"], 41), "quadratic", t_start=40, final="t0")
    assert plan_for(S, SampleConfig(sampler="dpm++2m", steps=8, grid="uniform")) == make_plan(S, 8, "uniform")


@pytest.mark.parametrize("objective", ["pred_noise", "pred_x0", "pred_v"])
def test_denoiser_matches_the_closed_forms(objective):
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    t = 37
    tt = torch.full((3,), t)
    out = model(x, tt)
    x0, eps, var = Denoiser(model, objective, clip=None)(x, t, S.alphas_cumprod[t].item())
    if objective == "pred_noise":
        want_x0, want_eps = D.x0_from_eps(S, x, tt, out), out
    elif objective == "pred_x0":
        want_x0, want_eps = out, D.eps_from_x0(S, x, tt, out)
    else:
        want_x0, want_eps = D.x0_from_v(S, x, tt, out), D.eps_from_v(S, x, tt, out)
    torch.testing.assert_close(x0, want_x0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eps, want_eps, rtol=1e-12, atol=1e-12)
    assert var is None
    torch.testing.assert_close(torch.stack(D.x0_and_eps(S, objective, out, x, tt)), torch.stack([want_x0, want_eps]),
                               rtol=1e-12, atol=1e-12)


def test_denoiser_clips_and_rederives_eps_unless_told_not_to():
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    ab = S.alphas_cumprod[5].item()
    raw_x0, raw_eps, _ = Denoiser(model, "pred_noise", clip=None)(x, 5, ab)
    x0, eps, _ = Denoiser(model, "pred_noise", clip="static")(x, 5, ab)
    assert torch.equal(x0, raw_x0.clamp(-1, 1)) and x0.abs().max() <= 1
    torch.testing.assert_close(eps, (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab))
    _, kept, _ = Denoiser(model, "pred_noise", clip="static", clipped_eps=False)(x, 5, ab)
    assert torch.equal(kept, raw_eps)


def test_denoiser_checks_its_settings_when_made():
    from ddpm import ConfigError

    with pytest.raises(ConfigError, match="unknown objective"):
        Denoiser(model, "pred_eps")
    with pytest.raises(ConfigError, match="threshold_max must be positive"):
        Denoiser(model, clip="dynamic", threshold_max=0.0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_public_samplers_are_their_cores_bit_for_bit(name):
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = dict(eta=0.4) if name == "ddim" else {}
    public = SAMPLERS[name](model, x_T, S, 6, t_start=70, final="t0", clip="dynamic", objective="pred_v",
                            generator=torch.Generator().manual_seed(3), **kw)
    denoiser = Denoiser(model, "pred_v", clip="dynamic")
    plan = make_plan(S, 6, DEFAULT_GRIDS[name], t_start=70, final="t0")
    core = CORES[name](denoiser, x_T, plan, generator=torch.Generator().manual_seed(3), **kw)
    by_name = run_sampler(name, denoiser, x_T, plan, generator=torch.Generator().manual_seed(3), **kw)
    via_sample = sample(name, model, x_T, S, 6, t_start=70, final="t0", clip="dynamic", objective="pred_v",
                        generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(public, core) and torch.equal(public, by_name) and torch.equal(public, via_sample)


def test_repaint_wrapper_is_its_core_bit_for_bit():
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    known = torch.zeros_like(x_T)
    keep = torch.arange(4)[None, None, :, None].expand(1, 1, 4, 4) < 2
    public = sample_repaint(model, x_T, S, 12, known=known, keep=keep, jump_length=3, jump_n_sample=2,
                            generator=torch.Generator().manual_seed(5))
    core = run_repaint(Denoiser(model), x_T, make_plan(S, 12, "uniform"), known=known, keep=keep, jump_length=3,
                       jump_n_sample=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(public, core)


def test_public_signatures_are_one_signature():
    common = list(inspect.signature(SAMPLERS["ancestral"]).parameters.values())
    for name, fn in SAMPLERS.items():
        params = inspect.signature(fn).parameters
        assert list(params.values())[: len(common)] == [p.replace(default=params[p.name].default) for p in common]
        assert params["grid"].default == DEFAULT_GRIDS[name]
    assert list(inspect.signature(SAMPLERS["ddim"]).parameters)[-2:] == ["eta", "clipped_eps"]
    with pytest.raises(TypeError):
        SAMPLERS["ddim"](model, torch.zeros(1, 2, 4, 4), S, 2, order=3)
    with pytest.raises(TypeError):
        sample_repaint(model, torch.zeros(1, 2, 4, 4), S, 2, known=torch.zeros(1, 2, 4, 4))  # keep is required


def test_sample_settings_override_only_what_is_given():
    saved = SampleConfig(sampler="ddim", steps=30, eta=0.5)
    assert sample_settings(saved) == saved
    assert sample_settings(saved, steps=None, eta=0.0, grid="uniform") == SampleConfig(sampler="ddim", steps=30, eta=0.0,
                                                                                        grid="uniform")
    with pytest.raises(TypeError):
        sample_settings(saved, stepz=3)
    assert isinstance(make_plan(S, 3, "uniform"), Plan)
