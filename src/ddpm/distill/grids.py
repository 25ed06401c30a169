"""The timestep grids of progressive distillation: every student takes every second step of its
teacher, so that one student step covers exactly two teacher steps.

The grids are DDIM's ``trailing`` ones (evenly spaced counting down from T-1; Lin et al. 2023),
the discrete form of the paper's t = i/N, so a student's run records its grid as
``grid = "trailing"`` with its step count, and ``ddpm sample`` draws on exactly the timesteps it
was trained on. Trailing grids of N and 2N steps nest when rounding treats every second point of
the finer grid as it treats the coarser grid's: always when T/N is exact in binary (T = 1000 with
N = 4 * 2**k: 250, 125, 62.5, 31.25, ...), and for most other step counts; a halving that would
not be exact is refused rather than approximated. Every grid ends at T-1, where sampling starts
from pure noise.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError
from ..sampling.timesteps import get_timesteps
from ..schedules import Schedule

GRID = "trailing"


def halve(timesteps: Sequence[int]) -> list[int]:
    """The student grid of an ascending teacher grid of 2N timesteps: its points at positions
    1, 3, ..., 2N-1 (the noisiest, T-1, included), so student step t_{2i+1} -> t_{2i-1} covers
    the teacher's t_{2i+1} -> t_{2i} -> t_{2i-1} (t_{-1}: the clean image)."""
    ts = list(timesteps)
    if len(ts) < 2 or len(ts) % 2:
        raise ConfigError(f"only a grid of an even number of timesteps can be halved; got {len(ts)}")
    return ts[1::2]


def round_grids(schedule: Schedule, to_steps: int, rounds: int) -> list[list[int]]:
    """[the first teacher's grid of to_steps * 2**rounds steps, then each round's student grid],
    each ascending; grid k has to_steps * 2**(rounds - k) timesteps."""
    T = schedule.num_timesteps
    for name, value in (("--to-steps", to_steps), ("--rounds", rounds)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    first = to_steps * 2**rounds
    if first > T:
        raise ConfigError(
            f"--to-steps {to_steps} with --rounds {rounds} starts from a teacher of {first} DDIM steps, more than "
            f"its {T} timesteps; use fewer --rounds (at most {max((T // to_steps).bit_length() - 1, 0)})"
        )
    grids = [get_timesteps(GRID, schedule, first)]
    for _ in range(rounds):
        grids.append(halve(grids[-1]))
        if grids[-1] != get_timesteps(GRID, schedule, len(grids[-1])):
            good = [k for k in range(1, 17) if k != to_steps and k * 2**rounds <= T and nests(schedule, k, rounds)]
            raise ConfigError(
                f"the {GRID} grid of {len(grids[-1])} steps is not every second step of the one of {2 * len(grids[-1])} "
                f"over {T} timesteps (rounding), so --to-steps {to_steps} with --rounds {rounds} cannot halve exactly; "
                f"--to-steps {', '.join(map(str, good[:6])) or '1'} would"
            )
    return grids


def nests(schedule: Schedule, to_steps: int, rounds: int) -> bool:
    """Whether the trailing grids of to_steps * 2**k steps, k = 0..rounds, halve exactly."""
    grids = [get_timesteps(GRID, schedule, to_steps * 2**k) for k in range(rounds + 1)]
    return all(grids[k] == grids[k + 1][1::2] for k in range(rounds))


__all__ = ["GRID", "halve", "nests", "round_grids"]
