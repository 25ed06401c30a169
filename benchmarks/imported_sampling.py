"""Sampling an imported diffusers DDPM: our samplers against diffusers' own pipelines, in one run.

A UNet2DModel with google/ddpm-cifar10-32's architecture (35.7M parameters; random weights: speed
does not depend on them) is saved as a pipeline folder with its scheduler (linear betas, T = 1000,
fixed_large, clip_sample), imported with ``ddpm import``, and the same batch is drawn by

- ours: ``load_run(run).sample`` with dpm++2m at 20 steps and unipc3 at 10 (the run's defaults otherwise);
- diffusers: ``DDIMPipeline`` at its default 50 steps and ``DDPMPipeline`` at its default 1000,

interleaved over ``--repeats`` rounds (median wall time of each), all on one device in one process,
so the ratios compare like with like. Each row also gives the time per network evaluation, which
shows how much of the difference is the number of evaluations and how much each library's overhead.

    python benchmarks/imported_sampling.py --device cpu --batch 1 --repeats 1 --ddpm-steps 20

(the command behind the table in benchmarks/README.md.) ``--ddpm-steps`` runs DDPMPipeline with
fewer steps where its 1000 take too long; the printed table says which it ran.

The FID of the paper (3.17 on CIFAR-10, Ho et al. 2020, table 1) comes from the real weights, on a
GPU: ``ddpm import diffusers:google/ddpm-cifar10-32 --out runs/ddpm-cifar10 --dataset cifar10`` and then
``ddpm eval --run runs/ddpm-cifar10 --features inception --num-samples 50000 --sampler ancestral
--steps 1000 --download`` (printed by ``--fid-command``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

CIFAR10_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=[128, 256, 256, 256],
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], attention_head_dim=None,
    norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, act_fn="silu")
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=True,
                 variance_type="fixed_large", prediction_type="epsilon")

FID_COMMAND = ("ddpm import diffusers:google/ddpm-cifar10-32 --out runs/ddpm-cifar10 --dataset cifar10\n"
               "ddpm eval --run runs/ddpm-cifar10 --features inception --num-samples 50000 --sampler ancestral "
               "--steps 1000 --batch-size 500 --bpd-images 0 --download --device cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="DDPMPipeline's steps (its default: 1000)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the CPU; 0: torch's default")
    parser.add_argument("--fid-command", action="store_true", help="print the command that measures the paper's FID")
    args = parser.parse_args()
    if args.fid_command:
        print(FID_COMMAND)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

    from ddpm import load_run
    from ddpm.interop import import_diffusers

    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="imported-sampling-"))
    torch.manual_seed(0)
    unet = UNet2DModel(**CIFAR10_UNET).eval()
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(str(work / "pipe"))
    diffusion = load_run(import_diffusers(work / "pipe", work / "run"), device=args.device)
    unet = unet.to(device)
    ddpm = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER))
    ddim = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(ddpm.scheduler.config))
    for pipe in (ddpm, ddim):
        pipe.set_progress_bar_config(disable=True)
    b = args.batch
    cells = {
        "ours dpm++2m, 20 steps": (20, lambda: diffusion.sample(b, sampler="dpm++2m", steps=20)),
        "ours unipc3, 10 steps": (10, lambda: diffusion.sample(b, sampler="unipc3", steps=10)),
        "diffusers DDIMPipeline, 50 steps": (50, lambda: ddim(batch_size=b, num_inference_steps=50, output_type="np")),
        f"diffusers DDPMPipeline, {args.ddpm_steps} steps": (
            args.ddpm_steps, lambda: ddpm(batch_size=b, num_inference_steps=args.ddpm_steps, output_type="np")),
    }
    times: dict[str, list[float]] = {name: [] for name in cells}
    with torch.inference_mode():
        diffusion.sample(1, sampler="dpm++2m", steps=2)  # warm-up: first calls allocate
        for _ in range(args.repeats):
            for name, (_, draw) in cells.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                draw()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"batch {b}, {args.repeats} repeat(s), median wall time ({where}, torch {torch.__version__})")
    base = statistics.median(times["ours dpm++2m, 20 steps"])
    print("| sampler | s per batch | ms per network evaluation | time against ours dpm++2m 20 |")
    print("| --- | ---: | ---: | ---: |")
    for name, (steps, _) in cells.items():
        t = statistics.median(times[name])
        print(f"| {name} | {t:.2f} | {1000 * t / steps:.0f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
