"""Inpainting by RePaint (Lugmayr et al. 2022): a wrapper around the ancestral sampler's step.

At every reverse step the pixels to keep are replaced by the given image noised to the current
level, x_k[keep] ~ q(x_k | x_0) (Lugmayr et al. eq. 8, Algorithm 1 line 5); the others come from
the model's step p(x_{k-1} | x_k) (line 6, :func:`ddpm.sampling.ancestral.posterior_step`).
Replacement alone leaves the generated part inconsistent with the kept part, because the model
only saw a noisy version of it; RePaint therefore walks the chain back up now and then,
x_{k+1} ~ q(x_{k+1} | x_k) = N(sqrt(1 - beta_{k+1}) x_k, beta_{k+1} I) (eq. 9, line 8), and
descends again, so the model's part is redrawn with a better view of the kept part.

The resampling schedule is the paper's jump schedule (its section 4.2 and the reference code,
``schedule_jump_params``): on a chain of ``steps`` levels, at every level k that is a multiple of
``jump_length`` (below steps - jump_length) the walk jumps ``jump_length`` levels back up,
``jump_n_sample - 1`` times. The paper's setting is 250 levels respaced from T = 1000 (evenly),
jump length 10 and 10 resamplings: 2,410 model evaluations. ``jump_n_sample=1`` is plain
replacement. The sampler itself (:mod:`ddpm.sampling.ancestral`) knows nothing of masks.

Fidelity (``tests/test_inpaint.py``, Gaussian data with the exact denoiser): the walk is exact when
the reverse steps are, so pixels independent of the kept ones keep their distribution; with
``fixed_small`` every reverse step draws too little noise (beta-tilde is the lower end of the true
reverse variance) and the resampling passes repeat the deficit (-8.6% of std for N(0.1, 0.2^2)
pixels at the paper's setting). With correlated pixels the method itself is approximate: the
kept pixels' fresh draws of q(x_k | x_0) ignore their correlation with the generated ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..diffusion import q_sample_at
from ..errors import ConfigError
from ..schedules import Schedule
from .ancestral import posterior_step
from .common import Callback
from .denoiser import Denoiser
from .plan import Plan
from .public import REQUIRED, public_sampler

DEFAULT_STEPS = 250
DEFAULT_JUMP_LENGTH = 10
DEFAULT_JUMP_N_SAMPLE = 10
DEFAULT_GRID = "uniform"  # the paper's respacing of T = 1000 to 250 evenly spaced timesteps


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    return value


def repaint_schedule(steps: int, jump_length: int = DEFAULT_JUMP_LENGTH, jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE) -> list[int]:
    """The chain levels RePaint visits, from steps - 1 (the noisiest) to -1 (clean data).

    Consecutive entries differ by one: a step down is a model step, a step up a forward jump.
    On reaching a level that is a multiple of ``jump_length`` (0, j, 2j, ... below
    steps - jump_length) with resamplings left there, the walk goes ``jump_length`` levels up and
    comes down again; each such level is revisited ``jump_n_sample - 1`` times. Model evaluations:
    steps + (number of such levels) * (jump_n_sample - 1) * jump_length.
    """
    steps = _positive_int("steps", steps)
    jump_length = _positive_int("jump_length", jump_length)
    jump_n_sample = _positive_int("jump_n_sample", jump_n_sample)
    if jump_n_sample > 1 and jump_length >= steps:
        raise ConfigError(
            f"jump_length {jump_length} leaves no room to jump back on a chain of {steps} steps; "
            f"give a jump_length below {steps} (or jump_n_sample=1 for no resampling)"
        )
    left = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    k = steps - 1
    path = [k]
    while k >= 0:
        k -= 1
        path.append(k)
        if left.get(k, 0) > 0:
            left[k] -= 1
            for _ in range(jump_length):
                k += 1
                path.append(k)
    return path


def model_levels(steps: int, jump_length: int = DEFAULT_JUMP_LENGTH, jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE) -> list[int]:
    """The chain level of each model evaluation, in order: the start of every down step of
    :func:`repaint_schedule` (level k is the k-th least noisy of the grid's timesteps)."""
    path = repaint_schedule(steps, jump_length, jump_n_sample)
    return [a for a, b in zip(path, path[1:]) if b < a]


def model_evaluations(steps: int, jump_length: int = DEFAULT_JUMP_LENGTH, jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE) -> int:
    """How many times RePaint calls the model per image."""
    return len(model_levels(steps, jump_length, jump_n_sample))


def check_keep(keep: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """``keep`` (bool, or numbers that are all 0 or 1) broadcast to ``shape`` as a bool tensor;
    a ConfigError names what is wrong with it."""
    keep = torch.as_tensor(keep)
    if keep.dtype != torch.bool:
        if keep.is_complex() or not bool(((keep == 0) | (keep == 1)).all()):
            raise ConfigError("the keep mask must hold only 0 (generate) and 1 (keep), or be a bool tensor; "
                              "it holds other values")
        keep = keep != 0
    try:
        return torch.broadcast_to(keep, shape)
    except RuntimeError:
        raise ConfigError(f"a keep mask of shape {list(keep.shape)} does not broadcast to the images' shape "
                          f"{list(shape)}; give [H, W], [1, 1, H, W], [B, 1, H, W] or [B, C, H, W]") from None


@torch.inference_mode()
def run_repaint(
    denoiser: Denoiser, x: Tensor, plan: Plan, *, known: Tensor, keep: Tensor, jump_length: int = DEFAULT_JUMP_LENGTH,
    jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE, generator: torch.Generator | None = None, callback: Callback | None = None,
) -> Tensor:
    """x [B, C, H, W] at the plan's noisiest level -> x_0 by RePaint on the chain of the plan's
    levels (a plan to clean data; see :func:`sample_repaint`)."""
    path = repaint_schedule(len(plan), jump_length, jump_n_sample)
    keep = check_keep(keep, x.shape).to(x.device)
    if tuple(known.shape) != tuple(x.shape):
        raise ConfigError(f"the known image has shape {list(known.shape)}, x_T {list(x.shape)}; they must match")
    known = known.to(x.device, x.dtype)
    times, ab = plan.times[::-1], plan.alpha_bars[:-1][::-1]  # level k is times[k], least noisy first
    chain = Schedule.from_alpha_bars(ab).to(x.device)  # level k -> k - 1 keeps alpha_bar (Nichol & Dhariwal)
    betas = chain.betas.tolist()
    any_kept = bool(keep.any())  # nothing kept: no draws for it, so the walk is the ancestral sampler's exactly
    i = 0
    for k, k_next in zip(path, path[1:]):
        if k_next > k:  # eq. 9: one forward step of the chain, x_{k+1} ~ N(sqrt(1 - beta) x_k, beta I)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = math.sqrt(1.0 - betas[k_next]) * x + math.sqrt(betas[k_next]) * noise
            continue
        if any_kept:  # eq. 8: the kept pixels as the given image noised to this level, q(x_k | x_0)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = torch.where(keep, q_sample_at(known, ab[k], noise), x)
        x0, _, var_output = denoiser(x, times[k], ab[k])
        if callback is not None:
            callback(i, x, x0)
        i += 1
        x = posterior_step(chain, x0, x, k, denoiser.variance_type, var_output, generator)
    return torch.where(keep, known, x)  # at clean data q(x_0 | x_0) is the image itself


sample_repaint = public_sampler(
    "sample_repaint", run_repaint, grid=DEFAULT_GRID, steps=DEFAULT_STEPS, plan_options=False,
    own={"known": REQUIRED, "keep": REQUIRED, "jump_length": DEFAULT_JUMP_LENGTH, "jump_n_sample": DEFAULT_JUMP_N_SAMPLE},
    check=lambda a: repaint_schedule(a["steps"], a["jump_length"], a["jump_n_sample"]), doc="""x_T [B, C, H, W] (noise at the noisiest level) -> x_0 [B, C, H, W] whose ``keep`` pixels are
    ``known`` [B, C, H, W] (in [-1, 1], like x_T) exactly and whose other pixels are generated.

    ``keep`` is a mask broadcastable to x_T, True (or 1) where a pixel is kept. The chain has
    ``steps`` levels at the timesteps of ``grid`` (as the samplers choose them; the paper: 250,
    ``uniform``); ``jump_length`` and ``jump_n_sample`` set the resampling (:func:`repaint_schedule`).
    ``model_fn`` may be a guided one (:mod:`ddpm.sampling.guidance`). ``callback(i, x_k, pred_x0)``
    is called before each model step, i counting model evaluations, with x_k after the kept pixels
    were put in. ``objective``, ``variance_type``, ``clip`` and the thresholds are the samplers'
    (:mod:`ddpm.sampling.common`).
    """)


__all__ = ["DEFAULT_GRID", "DEFAULT_JUMP_LENGTH", "DEFAULT_JUMP_N_SAMPLE", "DEFAULT_STEPS", "check_keep",
           "model_evaluations", "model_levels", "repaint_schedule", "run_repaint", "sample_repaint"]
