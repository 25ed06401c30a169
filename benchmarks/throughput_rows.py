"""What benchmarks/throughput.py measures: the networks (ours, lucidrains', diffusers'), one
training step of each as its own trainer takes it, the samplers' runs and the fast paths one by
one. Ours trains with the loop's own step (``ddpm.training.step.Stepper``), not a copy of it."""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpm import GaussianDiffusion
from ddpm.config import RunConfig
from ddpm.models import Unet
from ddpm.models.layers import Attention
from ddpm.sampling import sample as run_sampler
from ddpm.training.ema import EMA
from ddpm.training.step import Micro, Stepper

from measure import autocast, interleaved, sync

ROOT = Path(__file__).resolve().parent.parent
SEED_UNET = dict(dim=64, dim_mults=(1, 2, 4, 8))  # lucidrains' README network, 32x32x3, batch 16
SAMPLE_BATCH = 64

# ---- the networks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Net:
    name: str  # "seed" or "mnist"
    channels: int
    size: int
    batch: int
    unet: dict
    note: str = ""


def seed_net() -> Net:
    return Net("seed", 3, 32, 16, dict(SEED_UNET))


def mnist_net() -> Net:
    """Our default MNIST network, read from configs/mnist.toml (so the table follows the config)."""
    path = ROOT / "configs" / "mnist.toml"
    if not path.exists():
        return Net("mnist", 1, 28, 64, dict(dim=32, dim_mults=(1, 2, 2)), "configs/mnist.toml missing: dim=32, dim_mults=(1, 2, 2)")
    from ddpm.config import load_toml

    config = load_toml(path)
    m = config.model
    unet = dict(dim=m.dim, dim_mults=tuple(m.dim_mults), num_res_blocks=m.num_res_blocks, full_attn=tuple(m.full_attn) or None,
                attn_heads=m.attn_heads, attn_dim_head=m.attn_dim_head, resnet_block_groups=m.resnet_block_groups)
    return Net("mnist", 1, 28, config.train.batch_size, unet)


def diffusers_unet(net: Net):
    """A diffusers UNet2DModel with the seed configuration's widths (64, 128, 256, 512), one
    resnet per level on the way down (two on the way up, diffusers' layout) and attention at the
    4x4 level: 42.9M parameters, the closest to our 36.0M of the configurations with these widths
    (two resnets per level: 61.8M)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=net.size, in_channels=net.channels, out_channels=net.channels, block_out_channels=(64, 128, 256, 512),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32, norm_num_groups=8,
    )


# ---- training rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSpec:
    label: str
    impl: str  # ours | lucidrains | diffusers
    net: Net
    bf16: bool = False
    channels_last: bool = False
    optimizer: str = "fused"  # ours: fused or foreach (the loop's choice: ddpm.runs.build.adamw_kernel)
    attn: str = "auto"
    grad_checkpoint: bool = False
    compile: bool = False


def build_train(spec: TrainSpec, device: torch.device):
    """(step(), network, loss_fn()) for one row: step is a whole optimizer step, as its trainer
    takes it; loss_fn computes the loss alone (for counting FLOPs)."""
    net = spec.net
    g = torch.Generator().manual_seed(0)
    images = torch.rand(net.batch, net.channels, net.size, net.size, generator=g).to(device)
    if spec.impl == "ours":
        # the loop's step, optimizer settings, warm-up schedule and EMA, from the defaults of
        # `ddpm train`; the AdamW kernel (fused or foreach) is the row's
        tc = RunConfig().train
        model = Unet(channels=net.channels, **net.unet, grad_checkpoint=spec.grad_checkpoint, attn_impl=spec.attn)
        diffusion = GaussianDiffusion(model, net.size).to(device)
        if spec.channels_last:
            model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        ema = EMA(model, tc.ema_decay, tc.ema_warmup)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=tuple(tc.adam_betas),
                                **{spec.optimizer: True})
        warmup = max(tc.warmup_steps, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        fn = torch.compile(model, dynamic=False) if spec.compile else model  # as the loop compiles
        stepper = Stepper(diffusion, fn, opt, schedule, ema, grad_clip=tc.grad_clip, bf16=spec.bf16)
        batch = Micro(images * 2 - 1)  # the loop's sources deliver [-1, 1]; t and noise are drawn per step

        def loss_fn():
            with autocast(device, spec.bf16):
                return diffusion.loss_terms(images, network=fn).loss.mean()

        def step():
            stepper.step(lambda micro: batch)

        return step, model, loss_fn
    if spec.impl == "lucidrains":
        # mirrors the defaults of lucidrains' Trainer: Adam (0.9, 0.99), clipping at 1, EMA every 10 steps
        from denoising_diffusion_pytorch import GaussianDiffusion as LucidrainsDiffusion, Unet as LucidrainsUnet
        from ema_pytorch import EMA as LucidrainsEMA

        model = LucidrainsUnet(channels=net.channels, **net.unet)
        diffusion = LucidrainsDiffusion(model, image_size=net.size, timesteps=1000).to(device)
        if spec.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(diffusion.parameters(), lr=8e-5, betas=(0.9, 0.99))
        ema = LucidrainsEMA(diffusion, beta=0.995, update_every=10).to(device)

        def loss_fn():
            with autocast(device, spec.bf16):
                return diffusion(images)

        def step():
            loss = loss_fn()
            loss.item()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.update()

        return step, model, loss_fn
    if spec.impl == "diffusers":
        # mirrors diffusers' train_unconditional.py: DDPMScheduler noise, AdamW, clipping, EMAModel
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        model = diffusers_unet(net).to(device)
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
        ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)

        def loss_fn():
            x0 = images * 2 - 1
            noise = torch.randn_like(x0)
            t = torch.randint(0, 1000, (x0.shape[0],), device=device)
            with autocast(device, spec.bf16):
                pred = model(scheduler.add_noise(x0, noise, t), t).sample
            return F.mse_loss(pred.float(), noise)

        def step():
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.step(model.parameters())
            loss.item()

        return step, model, loss_fn
    raise ValueError(spec.impl)


# ---- sampling -------------------------------------------------------------------------------


class TimedNet(nn.Module):
    """The network, with the time spent inside it added up (synchronised on CUDA)."""

    def __init__(self, inner: nn.Module, device: torch.device):
        super().__init__()
        self.inner, self.device_ = inner, device
        self.seconds, self.calls = 0.0, 0

    def forward(self, *args):
        sync(self.device_)
        t0 = time.perf_counter()
        out = self.inner(*args)
        sync(self.device_)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def sampler_runs(nets: dict, device: torch.device, quick: bool) -> dict:
    """label -> run() -> (total seconds, seconds inside the network, network calls).

    The MNIST network runs the samplers at their usual step counts (ddim 50, dpm++2m 20; the
    ancestral chain respaced to 50 steps); the seed-size networks, 20 times slower per call,
    run 20 steps of each: the overhead per step does not depend on the count, and fewer steps
    spread the per-call set-up over fewer of them, so the figure errs on the high side.
    """
    full = {"ddim": 50, "dpm++2m": 20, "ancestral": 50}
    steps = {"mnist": {k: 10 for k in full} if quick else full, "seed": {k: 10 if quick else 20 for k in full}}
    runs = {}

    def ours(key, diffusion, sampler, n):
        # the registry's sampler, as GaussianDiffusion.sample calls it, with a timed network
        timed = TimedNet(diffusion.model, device)
        net = seed_net() if key == "seed" else mnist_net()
        schedule = diffusion.schedule_on(device)

        def run():
            timed.seconds, timed.calls = 0.0, 0
            sync(device)
            t0 = time.perf_counter()
            g = torch.Generator(device).manual_seed(0)
            x_T = torch.randn(SAMPLE_BATCH, net.channels, net.size, net.size, device=device, generator=g)
            run_sampler(sampler, timed, x_T, schedule, n, objective=diffusion.objective,
                        variance_type=diffusion.variance_type, generator=g)
            sync(device)
            return time.perf_counter() - t0, timed.seconds, timed.calls

        runs[f"ours {key}: {sampler} {n}"] = run

    for key in ("seed", "mnist"):
        for s in ("ddim", "dpm++2m", "ancestral"):
            ours(key, nets[f"ours {key}"], s, steps[key][s])
    if "lucidrains seed" in nets:
        from denoising_diffusion_pytorch import GaussianDiffusion as LucidrainsDiffusion

        luc = LucidrainsDiffusion(nets["lucidrains seed"], image_size=32, timesteps=1000, sampling_timesteps=steps["seed"]["ddim"]).to(device)
        timed_luc = luc.model = TimedNet(nets["lucidrains seed"], device)

        def run_lucidrains():
            timed_luc.seconds, timed_luc.calls = 0.0, 0
            sync(device)
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # its progress bar is part of its cost
                luc.sample(batch_size=SAMPLE_BATCH)
            sync(device)
            return time.perf_counter() - t0, timed_luc.seconds, timed_luc.calls

        runs[f"lucidrains seed: ddim {steps['seed']['ddim']}"] = run_lucidrains
    if "diffusers seed" in nets:
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        unet = nets["diffusers seed"]
        for name, cls in (("ddim", DDIMScheduler), ("dpm++2m", DPMSolverMultistepScheduler)):
            def run_diffusers(cls=cls, n=steps["seed"][name]):
                timed = TimedNet(unet, device)
                sync(device)
                t0 = time.perf_counter()
                with torch.inference_mode():  # diffusers' pipelines sample under no_grad
                    scheduler = cls(num_train_timesteps=1000)
                    scheduler.set_timesteps(n)
                    x = torch.randn(SAMPLE_BATCH, 3, 32, 32, device=device, generator=torch.Generator(device).manual_seed(0))
                    for t in scheduler.timesteps:
                        x = scheduler.step(timed(x, t).sample, t, x).prev_sample
                sync(device)
                return time.perf_counter() - t0, timed.seconds, timed.calls

            runs[f"diffusers seed: {name} {steps['seed'][name]}"] = run_diffusers
    return runs


# ---- fast paths one by one ------------------------------------------------------------------


def ema_loop_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], d: float) -> None:
    """The plain per-parameter EMA update, for comparison with EMA's foreach one."""
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.mul_(d).add_(p, alpha=1 - d)


def component_times(device: torch.device, repeats: int, quick: bool) -> dict[str, float]:
    """Median milliseconds of the optimizer, EMA, clipping and attention variants."""
    model = Unet(**SEED_UNET).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    params = list(model.parameters())
    opts = {"AdamW foreach": dict(foreach=True), "AdamW fused": dict(fused=True), "AdamW for-loop": dict(foreach=False)}
    funcs = {k: torch.optim.AdamW(params, lr=1e-12, **kw).step for k, kw in opts.items()}
    funcs["Adam default (lucidrains)"] = torch.optim.Adam(params, lr=1e-12).step
    ema = EMA(model, 0.995)
    ema_params = [p.clone() for p in params]
    funcs["EMA update, foreach (ours)"] = lambda: ema.update(model)
    funcs["EMA update, per-parameter loop"] = lambda: ema_loop_update(ema_params, params, 0.995)
    funcs["clip_grad_norm_"] = lambda: torch.nn.utils.clip_grad_norm_(params, 1.0)
    lengths = ((16, 512, 4), (64, 64, 7)) if quick else ((16, 512, 4), (64, 64, 7), (16, 256, 16), (4, 64, 32))
    for batch, ch, hw in lengths:
        x = torch.randn(batch, ch, hw, hw, device=device, requires_grad=True)
        mods = {impl: Attention(ch, impl=impl).to(device) for impl in ("sdpa", "math")}
        mods["math"].load_state_dict(mods["sdpa"].state_dict())
        for bf16 in (False, True):
            for impl, m in mods.items():
                def run(m=m, x=x, bf16=bf16):
                    with autocast(device, bf16):
                        y = m(x)
                    y.float().sum().backward()

                funcs[f"attention {impl}, {hw * hw} positions, B={batch} C={ch}, {'bf16' if bf16 else 'fp32'}"] = run
    for f in funcs.values():
        f()
    return {k: 1e3 * statistics.median(v) for k, v in interleaved(funcs, repeats, device).items()}
