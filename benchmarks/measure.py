"""How benchmarks/throughput.py measures: interleaved timers, FLOP counts, peak memory, the
machine's peak matrix-multiply rate and its load. Nothing here knows what a row trains."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
from pathlib import Path

import torch


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_fast(device: torch.device) -> bool:
    """Whether this device computes bf16 natively (what the header reports)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        return False  # emulated: ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU computes as an AVX2 one
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def interleaved(funcs: dict, repeats: int, device: torch.device, inner: dict | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` times, in the order A B C A B C ...

    Interleaving spreads a noisy neighbour's bursts over every row alike, so ratios between
    rows hold where absolute times do not."""
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


def fmt_range(v: list[float]) -> str:
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]"


def count_flops(loss_fn) -> int:
    """FLOPs of one forward + backward (matrix products and convolutions; see flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn().backward()
    return counter.get_total_flops()


# ---- peak memory ------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _memory_child(build, spec, threads: int) -> int:
    torch.set_num_threads(threads)
    if spec.impl == "lucidrains":  # import outside the measured window
        import denoising_diffusion_pytorch  # noqa: F401
    elif spec.impl == "diffusers":
        import diffusers  # noqa: F401
    base = peak_rss_bytes()
    step, _, _ = build(spec, torch.device("cpu"))
    for _ in range(3):
        step()
    return peak_rss_bytes() - base


def peak_memory(build, spec, device: torch.device, threads: int) -> int:
    """Peak memory of three steps of ``build(spec, device)``'s row: on CUDA in this process; on a
    CPU in a fresh child process (the peak RSS of this one only ever grows). ``build`` must be a
    module-level function, which the child imports by name."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step, _, _ = build(spec, device)
        for _ in range(3):
            step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_memory_child, (build, spec, threads))


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


class MachineLoad:
    """What other processes took of the CPUs between ``MachineLoad()`` and ``report()``: the
    machine's busy time less this process's and its children's."""

    def __init__(self):
        self.jiffies, self.own, self.wall, self.load = busy_jiffies(), own_cpu_seconds(), time.perf_counter(), os.getloadavg()

    def report(self, results: dict) -> None:
        wall = time.perf_counter() - self.wall
        jiffies = busy_jiffies()
        if self.jiffies is None or jiffies is None:
            return
        others = max(0.0, (jiffies - self.jiffies) / os.sysconf("SC_CLK_TCK") - (own_cpu_seconds() - self.own)) / wall
        print(f"\n# machine: {os.cpu_count()} CPUs; other processes used {others:.2f} CPUs on average during this "
              f"{wall / 60:.1f}-minute run; load average {self.load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        results["other_cpus"] = others
