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
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/throughput.py --fp32-only
                                                    # as an AVX2 CPU trains: fp32 rows only

What is measured (the networks, each row's training step, the samplers' runs) is in
throughput_rows.py; how (interleaved timers, FLOPs, memory, the machine) in measure.py.

lucidrains' and diffusers' rows need the ``bench`` extra (``pip install -e '.[bench]'``);
without it they are skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ddpm import GaussianDiffusion
from ddpm.models import Unet
from ddpm.runs.build import adamw_kernel, use_bf16

from measure import MachineLoad, autocast, bf16_fast, count_flops, fmt_range, interleaved, peak_matmul, peak_memory, profile_step
from throughput_rows import SAMPLE_BATCH, SEED_UNET, TrainSpec, build_train, component_times, diffusers_unet, mnist_net, sampler_runs, seed_net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats per row (default 5; --quick 3)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sampler steps, fewer rows")
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (compiling takes minutes on a CPU)")
    ap.add_argument("--fp32-only", action="store_true", help="only the fp32 rows: what a CPU without fast bf16 (AVX2) trains in")
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
    machine = MachineLoad()
    have = {}
    for pkg in ("denoising_diffusion_pytorch", "diffusers"):
        try:
            __import__(pkg)
            have[pkg] = True
        except ImportError:
            have[pkg] = False

    seed, mnist = seed_net(), mnist_net()
    fast_bf16 = bf16_fast(device)
    auto_bf16 = use_bf16(None, device)  # what `ddpm train` does here by default
    auto_kernel = next(iter(adamw_kernel(device)))
    defaults = f"ours, defaults here ({'bf16' if auto_bf16 else 'fp32'}, {auto_kernel} AdamW)"
    specs = [
        TrainSpec(defaults, "ours", seed, bf16=auto_bf16, optimizer=auto_kernel),
        TrainSpec("ours, fp32, foreach AdamW", "ours", seed, optimizer="foreach"),
        TrainSpec("ours, fp32, fused AdamW", "ours", seed, optimizer="fused"),
        TrainSpec("ours, fp32 + fused + channels_last", "ours", seed, optimizer="fused", channels_last=True),
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
                  TrainSpec("ours MNIST, bf16 + fused + torch.compile", "ours", mnist, bf16=True, optimizer="fused", compile=True),
                  TrainSpec("ours, fp32 + fused + torch.compile", "ours", seed, optimizer="fused", compile=True),
                  TrainSpec("ours MNIST, fp32 + fused + torch.compile", "ours", mnist, optimizer="fused", compile=True)]
    if args.fp32_only:
        specs = [s for s in specs if not s.bf16]
    if device.type == "cuda" and not fast_bf16:
        specs = [s for s in specs if not s.bf16]

    print(f"# torch {torch.__version__} on {device} ({threads} threads), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 fast on this device: {fast_bf16}")
    if mnist.note:
        print(f"# note: {mnist.note}")
    for pkg, ok in have.items():
        if not ok:
            print(f"# {pkg} not installed: its rows are skipped (pip install -e '.[bench]')")
    results: dict = {"device": str(device), "threads": threads, "repeats": repeats, "torch": torch.__version__}

    # peak matrix-multiply FLOP/s: the fastest square product, then timed again among the
    # training rows (interleaved with them, so it sees the same machine) for the % of peak
    peak = {dt: peak_matmul(device, getattr(torch, dt), repeats) for dt in ("float32",) + (() if args.fp32_only else ("bfloat16",))}
    print("# peak matmul GFLOP/s (fastest square product, best of the repeats): "
          + "; ".join(f"{dt} {p[3] / 1e9:.0f} ({p[0]})" for dt, p in peak.items()))

    # ---- training
    memory = {}
    if not args.no_memory:
        for s in specs:
            if not s.compile:
                memory[s.label] = peak_memory(build_train, s, device, threads)
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
    machine.report(results)
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




if __name__ == "__main__":
    main()
