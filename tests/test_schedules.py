import math

import pytest
import torch

from ddpm.errors import ConfigError
from ddpm.schedules import Schedule, cosine_betas, get_schedule, linear_betas, rescale_zero_terminal_snr, sigmoid_betas


def test_linear_matches_ho_et_al_at_1000_steps():
    s = get_schedule("linear", 1000)
    assert s.betas.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    assert s.betas[499].item() == pytest.approx(1e-4 + (0.02 - 1e-4) * 499 / 999)
    # the pinned value: alpha_bar_T is about 4.04e-5
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)


def test_linear_is_scaled_for_other_lengths():
    betas = linear_betas(250)
    assert betas[0].item() == pytest.approx(4e-4)
    assert betas[-1].item() == pytest.approx(0.08)
    # the scaling keeps the end of the process close to pure noise
    assert torch.cumprod(1 - betas, 0)[-1].item() < 1e-4


def test_cosine_follows_its_closed_form():
    T, s = 1000, 0.008
    sched = get_schedule("cosine", T)

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):
        # alpha_bar_t covers steps 0..t, i.e. the continuous alpha_bar at (t + 1) / T
        assert sched.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    betas = cosine_betas(T)
    assert betas.max().item() == pytest.approx(0.999)  # the final beta is clipped
    assert bool((betas[:-1] < 0.999).all())


def test_sigmoid_schedule_is_monotone_and_bounded():
    betas = sigmoid_betas(1000)
    ab = torch.cumprod(1 - betas, 0)
    assert bool((betas > 0).all()) and bool((betas <= 0.999).all())
    assert bool((ab[1:] < ab[:-1]).all())
    # alpha_bar at t follows the flipped, rescaled sigmoid of Jabri et al.
    t = (499 + 1) / 1000
    sig = lambda z: 1 / (1 + math.exp(-z))
    expected = (sig(3) - sig(6 * t - 3)) / (sig(3) - sig(-3))
    assert ab[499].item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_zero_terminal_snr_rescaling(name):
    plain = get_schedule(name, 1000)
    zero = get_schedule(name, 1000, zero_terminal_snr=True)
    assert zero.alphas_cumprod[-1].item() == 0.0
    assert zero.betas[-1].item() == pytest.approx(1.0)
    assert zero.zero_terminal_snr and not plain.zero_terminal_snr
    # the first step keeps its signal level; the SNR still falls monotonically
    assert zero.alphas_cumprod[0].item() == pytest.approx(plain.alphas_cumprod[0].item(), rel=1e-12)
    assert bool((zero.alphas_cumprod[1:] < zero.alphas_cumprod[:-1]).all())
    # sqrt(alpha_bar) is an affine map of the original (Lin et al. Algorithm 1)
    a, b = plain.sqrt_alphas_cumprod, zero.sqrt_alphas_cumprod
    expected = (a - a[-1]) * a[0] / (a[0] - a[-1])
    torch.testing.assert_close(b, expected, rtol=1e-10, atol=1e-12)


def test_rescale_helper_accepts_plain_betas():
    betas = rescale_zero_terminal_snr(linear_betas(100))
    assert torch.cumprod(1 - betas, 0)[-1].item() == pytest.approx(0.0, abs=1e-15)


def test_posterior_coefficients_from_their_definitions():
    s = get_schedule("cosine", 50)
    for t in (1, 7, 49):
        ab, ab_prev, beta = s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]
        assert s.posterior_variance[t].item() == pytest.approx(((1 - ab_prev) / (1 - ab) * beta).item())
        assert s.posterior_mean_coef1[t].item() == pytest.approx((ab_prev.sqrt() * beta / (1 - ab)).item())
        assert s.posterior_mean_coef2[t].item() == pytest.approx(((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)).item())
    assert s.posterior_variance[0].item() == 0.0
    assert s.posterior_log_variance_clipped[0].item() == pytest.approx(math.log(s.posterior_variance[1].item()))


def test_respacing_keeps_alpha_bar_at_the_kept_steps():
    s = get_schedule("linear", 1000)
    kept = [0, 99, 399, 999]
    r = s.respaced(kept)
    assert r.num_timesteps == 4
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[kept], rtol=1e-12, atol=0)


def test_schedule_moves_between_devices_in_float64():
    s = get_schedule("linear", 10).to("cpu")
    assert s.alphas_cumprod.dtype == torch.float64


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: get_schedule("quadratic", 100), "unknown beta schedule 'quadratic'; choose one of linear, scaled_linear, cosine, sigmoid"),
        (lambda: get_schedule("linear", 1), "timesteps must be an integer of at least 2; got 1"),
        (lambda: Schedule.from_betas([0.1, 1.5]), "betas must lie in (0, 1]"),
        (lambda: get_schedule("linear", 10).respaced([3, 2]), "strictly increasing"),
    ],
)
def test_bad_schedules_are_refused_in_one_sentence(call, message):
    with pytest.raises(ConfigError) as err:
        call()
    assert message in str(err.value)


def test_alpha_bar_at_fractional_times():
    """Whole timesteps give alphas_cumprod exactly; between them log-SNR is linear in t; next to a
    zero-SNR last step alpha_bar itself is (it still reaches 0)."""
    s = get_schedule("cosine", 1000)
    ab = s.alphas_cumprod
    assert torch.equal(s.alpha_bar_at(torch.arange(1000.0)), ab)
    assert s.alpha_bar_at(7) == ab[7] and s.alpha_bar_at([0.0, 999.0]).tolist() == [ab[0].item(), ab[-1].item()]
    ls = s.log_snr
    for t, w in [(10, 0.25), (500, 0.5), (998, 0.9)]:
        got = s.alpha_bar_at(t + w)
        assert math.log(got / (1 - got)) == pytest.approx(((1 - w) * ls[t] + w * ls[t + 1]).item(), rel=1e-12)
    z = get_schedule("linear", 1000, zero_terminal_snr=True)
    assert z.alpha_bar_at(998.5).item() == pytest.approx(0.5 * z.alphas_cumprod[998].item(), rel=1e-12)
    assert z.alpha_bar_at(999.0).item() == 0.0
    for bad in (-0.5, 999.5, float("nan")):
        with pytest.raises(ConfigError, match=r"timesteps must lie in \[0, 999\]"):
            s.alpha_bar_at(bad)


def test_from_alpha_bars_is_the_chain_with_those_levels():
    s = Schedule.from_alpha_bars([0.9, 0.5, 0.1])
    torch.testing.assert_close(s.alphas_cumprod, torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64))
    torch.testing.assert_close(s.betas, torch.tensor([0.1, 1 - 0.5 / 0.9, 0.8], dtype=torch.float64))


def test_end_points_scaled_linear_and_given_betas():
    """beta_start and beta_end are used as given (diffusers' convention, no 1000/T scaling); scaled_linear
    spaces sqrt(beta) evenly between them; given betas replace the named schedule, one per timestep."""
    lin = get_schedule("linear", 500, beta_start=2e-4, beta_end=0.03).betas
    assert torch.allclose(lin[[0, -1]], torch.tensor([2e-4, 0.03], dtype=torch.float64))
    assert torch.allclose(lin.diff(), torch.full((499,), (0.03 - 2e-4) / 499, dtype=torch.float64))
    sl = get_schedule("scaled_linear", 1000, beta_start=0.00085, beta_end=0.012).betas
    assert torch.allclose(sl[[0, -1]], torch.tensor([0.00085, 0.012], dtype=torch.float64))
    root = sl.sqrt().diff()
    assert torch.allclose(root, root[0].expand_as(root))
    given = [0.01 * (i + 1) for i in range(10)]
    s = get_schedule("linear", 10, betas=given)
    assert s.betas.tolist() == given
    assert abs(s.alphas_cumprod[-1].item() - math.prod(1 - b for b in given)) < 1e-15
    with pytest.raises(ConfigError, match="11 betas were given for 10 timesteps"):
        get_schedule("linear", 10, betas=given + [0.2])
    with pytest.raises(ConfigError, match="beta_end must lie in"):
        get_schedule("linear", 10, beta_end=1.5)
