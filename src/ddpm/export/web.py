"""``ddpm export web``: a static folder that draws images from a run in the reader's browser.

The folder holds ``index.html`` and its script ``page.js``, ``sampler.js`` (the run's sampler in
JavaScript, one function per core of :mod:`ddpm.sampling`), ``plan.json`` and ``model.onnx``
(:mod:`ddpm.export.onnx`). ``plan.json`` is written here by the code that plans Python's sampling:
the settings by :func:`ddpm.runs.settings.sample_settings`, the visited times and noise levels by
:func:`ddpm.sampling.settings.plan_for`, and each step's coefficients by the sampler's own table
function (:func:`~ddpm.sampling.ddim.ddim_coefficients`,
:func:`~ddpm.sampling.dpm_solver.multistep_coefficients`, ...), so the browser applies exactly the
numbers PyTorch does and no equation is written twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from ..config import SampleConfig, resolved_guidance
from ..errors import ConfigError
from ..fileio import atomic_write_text, fsync_dir
from ..runs import load_for_sampling
from ..runs.settings import sample_settings
from ..runs.validate import check_sample_settings
from ..sampling import get_sampler
from ..sampling.ddim import ddim_coefficients
from ..sampling.dpm_solver import multistep_coefficients, sde_coefficients
from ..sampling.settings import plan_for
from ..sampling.unipc import unipc_coefficients
from .onnx import network_for_export, require_export_packages, write_checked
from .runtime import copy_runtime, package_dir, runtime_spec

SAMPLERS = ("ddim", "dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc2", "unipc3")
"""The samplers the page runs (ancestral sampling, the rest, takes hundreds of steps)."""
MAX_IMAGES = 64
PAGE_FILES = ("index.html", "page.js", "sampler.js")
WRITTEN = PAGE_FILES + ("plan.json", "model.onnx", "runtime")


def settings_for_page(ckpt, sampler: str | None, steps: int | None, guidance_scale: float | None) -> SampleConfig:
    """The run's ``[sample]`` settings with the caller's; a distilled student keeps its own sampler
    (deterministic DDIM) and its own steps on its own grid, the only ones it was trained for."""
    own = ckpt.config.sample
    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be 0 (the sampler's default) or a positive number of model evaluations; got {steps}")
    steps = steps or None
    if sampler is not None:
        get_sampler(sampler)
    if ckpt.config.distill.teacher:
        if sampler not in (None, own.sampler):
            raise ConfigError(f"this run is a {own.steps}-step student distilled for {own.sampler} on its own grid; "
                              "leave out --sampler")
        if steps not in (None, own.steps):
            raise ConfigError(f"this run is a {own.steps}-step student, trained on its own {own.steps} timesteps only; "
                              "leave out --steps")
        return sample_settings(own, guidance_scale=guidance_scale)
    settings = sample_settings(own, sampler=sampler, steps=steps, guidance_scale=guidance_scale)
    if sampler is not None and sampler != own.sampler:
        settings = replace(settings, grid="", steps=steps or 0, eta=0.0, clipped_eps=True)  # the new sampler's defaults
    if settings.sampler not in SAMPLERS:
        raise ConfigError(f"the page samples with {', '.join(SAMPLERS)}; this run's sampler {settings.sampler!r} is not "
                          "among them, so pass one of those with --sampler")
    return settings


def coefficient_table(name: str, alpha_bars: Sequence[float], eta: float) -> list:
    """Each step's coefficients, from the sampler's own Python table (see the cores in ddpm.sampling)."""
    ab = list(alpha_bars)
    if name == "ddim":
        return [list(ddim_coefficients(ab[k], ab[k + 1], eta)) for k in range(len(ab) - 1)]
    if name == "dpm++2m-sde":
        return [[c_x, list(c_m), c_z] for c_x, c_m, c_z in sde_coefficients(ab[:-1], 2, True, end=ab[-1])]
    if name.startswith("dpm++"):
        order = 3 if name == "dpm++3m" else 2
        return [[c_x, list(c_m), 0.0] for c_x, c_m in multistep_coefficients(ab[:-1], order, True, end=ab[-1])]
    order = int(name[-1])
    return [[[p[0], list(p[1])], None if c is None else [c[0], list(c[1]), c[2]]]
            for p, c in unipc_coefficients(ab[:-1], order, True, end=ab[-1])]


def page_plan(diffusion, ckpt, settings: SampleConfig, inputs: list[str], prompts: list[str], n: int,
              bundled: bool) -> dict:
    """Everything the page needs besides the graph: sizes, conditioning, the plan and its table."""
    plan = plan_for(diffusion.schedule, settings)
    data, d = ckpt.config.data, ckpt.config.diffusion
    conditional = bool(diffusion.num_classes) or diffusion.text_conditional
    if diffusion.num_classes:
        names = list(getattr(data, "class_names", None) or [])
        labels = names if len(names) == diffusion.num_classes else [str(i) for i in range(diffusion.num_classes)]
    else:
        labels = list(prompts)
    guidance = resolved_guidance(settings.guidance_scale, bool(diffusion.num_classes)) if conditional else 1.0
    name = settings.sampler
    return {
        "format": 1,
        "run": {"name": ckpt.path.parent.parent.name, "step": ckpt.step,
                "student": bool(ckpt.config.distill.teacher)},
        "image": {"channels": diffusion.channels, "height": diffusion.image_size[0], "width": diffusion.image_size[1]},
        "inputs": inputs,
        "condition": {"kind": "class" if diffusion.num_classes else "prompt" if diffusion.text_conditional else "none",
                      "labels": labels, "null": len(labels)},
        "schedule": {"beta_schedule": d.beta_schedule, "timesteps": d.timesteps, "zero_terminal_snr": d.zero_terminal_snr},
        "denoiser": {"objective": diffusion.objective, "learned_variance": diffusion.variance_type == "learned_range",
                     "clip": settings.clip, "threshold_percentile": settings.threshold_percentile,
                     "threshold_max": settings.threshold_max or None, "clipped_eps": settings.clipped_eps},
        "sampler": {"name": name, "kind": "ddim" if name == "ddim" else "unipc" if name.startswith("unipc") else "multistep",
                    "order": 1 if name == "ddim" else 3 if name[-1] == "3" or name == "dpm++3m" else 2,
                    "eta": settings.eta},
        "plan": {"times": list(plan.times), "alpha_bars": list(plan.alpha_bars), "final": settings.final},
        "table": coefficient_table(name, plan.alpha_bars, settings.eta),
        "defaults": {"n": n, "guidance": guidance, "seed": 0, "max_images": MAX_IMAGES},
        "runtime": runtime_spec(bundled),
    }


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder for the page")
    if out.is_dir() and any(out.iterdir()):
        ours = {p.name for p in out.iterdir()} <= set(WRITTEN)
        if not overwrite:
            raise ConfigError(f"--out {out} is not empty; choose a new folder, or pass --overwrite to replace a page "
                              "written there before")
        if not ours:
            raise ConfigError(f"--out {out} holds files that ddpm export web did not write; choose a new or empty folder")


def export_web(source: str | Path, out: str | Path, *, prompts: Sequence[str] | None = None, sampler: str | None = None,
               steps: int | None = None, n: int | None = None, guidance_scale: float | None = None,
               bundle_runtime: bool = False, runtime_dir: str | Path | None = None, use_ema: bool = True,
               overwrite: bool = False, log: Callable[[str], None] = print) -> Path:
    """Write the page of run ``source`` to the folder ``out`` (new or empty; ``overwrite``: one
    written here before) and return it. Everything is checked and built in a temporary folder
    beside ``out`` first, so a failure leaves ``out`` as it was."""
    require_export_packages()
    out = Path(out)
    n = 16 if n is None else n
    if not 1 <= n <= MAX_IMAGES:
        raise ConfigError(f"--n must be from 1 to {MAX_IMAGES} images; got {n}")
    check_out(out, overwrite)
    package = package_dir(runtime_dir) if bundle_runtime else None
    diffusion, ckpt = load_for_sampling(source, use_ema=use_ema, device="cpu")
    settings = settings_for_page(ckpt, sampler, steps, guidance_scale)
    conditional = bool(diffusion.num_classes) or diffusion.text_conditional
    check_sample_settings(settings, diffusion.schedule, conditional)
    net, inputs, prompts = network_for_export(diffusion, prompts)
    plan = page_plan(diffusion, ckpt, settings, inputs, prompts, n, bundle_runtime)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a web server must read the folder (mkdtemp makes it private)
    try:
        log(f"exporting {ckpt.path} ({'EMA' if use_ema else 'raw'} weights) for the page: {settings.sampler}, "
            f"{len(plan['plan']['times'])} steps")
        write_checked(diffusion, net, inputs, prompts, tmp / "model.onnx", log=lambda m: None)
        static = resources.files("ddpm.export") / "static"
        for name in PAGE_FILES:
            (tmp / name).write_bytes((static / name).read_bytes())
        atomic_write_text(tmp / "plan.json", json.dumps(plan, indent=1) + "\n")
        if package is not None:
            copy_runtime(package, tmp / "runtime")
        move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"wrote {out} ({size / 1e6:.1f} MB); try it: python -m http.server --directory {out}, then open "
        "http://127.0.0.1:8000/")
    return out


def move_into(tmp: Path, out: Path) -> None:
    """The finished folder ``tmp`` becomes ``out``: renamed whole where ``out`` is new or empty,
    else file by file (each rename atomic), replacing an earlier page's files."""
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        fsync_dir(out.parent)
        return
    stale_runtime = not (tmp / "runtime").exists() and (out / "runtime").exists()
    for item in tmp.iterdir():
        target = out / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
            os.replace(item, target)
        else:
            os.replace(item, target)
    if stale_runtime:
        shutil.rmtree(out / "runtime")  # a page now loading from the CDN keeps no stale copy
    fsync_dir(out)


def embed_snippet(out: Path, width: int = 720, height: int = 820) -> str:
    """An iframe for a blog post, for the folder uploaded beside the post under its own name."""
    return (f'<iframe src="{out.name}/index.html" width="{width}" height="{height}" style="border:0;max-width:100%" '
            f'loading="lazy" title="Draw images in your browser"></iframe>')
