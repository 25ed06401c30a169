"""The editing methods of :class:`~ddpm.facade.gaussian.GaussianDiffusion`: image-to-image
(SDEdit, Meng et al. 2022) and inpainting (RePaint, Lugmayr et al. 2022), and the conversions
between the user's [0, 1] images and the library's [-1, 1] ones.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..sampling import Denoiser, inpaint, make_plan
from ..sampling.common import Callback


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (dropout off) and restore its mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def normalize(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return images * 2 - 1


def unnormalize(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


class Editing:
    """``img2img`` and ``inpaint`` for :class:`~ddpm.facade.gaussian.GaussianDiffusion`, which
    provides ``sample``, ``conditioned_model_fn``, ``schedule_on`` and the attributes used here."""

    def _edit_input(self, images: Tensor) -> Tensor:
        """Checked ``images`` on the model's device, in [-1, 1]."""
        self._check_images(images)
        low, high = (0.0, 1.0) if self.auto_normalize else (-1.0, 1.0)
        lo, hi = images.aminmax() if images.numel() else (torch.zeros(()), torch.zeros(()))
        if not images.is_floating_point() or not (low <= float(lo) and float(hi) <= high):
            kind = images.dtype if not images.is_floating_point() else f"values from {float(lo):g} to {float(hi):g}"
            raise ConfigError(f"images must be floats in [{low:g}, {high:g}]; got {kind}")
        images = images.to(self.device)
        return normalize(images) if self.auto_normalize else images

    @torch.inference_mode()
    def img2img(
        self,
        images: Tensor,
        strength: float = 0.6,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        eta: float = 0.0,
        grid: str | None = None,
        clip: str | bool | None = "static",
        classes: Tensor | Sequence[int] | int | None = None,
        guidance_scale: float = 1.0,
        prompts: Sequence[str] | str | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        """SDEdit (Meng et al. 2022): ``images`` [B, C, H, W] in [0, 1] noised to ``strength`` of the
        chain, t = round(strength (T - 1)), by q(x_t | x_0) (Ho et al. eq. 4), then denoised by
        ``sampler`` from there: low strength keeps the image, high strength keeps its rough layout.
        ``strength=1`` is plain sampling (the images are not used). Exactly
        ``sample(B, x_start=images, t_start=t, ...)``: the noise comes first from ``generator``
        (or is ``noise``), then the sampler's own draws. ``steps`` counts model evaluations from t
        down (default: the sampler's, at most the t + 1 whole timesteps there are); the other
        settings are :meth:`sample`'s.
        """
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise ConfigError(f"strength must lie in (0, 1] (1: plain sampling); got {strength!r}")
        self._edit_input(images)
        start = None if strength == 1.0 else round(strength * (self.num_timesteps - 1))
        return self.sample(
            images.shape[0], sampler=sampler, steps=steps, eta=eta, grid=grid, clip=clip, classes=classes,
            guidance_scale=guidance_scale, generator=generator, noise=noise, callback=callback,
            x_start=None if start is None else images, t_start=start, prompts=prompts,
        )

    @torch.inference_mode()
    def inpaint(
        self,
        images: Tensor,
        keep: Tensor,
        *,
        steps: int | None = None,
        jump_length: int = inpaint.DEFAULT_JUMP_LENGTH,
        jump_n_sample: int = inpaint.DEFAULT_JUMP_N_SAMPLE,
        grid: str = inpaint.DEFAULT_GRID,
        clip: str | bool | None = "static",
        classes: Tensor | Sequence[int] | int | None = None,
        guidance_scale: float = 1.0,
        prompts: Sequence[str] | str | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        callback: Callback | None = None,
    ) -> Tensor:
        """RePaint (Lugmayr et al. 2022, :mod:`ddpm.sampling.inpaint`): ``images`` [B, C, H, W] in
        [0, 1] with the pixels where ``keep`` is 1 (True) kept exactly as given and the rest drawn
        by the model to fit them. ``keep`` broadcasts to the images ([H, W], [1, 1, H, W],
        [B, 1, H, W], ...) and must keep some pixels and generate others.

        The chain has ``steps`` levels on ``grid`` (default and the paper: 250, or T if smaller); every
        ``jump_length`` levels the walk goes back up that many levels, ``jump_n_sample - 1`` times
        (the paper: 10 and 10, 2,410 model evaluations; ``jump_n_sample=1``: plain replacement, one
        evaluation per level). A fast setting: ``steps=50, jump_length=5, jump_n_sample=5``
        (230 evaluations; benchmarks/README.md). ``classes`` or ``prompts`` and ``guidance_scale``
        condition and guide the model as in :meth:`sample`; ``noise`` is x at the noisiest level (default:
        drawn from ``generator``); ``callback(i, x_t, pred_x0)`` sees [-1, 1] tensors.
        """
        x0 = self._edit_input(images)
        mask = inpaint.check_keep(keep, x0.shape)
        if not bool(mask.any()) or bool(mask.all()):
            what = "nothing" if not bool(mask.any()) else "every pixel"
            raise ConfigError(f"the keep mask keeps {what}, which leaves nothing to inpaint; keep some pixels (1) "
                              "and leave others to generate (0)")
        steps = min(inpaint.DEFAULT_STEPS, self.num_timesteps) if steps is None else steps
        model_fn = self.conditioned_model_fn(classes, guidance_scale, x0.shape[0], self.device, prompts)
        x_T = noise.to(self.device, x0.dtype) if noise is not None else torch.randn(
            x0.shape, generator=generator, device=self.device, dtype=x0.dtype)
        denoiser = Denoiser(model_fn, self.objective, self.variance_type, clip)
        inpaint.repaint_schedule(steps, jump_length, jump_n_sample)  # its sentence before the grid's
        plan = make_plan(self.schedule_on(self.device), steps, grid)
        with eval_mode(self):  # no dropout: the same generator gives the same images
            out = inpaint.run_repaint(denoiser, x_T, plan, known=x0, keep=mask.to(self.device), jump_length=jump_length,
                                      jump_n_sample=jump_n_sample, generator=generator, callback=callback)
        out = unnormalize(out) if self.auto_normalize else out
        return torch.where(mask.to(out.device), images.to(out.device, out.dtype), out)  # kept pixels bit for bit
