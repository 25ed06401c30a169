"""Line charts: colours, log axes, ticks, error messages, the schedules plot."""

import math

import numpy as np
import pytest
from PIL import Image

from ddpm import plot
from ddpm.errors import ConfigError
from ddpm.schedules import get_schedule

def colour_mask(path, colour):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return (np.asarray(im.convert("RGB")) == colour).all(axis=2)


def median_row(mask, col):
    rows = np.flatnonzero(mask[:, col])
    assert rows.size > 0, f"no pixel of the series in column {col}"
    return float(np.median(rows))


def test_line_plot_draws_each_series_in_its_colour(tmp_path):
    x = np.linspace(0, 100, 201)
    series = {"up": (x, x), "down": (x, 100 - x)}
    path = plot.line_plot(series, tmp_path / "p.png", title="T", xlabel="step", ylabel="loss", size=(500, 300))
    with Image.open(path) as im:
        assert im.size == (500, 300)
    up, down = colour_mask(path, plot.PALETTE[0]), colour_mask(path, plot.PALETTE[1])
    assert up.sum() > 300 and down.sum() > 300  # a line across the plot, not just a legend swatch
    cols_up = np.flatnonzero(up.any(axis=0))
    assert cols_up.max() - cols_up.min() > 0.7 * 500
    c1, c2 = 150, 300
    assert median_row(up, c2) < median_row(up, c1)  # rising: higher on screen to the right
    assert median_row(down, c2) > median_row(down, c1)


def test_logy_draws_an_exponential_as_a_straight_line(tmp_path):
    x = np.linspace(0, 4, 401)
    lin = colour_mask(plot.line_plot({"e": (x, 10**x)}, tmp_path / "lin.png"), plot.PALETTE[0])
    log = colour_mask(plot.line_plot({"e": (x, 10**x)}, tmp_path / "log.png", logy=True), plot.PALETTE[0])
    rows = [median_row(log, c) for c in (150, 300, 450)]
    assert abs((rows[0] - rows[1]) - (rows[1] - rows[2])) <= 2  # equal steps: straight
    rows = [median_row(lin, c) for c in (150, 300, 450)]
    assert (rows[1] - rows[2]) > 3 * (rows[0] - rows[1])  # convex on a linear axis


def test_line_plot_survives_constant_nan_and_single_point(tmp_path):
    y = np.array([1.0, np.nan, 2.0, np.inf, 3.0])
    series = {"const": ([0, 1, 2], [5.0, 5.0, 5.0]), "gappy": (np.arange(5), y), "one": ([2.5], [0.5])}
    path = plot.line_plot(series, tmp_path / "c.png")
    for k in range(3):
        assert colour_mask(path, plot.PALETTE[k]).sum() > 20
    # only a constant, or only one point: the axis range is widened around it
    for name, pair in {"flat": ([0, 1], [2.0, 2.0]), "dot": ([7.0], [3e-3])}.items():
        for logy in (False, True):
            p = plot.line_plot({name: pair}, tmp_path / f"{name}{logy}.png", logy=logy)
            assert colour_mask(p, plot.PALETTE[0]).sum() > 20


@pytest.mark.parametrize(
    "series, logy, message",
    [
        ({}, False, "line_plot needs at least one series; got an empty dict"),
        ({"a": ([], [])}, False, "series 'a' needs as many x as y values and at least one point; got 0 and 0"),
        ({"a": ([1, 2], [1])}, False, "series 'a' needs as many x as y values and at least one point; got 2 and 1"),
        ({"a": ([1, 2], [np.nan, np.inf])}, False, "line_plot found no finite point to draw in any series"),
        ({"a": ([1, 2, 3], [1.0, 0.0, -1.0])}, True, "logy needs positive y values; series 'a' has 0 at x = 2"),
    ],
)
def test_line_plot_errors(tmp_path, series, logy, message):
    with pytest.raises(ConfigError) as err:
        plot.line_plot(series, tmp_path / "e.png", logy=logy)
    assert str(err.value) == message
    assert not (tmp_path / "e.png").exists()


def test_tick_values_are_nice():
    assert plot._nice_ticks(-0.04, 1.04)[0] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    lo, hi, ticks, labels = plot._linear_axis(0, 5000)
    assert ticks == [0, 1000, 2000, 3000, 4000, 5000] and labels == ["0", "1000", "2000", "3000", "4000", "5000"]
    assert lo < 0 and hi > 5000
    assert plot._linear_axis(-2.25, 3.0)[3] == ["-2", "-1", "0", "1", "2", "3"]
    assert plot._linear_axis(0, 3e7)[3] == ["0", "1e7", "2e7", "3e7"]
    assert plot._linear_axis(0, 1.5e6)[3] == ["0", "5.0e5", "1.0e6", "1.5e6"]
    # log axes: decades, with 2 and 5 added when only a couple of decades fit
    _, _, ticks, labels = plot._log_axis(math.log10(0.02), 0.0)
    assert labels == ["0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    np.testing.assert_allclose(ticks, np.log10([0.02, 0.05, 0.1, 0.2, 0.5, 1]))
    assert plot._log_axis(-12.0, 0.0)[3] == ["1e-12", "1e-10", "1e-8", "1e-6", "0.0001", "0.01", "1"]
    labels = plot._log_axis(math.log10(0.3), math.log10(0.45))[3]  # no power of 2, 5 or 10 inside
    assert labels == ["0.30", "0.35", "0.40", "0.45"]


def test_schedule_plot(tmp_path):
    schedules = {
        "linear": get_schedule("linear", 1000),
        "zero snr": get_schedule("cosine", 1000, zero_terminal_snr=True),
    }
    for quantity in ("alphas_cumprod", "log_snr"):
        path = plot.schedule_plot(schedules, tmp_path / f"{quantity}.png", quantity=quantity)
        with Image.open(path) as im:
            assert im.size == (640, 400)
        for k in range(2):
            assert colour_mask(path, plot.PALETTE[k]).sum() > 300
    with pytest.raises(ConfigError) as err:
        plot.schedule_plot(schedules, tmp_path / "x.png", quantity="betas")
    assert str(err.value) == "unknown schedule quantity 'betas'; choose one of alphas_cumprod, log_snr"


