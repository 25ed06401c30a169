"""Streaming an image folder against holding it in memory: training speed and peak memory.

1. Speed: a 64x64 training run (``ddpm.training.loop.train``, the real loop) on the same folder
   from memory and streamed by DataLoader workers, side by side: the two runs advance in
   interleaved chunks of ``--chunk`` steps (each chunk resumes its run), and images/s is the
   loop's own figure (metrics.csv), which leaves out start-up and resuming.
2. Memory: peak memory of ``ddpm train`` on folders of ``--small`` and ``--large`` images,
   streamed and in memory, each a fresh process: the peak of the summed PSS of the process and
   its workers (proportional set size, so pages the forked workers share are not counted twice)
   and the main process's own peak RSS (VmHWM).

The folders are synthetic JPEGs (smooth random colour fields, ``--source-size`` pixels square,
resized to 64x64 on the fly), written under ``--work`` and deleted at the end.

    python benchmarks/streaming.py --work /tmp/stream-bench          # ~12 min on 2 CPU cores
    python benchmarks/streaming.py --work /tmp/stream-bench --memory-only --streamed-only \
        --sizes 2000,10000,20000 --repeats 2                           # the memory part alone
    python benchmarks/streaming.py --work /tmp/stream-bench --index-only --sizes 2000,10000,20000,40000
                                                                       # the index alone, ~2 min
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["--dim", "32", "--dim-mults", "1,2,2,2", "--image-size", "64", "--batch-size", "16", "--timesteps", "1000",
         "--log-every", "10", "--sample-every", "0", "--save-every", "0", "--no-tensorboard", "--hflip"]


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` JPEGs in 10 class folders: random 6x6 colour fields upsampled bicubically (photo-like
    smoothness, so the files and their decoding cost are those of ordinary pictures)."""
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        small.resize((size, size), Image.Resampling.BICUBIC).save(root / f"class{i % 10}" / f"{i:06d}.jpg", quality=90)
    return root


def ddpm(*args: str) -> list[str]:
    return [sys.executable, "-m", "ddpm", "train", *args]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _die_with_parent() -> None:
    """A child training run stops when this script is stopped (Linux: PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def speed(folder: Path, work: Path, chunks: int, chunk: int, workers: int) -> dict[str, list[float]]:
    modes = {"in memory": ["--no-stream"], f"streamed, {workers} workers": ["--stream", "--num-workers", str(workers)]}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    runs = work / "runs"
    for k in range(chunks):
        for mode, flags in modes.items():
            name = mode.split(",")[0].replace(" ", "-")
            steps = str((k + 1) * chunk)
            if k == 0:
                cmd = ddpm("--dataset", f"folder:{folder}", *MODEL, *flags, "--max-steps", steps, "--runs-dir", str(runs),
                           "--name", name, "--save-every", str(chunk))
            else:
                cmd = ddpm("--resume", str(runs / name), "--max-steps", steps)
            out = subprocess.run(cmd, env=env(), capture_output=True, text=True, preexec_fn=_die_with_parent)
            if out.returncode:
                raise SystemExit(out.stderr[-3000:])
            with open(runs / name / "metrics.csv") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) > k * chunk + 10]  # after the chunk's first interval
            rates[mode] += [float(r["images_per_s"]) for r in rows]
            print(f"  chunk {k + 1}/{chunks} {mode}: {statistics.median(float(r['images_per_s']) for r in rows):.1f} images/s",
                  flush=True)
    return rates


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def memory(folder: Path, work: Path, flags: list[str], steps: int) -> tuple[float, float, float]:
    """(peak summed PSS MiB of the process tree, peak RSS MiB of the main process, seconds)."""
    cmd = ddpm("--dataset", f"folder:{folder}", *MODEL, *flags, "--max-steps", str(steps), "--runs-dir",
               str(work / "mem-runs"), "--overwrite", "--name", "m")
    began = time.monotonic()
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent)
    peak_pss = peak_hwm = 0
    while proc.poll() is None:
        tree = [proc.pid] + _children(proc.pid)
        peak_pss = max(peak_pss, sum(_pss_kib(p) for p in tree))
        peak_hwm = max(peak_hwm, _hwm_kib(proc.pid))
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(proc.stderr.read()[-3000:])
    return peak_pss / 1024, peak_hwm / 1024, time.monotonic() - began


INDEX_PROBE = """
import sys, torch
from ddpm.data.stream import open_folder_stream
from ddpm.training.batches import BatchPlan
from ddpm.training.source import open_source
def kib(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))
before = kib("VmRSS:")
stream = open_folder_stream(sys.argv[1], (64, 64), 3, class_labels=True, log=lambda m: None)
source = open_source(stream, BatchPlan(len(stream), 16, seed=0), torch.device("cpu"), num_workers=0, log=print)
source.get(0), source.get(1)
print(len(stream), kib("VmHWM:") - before, kib("VmRSS:") - before)
"""


def index_memory(folder: Path) -> tuple[int, float, float]:
    """(images, peak and final RSS growth in MiB) of a fresh process that indexes ``folder`` for
    streaming and draws two batches from it, measured from after the imports: the part of the
    main process's memory that can grow with the folder, without the ~1 GB of the network around
    it (whose peak varies by tens of MiB from run to run)."""
    out = subprocess.run([sys.executable, "-c", INDEX_PROBE, str(folder)], env=env(), capture_output=True, text=True,
                         check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    n, peak, final = out.stdout.split()[-3:]
    return int(n), int(peak) / 1024, int(final) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ddpm-stream-bench"), help="scratch folder (deleted at the end)")
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--source-size", type=int, default=160, help="pixels of the synthetic JPEGs (resized to 64)")
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=40, help="steps per chunk of the speed runs")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--memory-steps", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--sizes", default="", help="comma-separated folder sizes of the memory part (default: small,large)")
    ap.add_argument("--memory-only", action="store_true", help="skip the speed part")
    ap.add_argument("--streamed-only", action="store_true", help="measure the memory of streamed runs only")
    ap.add_argument("--repeats", type=int, default=1, help="memory runs per folder and source (peaks vary run to run)")
    ap.add_argument("--index-only", action="store_true",
                    help="measure only the memory of indexing each folder and drawing two batches (seconds, not minutes)")
    args = ap.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.small, args.large]
    if args.work.exists():
        raise SystemExit(f"{args.work} exists; give a new --work folder (it is deleted at the end)")
    try:
        began = time.monotonic()
        folders = {n: make_folder(args.work / f"images-{n}", n, args.source_size, seed=k) for k, n in enumerate(sizes)}
        if not args.memory_only and args.small not in folders:
            folders[args.small] = make_folder(args.work / f"images-{args.small}", args.small, args.source_size)
        print(f"# wrote {' + '.join(str(n) for n in folders)} JPEGs of {args.source_size}x{args.source_size} in "
              f"{time.monotonic() - began:.0f} s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        if args.index_only:
            print("\n| images | peak RSS growth, MiB | RSS growth after two batches, MiB |\n|---:|---:|---:|")
            for n in sizes:
                for _ in range(args.repeats):
                    print("| {} | {:.1f} | {:.1f} |".format(*index_memory(folders[n])), flush=True)
            return
        rates = {} if args.memory_only else speed(folders[args.small], args.work, args.chunks, args.chunk, args.workers)
        sources = [("streamed", ["--stream", "--num-workers", str(args.workers)])]
        if not args.streamed_only:
            sources.append(("in memory", ["--no-stream"]))
        mem_rows = []
        for n in sizes:
            for label, flags in sources:
                for _ in range(args.repeats):
                    pss, hwm, seconds = memory(folders[n], args.work, flags, args.memory_steps)
                    mem_rows.append((n, label, pss, hwm, seconds))
                    print(f"  memory: {n} images {label}: {pss:.0f} MiB PSS (tree), {hwm:.0f} MiB peak RSS (main)", flush=True)
        if rates:
            base = statistics.median(rates["in memory"])
            print(f"\n## Training speed, 64x64, batch 16, {args.small} images ({args.chunks} interleaved chunks of {args.chunk} steps)\n")
            print("| source | images/s, median [min-max] of the logged intervals | vs in memory |\n|---|---:|---:|")
            for mode, v in rates.items():
                print(f"| {mode} | {statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}] | {statistics.median(v) / base:.3f} |")
        print(f"\n## Peak memory of ddpm train ({args.memory_steps} steps)\n")
        print("| images | source | peak PSS, process + workers, MiB | peak RSS, main process, MiB | wall s |\n|---:|---|---:|---:|---:|")
        for n, label, pss, hwm, seconds in mem_rows:
            print(f"| {n} | {label} | {pss:.0f} | {hwm:.0f} | {seconds:.0f} |")
        print(f"\n# load average at the end {os.getloadavg()[0]:.2f}; total {time.monotonic() - began:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
