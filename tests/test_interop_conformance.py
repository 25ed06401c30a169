"""An imported diffusers DDPM against diffusers itself: the same network output, the same DDIM
trajectory, the same ancestral step, the same betas.

Each published model's config (shrunk, see diffusers_helpers) is saved with ``save_pretrained`` beside
its scheduler, imported with ``ddpm.interop.import_diffusers`` and loaded with ``ddpm.load_run``, then
compared with diffusers' own ``UNet2DModel``, ``DDIMScheduler.step`` and ``DDPMScheduler.step``.

The network is compared in float32. The samplers are compared in float64 (both networks converted,
diffusers' scheduler given the float64 cumulative product of its own betas, ``in_float64``): a randomly
initialised, shrunk UNet is far rougher than a trained one (its GroupNorms see a handful of values at
the lowest levels), and it amplifies float32 rounding (1e-8 after the first step, the two libraries
ordering their arithmetic differently) to 1e-1 over ten DDIM steps, which would hide real differences
as well as fake them. The schedules themselves are compared in ``test_schedule_equals_diffusers``.
"""

import copy

import pytest
import torch

from diffusers_helpers import GOOGLE_SCHEDULER, NEEDS_DIFFUSERS, PUBLISHED, TINY, save_pipeline

pytestmark = pytest.mark.needs(*NEEDS_DIFFUSERS)


def in_float64(sched):
    """diffusers' scheduler with its linear betas and their cumulative product computed in float64."""
    c = sched.config
    assert c.beta_schedule == "linear" and c.trained_betas is None
    sched.betas = torch.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=torch.float64)
    sched.alphas = 1.0 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    return sched


def float64(diffusion, unet):
    diffusion.model.double()
    unet.double()


def imported(tmp_path, unet_config, scheduler=None, kind="DDPMScheduler"):
    """(our GaussianDiffusion of the imported run, diffusers' UNet, diffusers' scheduler)."""
    from ddpm import load_run
    from ddpm.interop import import_diffusers

    unet, sched = save_pipeline(tmp_path / "pipe", unet_config, scheduler, kind=kind)
    run = import_diffusers(tmp_path / "pipe", tmp_path / "runs" / "imported")
    return load_run(run), unet, in_float64(sched)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Each published model's folder (saved once), its diffusers UNet and scheduler, and the imported run."""
    from ddpm.interop import import_diffusers

    made = {}

    def get(name):
        if name not in made:
            tmp = tmp_path_factory.mktemp(name)
            unet, sched = save_pipeline(tmp / "pipe", PUBLISHED[name])
            made[name] = (import_diffusers(tmp / "pipe", tmp / "runs" / "imported"), unet, sched)
        return made[name]

    return get


def rel_err(ours, theirs):
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_network_output_equals_diffusers(published, name):
    from ddpm import load_run

    run, unet, _ = published(name)
    diffusion = load_run(run)
    size = PUBLISHED[name]["sample_size"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, size, size, generator=g)
    t = torch.tensor([999, 17])
    with torch.no_grad():
        theirs = unet(x, t).sample
        ours = diffusion.model(x, t)
    assert ours.shape == theirs.shape == x.shape
    assert rel_err(ours, theirs) < 1e-5


# ddpm-ema-church-256's config is ddpm-celebahq-256's (one architecture for the 256 px google DDPMs):
# the ten-step trajectories run once for it
DISTINCT = ["ddpm-cifar10-32", "ddpm-celebahq-256"]


def test_church_and_celebahq_share_one_config():
    assert PUBLISHED["ddpm-ema-church-256"] == PUBLISHED["ddpm-celebahq-256"]


@pytest.mark.parametrize("name", DISTINCT)
def test_ddim_10_steps_equals_diffusers_loop(published, name):
    """Deterministic DDIM, 10 steps on diffusers' leading grid (900, 800, ..., 0), x0 clipped to [-1, 1]
    and the model's own eps kept (diffusers' use_clipped_model_output=False), ending at alpha_bar = 1
    (set_alpha_to_one=True), from the same x_T."""
    from diffusers import DDIMScheduler

    from ddpm import load_run

    run, unet, sched = published(name)
    diffusion, unet = load_run(run), copy.deepcopy(unet)
    size = PUBLISHED[name]["sample_size"]
    float64(diffusion, unet)
    x_T = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ddim = in_float64(DDIMScheduler.from_config(sched.config))
    ddim.set_timesteps(10)
    assert ddim.timesteps.tolist() == list(range(900, -1, -100))
    x = x_T.clone()
    with torch.no_grad():
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    ours = diffusion.sample(2, sampler="ddim", steps=10, grid="leading", clip="static", clipped_eps=False,
                            noise=x_T) * 2 - 1
    assert (ours - x).abs().max().item() < 1e-4


def one_ancestral_step(diffusion, x, t, seed):
    """Our x_{t-1} from x_t: the ancestral sampler visiting t and t - 1, x as it arrives at t - 1."""
    seen = {}

    def callback(i, x_now, _x0):
        if i == 1:
            seen["x"] = x_now.clone()

    diffusion.sample(x.shape[0], sampler="ancestral", timesteps=[t, t - 1], clip="static", noise=x,
                     generator=torch.Generator().manual_seed(seed), callback=callback)
    return seen["x"]


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range", "fixed_small_log"])
def test_ancestral_step_equals_ddpm_scheduler(tmp_path, variance):
    """One step x_t -> x_{t-1} with the same noise (one generator, seeded alike, draws it for both)."""
    config = dict(TINY, out_channels=6) if variance == "learned_range" else TINY
    diffusion, unet, sched = imported(tmp_path, config, dict(GOOGLE_SCHEDULER, variance_type=variance))
    float64(diffusion, unet)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.8
    for t in (999, 500, 1):
        with torch.no_grad():
            theirs = sched.step(unet(x, t).sample, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = one_ancestral_step(diffusion, x, t, seed=t)
        assert (ours - theirs).abs().max().item() < 1e-4, (variance, t)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ancestral_step_for_each_prediction_type(tmp_path, prediction):
    diffusion, unet, sched = imported(tmp_path, TINY, dict(GOOGLE_SCHEDULER, prediction_type=prediction))
    float64(diffusion, unet)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for t in (900, 40):
        with torch.no_grad():
            theirs = sched.step(unet(x, t).sample, t, x, generator=torch.Generator().manual_seed(5)).prev_sample
        ours = one_ancestral_step(diffusion, x, t, seed=5)
        assert (ours - theirs).abs().max().item() < 1e-4, (prediction, t)


def test_ancestral_step_without_clipping_and_with_thresholding(tmp_path):
    """clip_sample false reads as clip none; thresholding as Imagen's dynamic thresholding."""
    for n, extra in enumerate([dict(clip_sample=False), dict(thresholding=True, dynamic_thresholding_ratio=0.9,
                                                             sample_max_value=1.5)]):
        diffusion, unet, sched = imported(tmp_path / str(n), TINY, dict(GOOGLE_SCHEDULER, **extra))
        clip = "none" if n == 0 else "dynamic"
        float64(diffusion, unet)
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 3
        seen = {}
        kwargs = dict(threshold_percentile=0.9, threshold_max=1.5) if n else {}
        diffusion.sample(2, sampler="ancestral", timesteps=[700, 699], clip=clip, noise=x, **kwargs,
                         generator=torch.Generator().manual_seed(7), callback=lambda i, xx, _: seen.setdefault(i, xx.clone()))
        with torch.no_grad():
            theirs = sched.step(unet(x, 700).sample, 700, x, generator=torch.Generator().manual_seed(7)).prev_sample
        assert (seen[1] - theirs).abs().max().item() < 1e-4
        from ddpm.runs import read_checkpoint

        assert read_checkpoint(tmp_path / str(n) / "runs" / "imported").config.sample.clip == clip


@pytest.mark.parametrize("schedule", [
    dict(beta_schedule="linear", beta_start=0.0002, beta_end=0.03, num_train_timesteps=500),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(trained_betas=torch.linspace(1e-3, 0.05, 200).tolist(), num_train_timesteps=200),
])
def test_schedule_equals_diffusers(tmp_path, schedule):
    from diffusers import DDPMScheduler

    from ddpm.interop.scheduler import run_settings
    from ddpm.schedules import config_schedule
    from ddpm.config import DiffusionConfig

    config = dict(GOOGLE_SCHEDULER, **schedule)
    theirs = DDPMScheduler(**config)
    ours = config_schedule(DiffusionConfig(**run_settings(config, learned_variance=False)["diffusion"]))
    assert ours.num_timesteps == len(theirs.betas)
    assert torch.allclose(ours.betas, theirs.betas.double(), rtol=1e-5, atol=1e-8)
    assert torch.allclose(ours.alphas_cumprod, theirs.alphas_cumprod.double(), rtol=1e-4, atol=1e-7)


def test_ddim_scheduler_folder_imports_the_same(tmp_path):
    """A pipeline saved with a DDIMScheduler carries the same schedule and prediction type."""
    ddim = {k: v for k, v in GOOGLE_SCHEDULER.items() if k != "variance_type"}
    diffusion, unet, sched = imported(tmp_path, TINY, ddim, kind="DDIMScheduler")
    assert diffusion.variance_type == "fixed_small" and diffusion.objective == "pred_noise"
    assert torch.allclose(diffusion.schedule.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5)
