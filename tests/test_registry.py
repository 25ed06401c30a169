"""The sampler registry, and every sampler checked against closed forms through it."""

import inspect
import math

import pytest
import torch

from ddpm.analytic import gaussian_model, mixture_model
from ddpm.errors import ConfigError
from ddpm.sampling import DEFAULT_GRIDS, GRIDS, SAMPLERS, get_sampler, sample
from ddpm.schedules import get_schedule

MEAN, STD = 0.3, 0.2
MODES, MODE_STD, WEIGHTS = (-0.5, 0.5), (0.1, 0.1), (0.3, 0.7)
DETERMINISTIC = ("ddim", "dpm++2m", "dpm++3m", "unipc2", "unipc3")

# Measured |std - 0.2| (Gaussian data, 4000 images of 1x4x4, default grids) on linear / cosine:
#   ancestral 0.067 / 0.054, 0.040 / 0.032, 0.019 / 0.015 at 10, 20, 50 steps
#   ddim      0.041 / 0.031, 0.021 / 0.015, 0.008 / 0.006
#   dpm++2m   0.0019 / 0.0021, 0.0018 / 0.0021, 0.0007 / 0.0009
#   dpm++3m   0.022 / 0.023, 0.0011 / 0.0014, 0.0005 / 0.0006  (3M overshoots at 10 steps)
#   dpm++2m-sde 0.003 / 0.002, 0.002 / 0.003, 0.0004 / 0.0001
#   unipc2    0.0066 / 0.0068, 0.0014 / 0.0017, 0.0006 / 0.0007
#   unipc3    0.017 / 0.016, 0.0008 / 0.0009, 0.0005 / 0.0006
STD_TOL = {
    "ancestral": {10: 0.08, 20: 0.05, 50: 0.025},
    "ddim": {10: 0.05, 20: 0.028, 50: 0.012},
    "dpm++2m": {10: 0.004, 20: 0.004, 50: 0.002},
    "dpm++3m": {10: 0.03, 20: 0.003, 50: 0.002},
    "dpm++2m-sde": {10: 0.006, 20: 0.009, 50: 0.002},
    "unipc2": {10: 0.01, 20: 0.003, 50: 0.002},
    "unipc3": {10: 0.022, 20: 0.002, 50: 0.002},
}
# |weight of the +0.5 mode - 0.7| for 16,000 mixture images (standard error 0.0036); measured
# on linear / cosine at 10, 20, 50 steps:
#   ancestral 0.046 / 0.055, 0.026 / 0.029, 0.011 / 0.013
#   ddim      0.023 / 0.041, 0.012 / 0.020, 0.007 / 0.010
#   dpm++2m   0.015 / 0.019, 0.005 / 0.008, 0.003 / 0.005
#   dpm++3m   0.004 / 0.009, 0.002 / 0.004, 0.002 / 0.004
#   dpm++2m-sde 0.034 / 0.036, 0.017 / 0.018, 0.001 / 0.001
#   unipc2    0.010 / 0.014, 0.003 / 0.005, 0.002 / 0.004
#   unipc3    0.001 / 0.005, 0.002 / 0.004, 0.002 / 0.004
WEIGHT_TOL = {
    "ancestral": {10: 0.07, 20: 0.04, 50: 0.02},
    "ddim": {10: 0.055, 20: 0.03, 50: 0.016},
    "dpm++2m": {10: 0.022, 20: 0.012, 50: 0.01},
    "dpm++3m": {10: 0.012, 20: 0.01, 50: 0.01},
    "dpm++2m-sde": {10: 0.04, 20: 0.02, 50: 0.018},
    "unipc2": {10: 0.018, 20: 0.01, 50: 0.01},
    "unipc3": {10: 0.01, 20: 0.01, 50: 0.01},
}


def _noise(n, seed=0):
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_reproduces_gaussian_data(name, schedule_name):
    s = get_schedule(schedule_name, 1000)
    model, x_T = gaussian_model(s, MEAN, STD), _noise(4000)
    std_err = {}
    for steps in (10, 20, 50):
        x = sample(name, model, x_T, s, steps, clip=None, generator=torch.Generator().manual_seed(1))
        # 64,000 values: the mean's standard error is about 0.0008
        assert x.mean().item() == pytest.approx(MEAN, abs=0.003), steps
        std_err[steps] = abs(x.std().item() - STD)
        assert std_err[steps] < STD_TOL[name][steps], steps
    assert std_err[50] < std_err[10] / 2


@pytest.fixture(scope="module")
def mixture_runs():
    """Per schedule: the model, x_T and which mode a near-exact solve (DPM++3M, 200 steps) sends
    each x_T to, so that deterministic samplers can be compared without sampling noise."""
    runs = {}
    for schedule_name in ("linear", "cosine"):
        s = get_schedule(schedule_name, 1000)
        model, x_T = mixture_model(s, MODES, MODE_STD, WEIGHTS), _noise(16000, seed=2)
        ref = sample("dpm++3m", model, x_T, s, 200, clip=None).flatten(1).mean(1) > 0
        runs[schedule_name] = (s, model, x_T, ref)
    return runs


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_reproduces_the_mode_weights(name, schedule_name, mixture_runs):
    s, model, x_T, ref = mixture_runs[schedule_name]
    assert ref.double().mean().item() == pytest.approx(WEIGHTS[1], abs=0.011)  # 3 standard errors
    moved = {}
    for steps in (10, 20, 50):
        x = sample(name, model, x_T, s, steps, clip=None, generator=torch.Generator().manual_seed(3))
        upper = x.flatten(1).mean(1) > 0
        assert upper.double().mean().item() == pytest.approx(WEIGHTS[1], abs=WEIGHT_TOL[name][steps]), steps
        # each image keeps its mode's spread: pixel std 0.1 around the image mean, 0.0968 for 16
        # pixels (measured 0.060 to 0.116 at 10 steps, 0.086 to 0.096 at 50)
        resid = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
        spread = resid.std().item() / (MODE_STD[0] * math.sqrt(15 / 16))
        assert abs(spread - 1) < (0.15 if steps == 50 else 0.45), steps
        moved[steps] = (upper != ref).double().mean().item()
    if name in DETERMINISTIC:  # discretisation error alone: images that end in another mode
        # measured 0 to 0.0055 at 50 steps; unipc3 moves only 0.0003 to 0.0011 already at 10
        assert moved[50] <= max(moved[10] / 3, 0.0002) and moved[50] < 0.008


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("clip", [None, "static"])
def test_every_objective_gives_the_same_samples(name, clip):
    s = get_schedule("cosine", 1000)
    x_T = _noise(64, seed=4) * 1.5  # wide enough that clipping acts
    out = [sample(name, gaussian_model(s, 0.6, 0.4, objective), x_T, s, 15, objective=objective, clip=clip,
                  generator=torch.Generator().manual_seed(9))  # the stochastic samplers' noise
           for objective in ("pred_noise", "pred_x0", "pred_v")]
    for other in out[1:]:
        torch.testing.assert_close(other, out[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "ancestral"])
def test_samplers_without_a_variance_ignore_a_learned_one(name):
    """A learned-variance network's second half of channels changes nothing outside ancestral
    sampling (tests/test_ancestral.py covers that one)."""
    s = get_schedule("linear", 1000)
    model, x_T = gaussian_model(s, MEAN, STD), _noise(32, seed=10)
    learned = lambda x, t: torch.cat([model(x, t), torch.rand_like(x) * 2 - 1], dim=1)  # any v in [-1, 1]
    run = lambda fn, variance: sample(name, fn, x_T, s, 12, variance_type=variance, generator=torch.Generator().manual_seed(11))
    assert torch.equal(run(learned, "learned_range"), run(model, "fixed_small"))


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_zero_terminal_snr_with_v_prediction(name):
    """At alpha_bar_{T-1} = 0 the first step is the exact limit alpha x0_hat + sigma x_T; no NaN."""
    s = get_schedule("linear", 1000, zero_terminal_snr=True)
    exact = gaussian_model(s, MEAN, STD, objective="pred_v")

    def model(x, t):
        # analytic.gaussian_model forms v from x0 = (x - sigma eps) / alpha, which is 0/0 at zero
        # SNR; the exact limit is v = alpha eps - sigma x0_hat = -E[x_0] = -MEAN
        zero = (s.alphas_cumprod[t] == 0).reshape(-1, 1, 1, 1)
        return torch.where(zero, torch.full_like(x, -MEAN), exact(x, t))

    x = sample(name, model, _noise(4000, seed=5), s, 20, objective="pred_v", clip=None,
               generator=torch.Generator().manual_seed(6))
    assert bool(torch.isfinite(x).all())
    assert x.mean().item() == pytest.approx(MEAN, abs=0.003)
    assert x.std().item() == pytest.approx(STD, abs=STD_TOL[name][20])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_seed_callback_and_clipping(name):
    s = get_schedule("cosine", 100)
    model = gaussian_model(s, 0.9, 0.3)  # many pixels beyond 1
    x_T = _noise(16, seed=7)
    calls = []
    a = sample(name, model, x_T, s, 12, generator=torch.Generator().manual_seed(8),
               callback=lambda i, x, x0: calls.append((i, x.shape, x0.shape, float(x0.abs().max()))))
    b = sample(name, model, x_T, s, 12, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert [c[0] for c in calls] == list(range(12))
    assert all(c[1] == c[2] == (16, 1, 4, 4) and c[3] <= 1.0 for c in calls)  # the callback sees the clipped x_0
    assert a.abs().max().item() <= 1.0 + 1e-12 and a.max().item() > 0.99
    unclipped = sample(name, model, x_T, s, 12, clip="none", generator=torch.Generator().manual_seed(8))
    assert unclipped.max().item() > 1.2
    dynamic = sample(name, model, x_T, s, 12, clip="dynamic", generator=torch.Generator().manual_seed(8))
    assert dynamic.abs().max().item() <= 1.0 + 1e-12 and not torch.equal(dynamic, a)


def test_registry_names_defaults_and_dispatch():
    assert list(SAMPLERS) == ["ancestral", "ddim", "dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc2", "unipc3"]
    assert set(DEFAULT_GRIDS) == set(SAMPLERS) and set(DEFAULT_GRIDS.values()) <= set(GRIDS)
    for name, fn in SAMPLERS.items():
        assert get_sampler(name) is fn
        params = inspect.signature(fn).parameters
        assert list(params)[:4] == ["model_fn", "x_T", "schedule", "steps"]
        assert {"grid", "objective", "variance_type", "clip", "generator", "callback"} <= set(params)
        assert params["grid"].default == DEFAULT_GRIDS[name]  # calling a sampler directly agrees
    # grid=None means the default grid; an explicit grid is passed through
    s = get_schedule("linear", 1000)
    model, x_T = gaussian_model(s, MEAN, STD), _noise(8)
    by_name = sample("ancestral", model, x_T, s, 10, generator=torch.Generator().manual_seed(0))
    direct = SAMPLERS["ancestral"](model, x_T, s, 10, grid=DEFAULT_GRIDS["ancestral"],
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(by_name, direct)
    assert not torch.equal(sample("ddim", model, x_T, s, 10, grid="uniform"), sample("ddim", model, x_T, s, 10))
    # eta goes to ddim only
    assert not torch.equal(sample("ddim", model, x_T, s, 10, eta=1.0, generator=torch.Generator().manual_seed(0)),
                           sample("ddim", model, x_T, s, 10))


def test_registry_errors():
    s = get_schedule("linear", 100)
    model, x_T = gaussian_model(s, MEAN, STD), _noise(2)
    with pytest.raises(ConfigError) as err:
        get_sampler("euler")
    assert str(err.value) == ("unknown sampler 'euler'; choose one of ancestral, ddim, dpm++2m, dpm++3m, dpm++2m-sde, "
                              "unipc2, unipc3")
    with pytest.raises(ConfigError) as err:
        sample("dpm++2m", model, x_T, s, 10, eta=0.5)
    assert str(err.value) == ("eta=0.5 applies only to the 'ddim' sampler; "
                              "sampler 'dpm++2m' has no eta, so leave it at 0")
    with pytest.raises(ConfigError, match="unknown timestep grid 'even'"):
        sample("dpm++3m", model, x_T, s, 10, grid="even")
    for name in ("ddim", "dpm++2m", "dpm++3m"):
        with pytest.raises(ConfigError, match="steps must be an integer from 1 to the 100 training timesteps; got 0"):
            sample(name, model, x_T, s, 0)
