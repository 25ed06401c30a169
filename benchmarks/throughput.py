"""Training and sampling throughput: ours beside lucidrains' and diffusers' networks, one process.

Prints markdown tables (paste them into benchmarks/README.md):

* training: images/s of a full optimizer step (loss, backward, clipping, optimizer, EMA) for
  each row, its ratio to lucidrains' default (fp32), the network's parameters and training
  FLOPs per step (``torch.utils.flop_counter``, forward + backward), the achieved FLOP/s
  against this machine's peak matrix-multiply FLOP/s measured in the same run, and the peak
  memory of the row (CPU: peak RSS of a fresh child process above its baseline before the
  model is built; CUDA: ``max_memory_allocated``);
* sampling: milliseconds per network evaluation at batch 64, and each sampler's own cost beyond
  the network (total time of the call minus the time inside the network, per step);
* fast paths one by one: optimizer variants, EMA update, gradient clipping and the attention
  implementation at several sequence lengths.

Rows are measured side by side and interleaved (A B C A B C ...); the figures are medians of
``--repeats`` repeats. Machines are noisy: compare the ratios, not the absolute times. The
header reports the load of other processes during the run.

    python benchmarks/throughput.py                 # full run, ~10-15 min on 2 CPU cores
    python benchmarks/throughput.py --quick         # ~3-4 min
    python benchmarks/throughput.py --compile       # adds torch.compile rows (minutes to compile)

lucidrains' and diffusers' rows need the ``bench`` extra (``pip install -e '.[bench]'``);
without it they are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpm import GaussianDiffusion
from ddpm.models import Unet
from ddpm.models.layers import Attention
from ddpm.sampling import sample as run_sampler
from ddpm.runs.build import adamw_kernel, use_bf16
from ddpm.training.ema import EMA

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


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_train(spec: TrainSpec, device: torch.device):
    """(step(), network, loss_fn()) for one row: step is a whole optimizer step, as its trainer
    takes it; loss_fn computes the loss alone (for counting FLOPs)."""
    net = spec.net
    g = torch.Generator().manual_seed(0)
    images = torch.rand(net.batch, net.channels, net.size, net.size, generator=g).to(device)
    if spec.impl == "ours":
        # mirrors ddpm/training/loop.py: AdamW, loss, backward, clipping, finite check, step, EMA
        model = Unet(channels=net.channels, **net.unet, grad_checkpoint=spec.grad_checkpoint, attn_impl=spec.attn)
        diffusion = GaussianDiffusion(model, net.size).to(device)
        if spec.channels_last:
            model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        ema = EMA(model, 0.995)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **{spec.optimizer: True})
        fn = torch.compile(model) if spec.compile else model

        def loss_fn():
            with autocast(device, spec.bf16):
                return diffusion.loss_terms(images, network=fn).loss.mean()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            float(loss.detach())
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            bool(torch.isfinite(norm))
            opt.step()
            ema.update(model)

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


def count_flops(loss_fn) -> int:
    """FLOPs of one forward + backward (matrix products and convolutions; see flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn().backward()
    return counter.get_total_flops()


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _memory_child(spec: TrainSpec, threads: int) -> int:
    torch.set_num_threads(threads)
    if spec.impl == "lucidrains":  # import outside the measured window
        import denoising_diffusion_pytorch  # noqa: F401
    elif spec.impl == "diffusers":
        import diffusers  # noqa: F401
    base = peak_rss_bytes()
    step, _, _ = build_train(spec, torch.device("cpu"))
    for _ in range(3):
        step()
    return peak_rss_bytes() - base


def peak_memory(spec: TrainSpec, device: torch.device, threads: int) -> int:
    """Peak memory of a row: on CUDA in this process, on a CPU in a fresh child process."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step, _, _ = build_train(spec, device)
        for _ in range(3):
            step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_memory_child, (spec, threads))


def interleaved(funcs: dict, repeats: int, device: torch.device, inner: dict | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` times, in the order A B C A B C ..."""
    times = {k: [] for k in funcs}
    for _ in range(repeats):
        for k, f in funcs.items():
            n = (inner or {}).get(k, 1)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            sync(device)
            times[k].append((time.perf_counter() - t0) / n)
    return times


# ---- peak matrix-multiply FLOP/s ------------------------------------------------------------


def peak_matmul(device: torch.device, dtype: torch.dtype, repeats: int):
    """The fastest square matrix product on this machine: (label, fn, FLOPs per call, FLOP/s).

    Tries several sizes, as torch.matmul and, on a CPU, as a 1x1 convolution (oneDNN, which the
    networks' convolutions use; MKL's fp32 matmul runs well below it on some AMD CPUs); FLOP/s
    from the fastest of ``repeats`` timings.
    """
    sizes = (2048, 4096, 8192) if device.type == "cuda" else (256, 512, 1024, 2048)
    funcs, flops = {}, {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        funcs[f"matmul n={n}"] = lambda a=a, b=b: a @ b
        if device.type == "cpu":
            x, w = a.t().reshape(1, n, n, 1).contiguous(), b.t().reshape(n, n, 1, 1).contiguous()
            funcs[f"conv1x1 n={n}"] = lambda x=x, w=w: torch.ops.aten.mkldnn_convolution(x, w, None, [0, 0], [1, 1], [1, 1], 1)
        flops.update({f"matmul n={n}": 2 * n**3, f"conv1x1 n={n}": 2 * n**3})
    for f in funcs.values():
        f()
    inner = {k: max(1, 2 * sizes[-1] ** 3 // 8 // flops[k]) for k in funcs}  # similar work per timing
    rates = {k: flops[k] / min(v) for k, v in interleaved(funcs, repeats, device, inner).items()}
    best = max(rates, key=rates.get)
    return best, funcs[best], flops[best], rates[best]


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


def profile_step(step, device: torch.device, top: int = 12) -> str:
    """torch.profiler's operators with the most self time over two steps, as a table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=40)


# ---- the machine's state --------------------------------------------------------------------


def busy_jiffies() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def own_cpu_seconds() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


# ---- the report -----------------------------------------------------------------------------


def fmt_range(v: list[float]) -> str:
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per row (default 5; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sampler steps, fewer rows")
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (compiling takes minutes on a CPU)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--training-only", action="store_true", help="skip the sampling and fast-path sections")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators of one training "
                    "step of ours (defaults) and lucidrains' (fp32, bf16)")
    ap.add_argument("--json", type=Path, default=None, help="also write every measurement to this JSON file")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    repeats = args.repeats or (3 if args.quick else 5)
    jiffies0, own0, wall0, load0 = busy_jiffies(), own_cpu_seconds(), time.perf_counter(), os.getloadavg()
    have = {}
    for pkg in ("denoising_diffusion_pytorch", "diffusers"):
        try:
            __import__(pkg)
            have[pkg] = True
        except ImportError:
            have[pkg] = False

    seed, mnist = seed_net(), mnist_net()
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    cpu_bf16 = device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    auto_bf16 = use_bf16(None, device)  # what `ddpm train` does here by default
    auto_kernel = next(iter(adamw_kernel(device)))
    defaults = f"ours, defaults here ({'bf16' if auto_bf16 else 'fp32'}, {auto_kernel} AdamW)"
    specs = [
        TrainSpec(defaults, "ours", seed, bf16=auto_bf16, optimizer=auto_kernel),
        TrainSpec("ours, fp32, foreach AdamW", "ours", seed, optimizer="foreach"),
        TrainSpec("ours, fp32, fused AdamW", "ours", seed, optimizer="fused"),
        TrainSpec("ours, bf16, foreach AdamW", "ours", seed, bf16=True, optimizer="foreach"),
        TrainSpec("ours, bf16, fused AdamW", "ours", seed, bf16=True, optimizer="fused"),
        TrainSpec("ours, bf16 + fused + channels_last", "ours", seed, bf16=True, optimizer="fused", channels_last=True),
        TrainSpec("ours, bf16 + fused + SDPA attention forced", "ours", seed, bf16=True, optimizer="fused", attn="sdpa"),
        TrainSpec("ours, bf16 + fused + grad checkpoint", "ours", seed, bf16=True, optimizer="fused", grad_checkpoint=True),
    ]
    # the defaults row repeats one of the others: drop that copy
    specs = [s for i, s in enumerate(specs) if not any(replace(s, label="") == replace(t, label="") for t in specs[:i])]
    if args.quick:
        specs = [s for s in specs if "channels_last" not in s.label and "SDPA" not in s.label and "checkpoint" not in s.label]
    if have["denoising_diffusion_pytorch"]:
        specs += [TrainSpec("lucidrains, fp32 (its default)", "lucidrains", seed), TrainSpec("lucidrains, bf16 autocast", "lucidrains", seed, bf16=True)]
    if have["diffusers"]:
        specs += [TrainSpec("diffusers UNet2DModel, fp32", "diffusers", seed), TrainSpec("diffusers UNet2DModel, bf16 autocast", "diffusers", seed, bf16=True)]
    specs += [
        TrainSpec(defaults.replace("ours,", "ours MNIST,"), "ours", mnist, bf16=auto_bf16, optimizer=auto_kernel),
        TrainSpec("ours MNIST, fp32, foreach AdamW", "ours", mnist, optimizer="foreach"),
        TrainSpec("ours MNIST, bf16 + fused + SDPA attention forced", "ours", mnist, bf16=True, optimizer="fused", attn="sdpa"),
    ]
    if args.compile:
        specs += [TrainSpec("ours, bf16 + fused + torch.compile", "ours", seed, bf16=True, optimizer="fused", compile=True),
                  TrainSpec("ours MNIST, bf16 + fused + torch.compile", "ours", mnist, bf16=True, optimizer="fused", compile=True)]
    if device.type == "cuda" and not cuda_bf16:
        specs = [s for s in specs if not s.bf16]

    print(f"# torch {torch.__version__} on {device} ({threads} threads), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 fast on this device: {cpu_bf16 or cuda_bf16}")
    if mnist.note:
        print(f"# note: {mnist.note}")
    for pkg, ok in have.items():
        if not ok:
            print(f"# {pkg} not installed: its rows are skipped (pip install -e '.[bench]')")
    results: dict = {"device": str(device), "threads": threads, "repeats": repeats, "torch": torch.__version__}

    # peak matrix-multiply FLOP/s: the fastest square product, then timed again among the
    # training rows (interleaved with them, so it sees the same machine) for the % of peak
    peak = {dt: peak_matmul(device, getattr(torch, dt), repeats) for dt in ("float32", "bfloat16")}
    print("# peak matmul GFLOP/s (fastest square product, best of the repeats): "
          + "; ".join(f"{dt} {p[3] / 1e9:.0f} ({p[0]})" for dt, p in peak.items()))

    # ---- training
    memory = {}
    if not args.no_memory:
        for s in specs:
            if not s.compile:
                memory[s.label] = peak_memory(s, device, threads)
    rows, flops, params = {}, {}, {}
    for s in specs:
        t0 = time.perf_counter()
        step, model, loss_fn = build_train(s, device)
        params[s.label] = sum(p.numel() for p in model.parameters())
        key = (s.impl, s.net.name)
        if key not in flops:
            flops[key] = count_flops(loss_fn)
        for _ in range(2):  # warm-up (and compilation)
            step()
        if s.compile:
            print(f"# {s.label}: compiled and warmed up in {time.perf_counter() - t0:.0f} s")
        rows[s.label] = step
    inner = {s.label: (2 if s.net.name == "seed" else 6) // (2 if args.quick else 1) for s in specs}
    for dt, (_, fn, f, rate) in peak.items():
        rows[f"peak {dt}"], inner[f"peak {dt}"] = fn, max(1, round(0.5 * rate / f))  # ~0.5 s a timing
    times = interleaved(rows, repeats, device, inner)
    peak_rate = {dt: peak[dt][2] / statistics.median(times[f"peak {dt}"]) for dt in peak}
    results["peak_flops"] = {dt: dict(kernel=p[0], best=p[3], median_among_rows=peak_rate[dt]) for dt, p in peak.items()}
    base = statistics.median(times["lucidrains, fp32 (its default)"]) if "lucidrains, fp32 (its default)" in times else None
    print(f"\n## Training: one optimizer step, median of {repeats} interleaved repeats ({device}, {threads} threads)\n")
    print("% of peak: against the fastest square matrix product of the same precision, timed among the rows: "
          + ", ".join(f"{dt} {r / 1e9:.0f} GFLOP/s" for dt, r in peak_rate.items()) + "\n")
    print("| row | network | params | GFLOP/step | images/s [min-max] | vs lucidrains fp32 | achieved GFLOP/s | % of peak | peak memory MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    results["training"] = {}
    for s in specs:
        v = times[s.label]
        per_s = [s.net.batch / t for t in v]
        f = flops[(s.impl, s.net.name)]
        achieved = f / statistics.median(v)
        pk = peak_rate["bfloat16" if s.bf16 else "float32"]
        ratio = f"{base / statistics.median(v):.2f}x" if base and s.net.name == "seed" else ""
        mem = f"{memory[s.label] / 2**20:.0f}" if s.label in memory else "-"
        net = f"{s.net.name} {s.net.channels}x{s.net.size}x{s.net.size} b{s.net.batch}"
        print(f"| {s.label} | {net} | {params[s.label] / 1e6:.2f}M | {f / 1e9:.1f} | {fmt_range(per_s)} | {ratio} | "
              f"{achieved / 1e9:.0f} | {100 * achieved / pk:.0f}% | {mem} |")
        results["training"][s.label] = dict(spec=asdict(s), seconds=v, flops=f, params=params[s.label], memory=memory.get(s.label))
    if args.profile:
        for label in (defaults, "lucidrains, fp32 (its default)", "lucidrains, bf16 autocast"):
            if label in rows:
                print(f"\n## Profile of one training step: {label}\n")
                print(profile_step(rows[label], device))
    del rows, step, model, loss_fn
    if not args.training_only:
        sampling_and_components(args, device, repeats, seed, mnist, have, results)
    report_machine(jiffies0, own0, wall0, load0, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def sampling_and_components(args, device, repeats, seed, mnist, have, results) -> None:
    # ---- sampling: network evaluations at batch 64
    nets = {}
    for key, net in (("seed", seed), ("mnist", mnist)):
        model = Unet(channels=net.channels, **net.unet).to(device).eval()
        for p in model.parameters():  # trained-like weights, not the zero init of residual branches
            nn.init.normal_(p, std=0.02)
        nets[f"ours {key}"] = GaussianDiffusion(model, net.size).to(device)
    if have["denoising_diffusion_pytorch"]:
        from denoising_diffusion_pytorch import Unet as LucidrainsUnet

        nets["lucidrains seed"] = LucidrainsUnet(**SEED_UNET).to(device).eval()
    if have["diffusers"]:
        nets["diffusers seed"] = diffusers_unet(seed).to(device).eval()
    forwards = {}
    for name, obj in nets.items():
        net = mnist if "mnist" in name else seed
        x = torch.randn(SAMPLE_BATCH, net.channels, net.size, net.size, device=device)
        t = torch.randint(0, 1000, (SAMPLE_BATCH,), device=device)
        model = obj.model if isinstance(obj, GaussianDiffusion) else obj
        for bf16 in (False, True):
            def fwd(model=model, x=x, t=t, bf16=bf16):
                with torch.inference_mode(), autocast(device, bf16):
                    model(x, t)

            fwd()
            forwards[f"{name}, {'bf16' if bf16 else 'fp32'}"] = fwd
    ftimes = interleaved(forwards, repeats, device, {k: (5 if "mnist" in k else 1) for k in forwards})
    print(f"\n## Sampling: one network evaluation at batch {SAMPLE_BATCH}, ms (median [min-max] of {repeats})\n")
    print("| network | fp32 ms/eval | bf16 ms/eval |")
    print("|---|---:|---:|")
    for name in nets:
        print(f"| {name} | {fmt_range([1e3 * v for v in ftimes[name + ', fp32']])} | {fmt_range([1e3 * v for v in ftimes[name + ', bf16']])} |")
    results["forward"] = ftimes

    # ---- sampling: the samplers' own cost
    # the seed-size networks' forward is warm already and a call takes a minute: one repeat
    runs = sampler_runs(nets, device, args.quick)
    measured = {k: [] for k in runs}
    for k, run in runs.items():
        if "mnist" in k:
            run()  # warm-up
    for i in range(repeats):
        for k, run in runs.items():
            if i == 0 or "mnist" in k:
                measured[k].append(run())
    print(f"\n## Samplers at batch {SAMPLE_BATCH}, fp32: own cost beyond the network "
          f"(MNIST: median of {repeats} interleaved repeats; seed-size networks: one run)\n")
    print("| sampler | evals | ms/step total | ms/step in network | overhead ms/step | overhead % of a step |")
    print("|---|---:|---:|---:|---:|---:|")
    results["samplers"] = {}
    for k, v in measured.items():
        total = statistics.median(a / c for a, _, c in v)
        inside = statistics.median(b / c for _, b, c in v)
        over = [(a - b) / c for a, b, c in v]
        pct = statistics.median(100 * (a - b) / a for a, b, _ in v)
        print(f"| {k} | {v[0][2]} | {1e3 * total:.1f} | {1e3 * inside:.1f} | {1e3 * statistics.median(over):.2f} | {pct:.2f}% |")
        results["samplers"][k] = v

    # ---- fast paths one by one
    comp = component_times(device, repeats, args.quick)
    print(f"\n## Fast paths one by one (the seed network's parameters), ms, median of {repeats}\n")
    print("| what | ms |")
    print("|---|---:|")
    for k, v in comp.items():
        print(f"| {k} | {v:.2f} |")
    results["components"] = comp


def report_machine(jiffies0, own0, wall0, load0, results) -> None:
    wall = time.perf_counter() - wall0
    jiffies1 = busy_jiffies()
    if jiffies0 is not None and jiffies1 is not None:
        hz = os.sysconf("SC_CLK_TCK")
        others = max(0.0, (jiffies1 - jiffies0) / hz - (own_cpu_seconds() - own0)) / wall
        print(f"\n# machine: {os.cpu_count()} CPUs; other processes used {others:.2f} CPUs on average during this "
              f"{wall / 60:.1f}-minute run; load average {load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        results["other_cpus"] = others


if __name__ == "__main__":
    main()
