import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm.errors import ConfigError
from ddpm.sampling import FRACTIONAL_GRIDS, GRIDS, get_timesteps, sampling_times
from ddpm.schedules import get_schedule

LINEAR = get_schedule("linear", 1000)


@pytest.mark.parametrize(
    "grid, expected",
    [
        ("uniform", [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]),
        ("trailing", [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]),
        ("leading", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]),
        # 999 (i / 9)^2 rounded
        ("quadratic", [0, 12, 49, 111, 197, 308, 444, 604, 789, 999]),
    ],
)
def test_pinned_grids(grid, expected):
    assert get_timesteps(grid, LINEAR, 10) == expected


def _nearest_integer_solution(values, targets, ts):
    """Each t_i is within one timestep of where the decreasing ``values`` cross ``targets``."""
    for t, target in zip(ts, targets):
        lo, hi = values[min(t + 1, len(values) - 1)], values[max(t - 1, 0)]
        assert lo - 1e-9 <= target <= hi + 1e-9


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_logsnr_grid_is_even_in_log_snr_down_to_sigma_max(name):
    s = get_schedule(name, 1000)
    ts = get_timesteps("logsnr", s, 12)
    log_snr = s.log_snr.numpy()
    floor = -2 * math.log(80.0)  # sigma_max = 80, Karras et al. table 1
    if log_snr[-1] < floor:  # linear (-10.1) and cosine (-19.8): 11 even steps, then T-1
        assert ts[-1] == 999
        _nearest_integer_solution(log_snr, np.linspace(log_snr[0], floor, 11), ts[:-1])
    else:
        _nearest_integer_solution(log_snr, np.linspace(log_snr[0], log_snr[-1], 12), ts)
    assert ts[0] == 0 and ts[-1] == 999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_karras_grid_is_even_in_sigma_to_the_one_over_rho(name):
    s = get_schedule(name, 1000)
    ts = get_timesteps("karras", s, 12)
    sigma = np.sqrt((1 - s.alphas_cumprod.numpy()) / s.alphas_cumprod.numpy())
    assert sigma[-1] > 80.0
    root = sigma ** (1 / 7)
    # sigma^(1/rho) increases with t; negate it to reuse the decreasing-values check
    _nearest_integer_solution(-root, -np.linspace(root[0], 80.0 ** (1 / 7), 11), ts[:-1])
    assert ts[0] == 0 and ts[-1] == 999


def test_cosine_grids_do_not_crowd_its_last_steps():
    """Cosine's clipped betas drop log-SNR from -10 to -20 over t = 995..999; a grid spaced over
    that range would spend half of 10 steps there."""
    s = get_schedule("cosine", 1000)
    for grid in ("logsnr", "karras"):
        assert sum(t >= 990 for t in get_timesteps(grid, s, 10)) == 2


@pytest.mark.parametrize("grid", GRIDS)
def test_full_and_single_step(grid):
    if grid not in FRACTIONAL_GRIDS:  # those place 1000 exact noise levels, not the 1000 timesteps
        assert get_timesteps(grid, LINEAR, 1000) == list(range(1000))
    # one step starts where the noise is (leading starts at 0 by its definition)
    assert get_timesteps(grid, LINEAR, 1) == ([0] if grid == "leading" else [999])


@pytest.mark.parametrize("grid", ["logsnr", "karras"])
def test_zero_terminal_snr_keeps_the_last_step_and_spaces_the_rest(grid):
    s = get_schedule("linear", 1000, zero_terminal_snr=True)
    ts = get_timesteps(grid, s, 10)
    assert ts[-1] == 999 and ts[0] == 0 and len(set(ts)) == 10
    # the finite part is spaced down to sigma_max = 80 as on any schedule
    if grid == "logsnr":
        log_snr = s.log_snr.numpy()
        _nearest_integer_solution(log_snr, np.linspace(log_snr[0], -2 * math.log(80.0), 9), ts[:-1])


@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(2, 300),
    frac=st.floats(0, 1),
    grid=st.sampled_from(GRIDS),
    name=st.sampled_from(["linear", "cosine"]),
    zero_snr=st.booleans(),
)
def test_every_grid_gives_distinct_ascending_steps(T, frac, grid, name, zero_snr):
    steps = 1 + round(frac * (T - 1))
    ts = get_timesteps(grid, get_schedule(name, T, zero_terminal_snr=zero_snr), steps)
    assert len(ts) == steps and (grid in FRACTIONAL_GRIDS or all(isinstance(t, int) for t in ts))
    assert ts[0] >= 0 and ts[-1] <= T - 1
    assert all(a < b for a, b in zip(ts, ts[1:]))
    if grid != "leading":  # the others start sampling from the noisiest step
        assert ts[-1] == T - 1


@pytest.mark.parametrize(
    "grid, steps, message",
    [
        ("nope", 10,
         "unknown timestep grid 'nope'; choose one of uniform, trailing, leading, quadratic, karras, logsnr, tapered, "
         "linspace, karras-sigmas, lu-lambdas"),
        ("uniform", 0, "steps must be an integer from 1 to the 1000 training timesteps; got 0"),
        ("uniform", 1001, "steps must be an integer from 1 to the 1000 training timesteps; got 1001"),
        ("uniform", 2.5, "steps must be an integer from 1 to the 1000 training timesteps; got 2.5"),
        ("uniform", True, "steps must be an integer from 1 to the 1000 training timesteps; got True"),
        ("nope", 1000, "unknown timestep grid 'nope'"),
    ],
)
def test_errors(grid, steps, message):
    with pytest.raises(ConfigError) as err:
        get_timesteps(grid, LINEAR, steps)
    assert str(err.value).startswith(message)


def test_diffusers_grids():
    """diffusers' DPMSolverMultistepScheduler at 10 steps, T = 1000: timestep_spacing="linspace"
    gives [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]; use_karras_sigmas places
    sigma = (s_max^(1/7) + u (s_min^(1/7) - s_max^(1/7)))^7 and use_lu_lambdas an even log-SNR from
    sigma(999) to sigma(0), both ends included, at the exact (fractional) times."""
    assert get_timesteps("linspace", LINEAR, 10) == [100, 200, 300, 400, 500, 599, 699, 799, 899, 999]
    sigma = lambda ts: ((1 - LINEAR.alpha_bar_at(ts)) / LINEAR.alpha_bar_at(ts)).sqrt().numpy()
    ts = get_timesteps("karras-sigmas", LINEAR, 10)
    assert ts[0] == 0 and ts[-1] == 999 and isinstance(ts[3], float)
    s_min, s_max = sigma([0.0])[0], sigma([999.0])[0]
    u = np.linspace(0, 1, 10)
    expected = (s_max ** (1 / 7) + u * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigma(ts[::-1]), expected, rtol=1e-9)
    ls = lambda ts: np.log(LINEAR.alpha_bar_at(ts).numpy()) - np.log1p(-LINEAR.alpha_bar_at(ts).numpy())
    lu = get_timesteps("lu-lambdas", LINEAR, 10)
    np.testing.assert_allclose(np.diff(ls(lu)), np.diff(ls(lu)).mean(), rtol=1e-9)


def test_tapered_grid_shrinks_its_steps_towards_the_data():
    ts = get_timesteps("tapered", LINEAR, 10)
    assert ts == [0, 3, 13, 40, 112, 273, 494, 701, 930, 999]
    log_snr = LINEAR.log_snr.numpy()
    floor = -2 * math.log(80.0)
    targets = floor + (log_snr[0] - floor) * np.linspace(0, 1, 9)[::-1] ** 0.75
    _nearest_integer_solution(log_snr, targets, ts[:-1])
    steps = -np.diff(log_snr[ts[:-1]])
    assert all(a < b for a, b in zip(steps, steps[1:]))  # shorter and shorter towards t = 0


@pytest.mark.parametrize("grid", GRIDS)
def test_grids_start_from_t_start(grid):
    for t_start in (300, 400.5):
        ts = get_timesteps(grid, LINEAR, 6, t_start=t_start)
        assert len(ts) == 6 and all(a < b for a, b in zip(ts, ts[1:])) and ts[0] >= 0
        if grid == "leading":
            assert ts == [0, 50, 100, 150, 200, 250] if t_start == 300 else ts[-1] < t_start
        else:
            assert ts[-1] == t_start and (grid in FRACTIONAL_GRIDS or all(isinstance(t, int) for t in ts[:-1]))
    assert get_timesteps("uniform", LINEAR, 5, t_start=500) == [0, 125, 250, 375, 500]
    assert get_timesteps("trailing", LINEAR, 5, t_start=499) == [99, 199, 299, 399, 499]
    assert get_timesteps(grid, LINEAR, 1, t_start=250) == ([0] if grid == "leading" else [250])


def test_explicit_timesteps_and_their_errors():
    assert sampling_times(LINEAR, None, "uniform", [0, 500, 999]) == [999, 500, 0]
    assert sampling_times(LINEAR, 3, "uniform", [999, 500.5, 0.0]) == [999, 500.5, 0]
    assert sampling_times(LINEAR, None, "uniform", [250]) == [250]
    assert sampling_times(LINEAR, 4, "uniform", t_start=600) == [600, 400, 200, 0]
    bad = [
        (dict(timesteps=[999, 10, 500]), "timesteps must be strictly increasing or strictly decreasing; got [999, 10, 500]"),
        (dict(timesteps=[999, 999]), "timesteps must be strictly increasing or strictly decreasing"),
        (dict(timesteps=[1000, 0]), "timesteps must lie in [0, 999]; got [1000, 0]"),
        (dict(timesteps=[]), "timesteps must be a non-empty list of numbers; got []"),
        (dict(timesteps=["5"]), "timesteps must be a non-empty list of numbers; got ['5']"),
        (dict(timesteps=[5, 0], steps=3), "steps=3 disagrees with the 2 timesteps given; leave steps out"),
        (dict(timesteps=[5, 0], t_start=6), "t_start=6 is not the noisiest of the timesteps given (5); leave it out"),
        (dict(steps=10, t_start=-1), "t_start must be a timestep from 0 to 999; got -1"),
        (dict(steps=10, t_start=5), "steps must be an integer from 1 to the 6 integer timesteps up to t_start=5; got 10"),
    ]
    for kwargs, message in bad:
        kwargs = {"steps": None, **kwargs}
        with pytest.raises(ConfigError) as err:
            sampling_times(LINEAR, kwargs.pop("steps"), "uniform", **kwargs)
        assert str(err.value).startswith(message), str(err.value)
