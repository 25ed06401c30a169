"""The work behind ``ddpm serve``'s views, as calls into the library: drawing images with
:func:`ddpm.generate.generate` (streaming each step's x_t and predicted x_0 from the sampler's
callback) and one point of the forward process with :func:`ddpm.diffusion.q_sample`.

Pictures leave the server as PNG data URLs: the frames and the final grid laid out by
:func:`ddpm.viz.make_grid`, each final image exactly as ``ddpm sample`` writes it.
"""

from __future__ import annotations

import base64
import io
import math
import time
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor

from ..data import ImageDataset
from ..diffusion import q_sample
from ..facade import unnormalize
from ..generate import generate
from ..text.base import check_prompts
from ..viz import make_grid
from .catalog import Catalog, RunInfo
from .jobs import Job, Work
from .params import ForwardRequest, GenerateRequest, InpaintRequest

BATCH_SIZE = 64
"""Images per sampler batch: ``ddpm sample``'s default, so the same seed gives the same images."""


def png_url(images: Tensor, nrow: int | None = None, padding: int = 2) -> str:
    """Images [B, C, H, W] (floats in [0, 1] or uint8) as one PNG (a grid when B > 1), as a ``data:`` URL."""
    grid = make_grid(images.detach().cpu(), nrow=nrow, padding=padding if images.shape[0] > 1 else 0)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def streamed(job: Job, diffusion, *, n: int, steps: int, sampler: str, frame_interval: float,
             draw: Callable[[Callable[[int, int, Tensor, Tensor], None]], Tensor]) -> dict[str, Any]:
    """Run ``draw(on_step)`` as a job's work: a ``start`` event, then ``step`` events (at most one per
    ``frame_interval`` seconds, and always the last of each batch of ``steps`` model steps) with the
    progress and the x_t and predicted-x_0 grids. Returns the ``done`` fields every drawing job
    shares (images, grid, sampler, steps, seconds)."""
    batches = math.ceil(n / BATCH_SIZE)
    total = steps * batches
    job.emit("start", {"job": job.id, "total": total, "n": n, "steps": steps, "batches": batches,
                       "sampler": sampler, "device": str(diffusion.device)})
    last = [-math.inf]
    started = time.monotonic()

    def on_step(batch: int, i: int, x: Tensor, x0: Tensor) -> None:
        job.check()
        now = time.monotonic()
        if now - last[0] >= frame_interval or i == steps - 1:
            last[0] = now
            job.emit("step", {"done": batch * steps + i + 1, "total": total, "batch": batch,
                              "x_t": png_url(unnormalize(x)), "x0": png_url(unnormalize(x0))})

    images = draw(on_step)
    return {"images": [png_url(image[None]) for image in images], "grid": png_url(images),
                    "sampler": sampler, "steps": steps, "seconds": round(time.monotonic() - started, 3)}


def generation(catalog: Catalog, run: RunInfo, req: GenerateRequest, frame_interval: float = 0.1) -> Work:
    """The job that draws ``req``'s images (:func:`streamed`'s events), returning the final images
    for the ``done`` event."""

    def work(job: Job) -> dict[str, Any]:
        diffusion = catalog.model(run)
        job.check()  # loading can take a while; the client may have left meanwhile
        prompts = None
        if req.prompt is not None:  # checked as ddpm sample checks it (length, tokens) before drawing
            prompts = check_prompts([req.prompt], diffusion.text_encoder) * req.n
        done = streamed(job, diffusion, n=req.n, steps=req.steps, sampler=req.settings.sampler,
                           frame_interval=frame_interval,
                           draw=lambda on_step: generate(diffusion, req.n, batch_size=BATCH_SIZE, sample=req.settings,
                                                         seed=req.seed, labels=req.labels, on_step=on_step,
                                                         prompts=prompts))
        return {**done, "labels": req.labels, "prompt": req.prompt, "seed": req.seed}

    return work


def inpainting(catalog: Catalog, run: RunInfo, req: InpaintRequest, frame_interval: float = 0.1) -> Work:
    """The job that fills ``req``'s region of its image (RePaint; :func:`streamed`'s events, a step
    per model evaluation) and returns the completions for ``done``: the images ``ddpm inpaint``
    writes for the same settings (:func:`ddpm.editing.inpaint_images`, the same batches and seeds)."""
    from ..editing import inpaint_images
    from ..sampling.inpaint import DEFAULT_GRID

    def work(job: Job) -> dict[str, Any]:
        data, index = catalog.image(run, req.image)
        picture = data.images[index : index + 1].float().div(255.0)  # [1, C, H, W] in [0, 1], as ddpm inpaint reads a PNG
        diffusion = catalog.model(run)
        job.check()
        if req.prompt is not None:
            check_prompts([req.prompt], diffusion.text_encoder)
        done = streamed(
            job, diffusion, n=req.n, steps=req.evaluations, sampler="repaint", frame_interval=frame_interval,
            draw=lambda on_step: inpaint_images(
                diffusion, picture, req.keep, num=req.n, batch_size=BATCH_SIZE, seed=req.seed, steps=req.steps,
                jump_length=req.jump_length, jump_n_sample=req.jump_n_sample, grid=DEFAULT_GRID, clip=req.clip,
                labels=req.labels, guidance_scale=req.guidance_scale, prompt=req.prompt, on_step=on_step))
        return {**done, "input": png_url(picture), "labels": req.labels, "prompt": req.prompt, "seed": req.seed}

    return work


def forward_view(run: RunInfo, data: ImageDataset, index: int, req: ForwardRequest) -> dict[str, Any]:
    """x_0, the noise eps and x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al.
    eq. 4) for one image, with alpha_bar_t and the SNR. The noise depends on the seed only, so
    moving t slides one image along one path from x_0 to noise."""
    s = run.schedule
    x0 = data.to_float([index])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(req.seed))
    xt = q_sample(s, x0, torch.tensor([req.t]), noise)
    alpha_bar = float(s.alphas_cumprod[req.t])
    log_snr = float(s.log_snr[req.t])
    label = None if data.labels is None else int(data.labels[index])
    return {
        "t": req.t,
        "timesteps": s.num_timesteps,
        "alpha_bar": alpha_bar,
        "sqrt_alpha_bar": float(s.sqrt_alphas_cumprod[req.t]),
        "sqrt_one_minus_alpha_bar": float(s.sqrt_one_minus_alphas_cumprod[req.t]),
        "snr": math.exp(log_snr) if math.isfinite(log_snr) else 0.0,
        "log_snr": log_snr if math.isfinite(log_snr) else None,  # JSON has no -inf (zero terminal SNR)
        "label": label,
        "x0": png_url(unnormalize(x0)),
        "noise": png_url(unnormalize(noise)),  # shown clipped to [-1, 1], like an image
        "x_t": png_url(unnormalize(xt)),
    }


def schedule_view(run: RunInfo) -> dict[str, Any]:
    """alpha_bar_t and log-SNR at every t, for the page's chart (log-SNR -inf as null)."""
    s = run.schedule
    log_snr = [v if math.isfinite(v) else None for v in s.log_snr.tolist()]
    return {"timesteps": s.num_timesteps, "alpha_bar": s.alphas_cumprod.tolist(), "log_snr": log_snr}


def thumbnails(data: ImageDataset, start: int, count: int) -> dict[str, Any]:
    """Training images ``start`` to ``start + count - 1`` as PNG data URLs, with their labels."""
    end = min(start + count, len(data))
    items = []
    for i in range(start, end):
        items.append({"image": f"train:{i}", "label": None if data.labels is None else int(data.labels[i]),
                      "png": png_url(data.images[i : i + 1])})
    return {"total": len(data), "start": start, "images": items}
