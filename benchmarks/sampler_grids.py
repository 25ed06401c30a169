"""Which timestep grid suits each sampler: the measurement behind ``DEFAULT_GRIDS``.

For every sampler and grid, the summed error at 10 and 20 steps, on the linear and cosine
schedules (T = 1000), of samples drawn with the exact denoisers of ``ddpm.analytic`` (no network,
no clipping):

- Gaussian data N(0.3, 0.2^2): |mean - 0.3| + |std - 0.2| of 8000 images of 1x4x4;
- a two-mode mixture (modes -0.5 / +0.5, std 0.1, weights 0.3 / 0.7): the error in the share of
  images that land in the +0.5 mode, against a 1000-step DPM-Solver++(3M) solve of the same x_T.

Lower is better; the table printed is the one in ``ddpm/sampling/registry.py``'s docstring. The
deterministic samplers' rows have no sampling noise beyond the fixed x_T; the stochastic ones
(ancestral, dpm++2m-sde) move by about 0.01 with ``--seed``.

A second table gives the precision target of the default sampler (``PRECISION``): the relative
error of the standard deviation of N(0.1, 0.25^2) data at 10 and 20 steps (linear schedule,
T = 1000, no clipping), computed exactly: a deterministic sampler driven by the exact denoiser of
Gaussian data is an affine map of x_T, so std = |y(1) - y(0)| with no sampling noise. The
default sampler's grid is the one with the smallest summed error among those that meet it.

    OMP_NUM_THREADS=1 python benchmarks/sampler_grids.py            # about two minutes
"""

from __future__ import annotations

import argparse

import torch

from ddpm.analytic import gaussian_model, mixture_model
from ddpm.sampling import DEFAULT_GRIDS, GRIDS, SAMPLERS, sample
from ddpm.schedules import get_schedule

MEAN, STD = 0.3, 0.2
MODES, MODE_STD, WEIGHTS = (-0.5, 0.5), (0.1, 0.1), (0.3, 0.7)
PRECISION = ("dpm++2m", 0.1, 0.25, {10: 0.02, 20: 0.01})  # sampler, data mean and std, max |std error| / std
DETERMINISTIC = ("ddim", "dpm++2m", "dpm++3m", "unipc2", "unipc3")


def std_error(name: str, grid: str, steps: int) -> float:
    """(std of the samples - 0.25) / 0.25 for N(0.1, 0.25^2) data, exactly (see the module docstring)."""
    _, mean, std, _ = PRECISION
    s = get_schedule("linear", 1000)
    x = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    y = sample(name, gaussian_model(s, mean, std), x, s, steps, grid=grid, clip=None).flatten()
    return (y[1] - y[0]).abs().item() / std - 1.0


def meets_precision(name: str, grid: str) -> bool:
    return all(abs(std_error(name, grid, n)) <= limit for n, limit in PRECISION[3].items())


def noise(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def upper_share(x: torch.Tensor) -> float:
    """The share of images [N, 1, 4, 4] whose mean lies above 0: the +0.5 mode."""
    return (x.flatten(1).mean(1) > 0).double().mean().item()


def grid_errors(samplers: list[str], images: int, seed: int) -> dict[tuple[str, str], float]:
    errors: dict[tuple[str, str], float] = {}
    for schedule_name in ("linear", "cosine"):
        s = get_schedule(schedule_name, 1000)
        gaussian, mixture = gaussian_model(s, MEAN, STD), mixture_model(s, MODES, MODE_STD, WEIGHTS)
        x_gauss, x_mix = noise(images, seed), noise(images, seed + 2)
        reference = upper_share(sample("dpm++3m", mixture, x_mix, s, 1000, clip=None))
        for name in samplers:
            for grid in GRIDS:
                for steps in (10, 20):
                    x = sample(name, gaussian, x_gauss, s, steps, grid=grid, clip=None,
                               generator=torch.Generator().manual_seed(seed + 1))
                    y = sample(name, mixture, x_mix, s, steps, grid=grid, clip=None,
                               generator=torch.Generator().manual_seed(seed + 3))
                    error = abs(x.mean().item() - MEAN) + abs(x.std().item() - STD) + abs(upper_share(y) - reference)
                    errors[(name, grid)] = errors.get((name, grid), 0.0) + error
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--images", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    errors = grid_errors(samplers, args.images, args.seed)
    width = max(len(g) for g in GRIDS) + 1
    print(" " * 13 + "".join(f"{g:>{width}}" for g in GRIDS))
    for name in samplers:
        allowed = [g for g in GRIDS if name != PRECISION[0] or meets_precision(name, g)] or list(GRIDS)
        best = min(allowed, key=lambda g: errors[(name, g)])
        cells = "".join(f"{('*' if g == best else '') + format(errors[(name, g)], '.3f'):>{width}}" for g in GRIDS)
        note = "" if best == DEFAULT_GRIDS[name] else f"   (default is {DEFAULT_GRIDS[name]})"
        print(f"{name:<13}{cells}{note}")
    print(f"\n* = the smallest error ({PRECISION[0]}: among the grids that meet its precision target); "
          "DEFAULT_GRIDS should name it")
    name, mean, std, limits = PRECISION
    print(f"\n(std - {std}) / {std} in %, N({mean}, {std}^2) data, linear schedule, exact; target "
          + ", ".join(f"{100 * v:g}% at {n} steps" for n, v in limits.items()))
    print(" " * 13 + "".join(f"{g:>{width}}" for g in GRIDS))
    for name in [n for n in samplers if n in DETERMINISTIC]:
        for n in limits:
            cells = "".join(f"{100 * std_error(name, g, n):>+{width}.2f}" for g in GRIDS)
            print(f"{name + ' @' + str(n):<13}{cells}")


if __name__ == "__main__":
    main()
