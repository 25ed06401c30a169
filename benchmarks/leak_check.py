"""Does a long training run grow in memory? RSS of `ddpm train`'s defaults over many steps.

Trains the default configuration (the built-in digits, the default model and settings of
``ddpm train``) for ``--steps`` steps through the Python API, in a temporary runs directory, and
records the resident set size (``VmRSS`` of /proc/self/status), its peak (``VmHWM``) and the
number of Python objects the garbage collector tracks every ``--every`` steps (the trainer's log
interval, so the samples fall between steps). It prints the table and the growth from the end
of the first quarter (after the allocator and the first sample grid and checkpoint have warmed
up) to the end, in MB and in MB per 1000 steps, with a least-squares slope over the second half.

Sample grids and checkpoints come at the defaults' own intervals (every 1000 steps), so their
allocations are part of what is measured. Not a test: it prints figures and gates nothing.

    OMP_NUM_THREADS=1 python benchmarks/leak_check.py --steps 5000
"""

from __future__ import annotations

import argparse
import gc
import re
import tempfile
import time
from pathlib import Path

import torch

from ddpm.config import RunConfig, apply_overrides
from ddpm.training.loop import train


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (kB there) in MB; Linux only."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024


def slope_per_1000(steps: list[int], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``steps``, per 1000 steps."""
    n = len(steps)
    mx, my = sum(steps) / n, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in steps)
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(steps, values)) / sxx if sxx else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="training steps (default 5000)")
    parser.add_argument("--every", type=int, default=100, help="record memory every N steps (default 100)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    samples: list[tuple[int, float, float, float, int]] = []  # step, seconds, RSS MB, peak MB, objects
    began = time.monotonic()

    def record(step: int) -> None:
        samples.append((step, time.monotonic() - began, proc_status_mb("VmRSS"), proc_status_mb("VmHWM"), len(gc.get_objects())))

    def log(message: str) -> None:
        found = re.match(r"step (\d+)/", message)
        if found:
            record(int(found.group(1)))

    with tempfile.TemporaryDirectory(prefix="ddpm-leak-") as runs:
        config = apply_overrides(RunConfig(), {"max_steps": str(args.steps), "log_every": str(args.every),
                                               "runs_dir": runs, "name": "leak"})
        record(0)
        result = train(config, log=log, progress=False)
    print(f"trained {result.step} steps of the default model in {result.elapsed_s:.0f} s "
          f"({torch.get_num_threads()} torch threads), final loss {result.last_loss:.4f}\n")
    print(f"{'step':>6} {'seconds':>8} {'RSS MB':>8} {'peak MB':>8} {'objects':>8}")
    for step, seconds, rss, peak, objects in samples:
        print(f"{step:>6} {seconds:>8.0f} {rss:>8.1f} {peak:>8.1f} {objects:>8}")

    trained = [s for s in samples if s[0] > 0]
    base = min(trained, key=lambda s: abs(s[0] - args.steps / 4))  # the end of the first quarter
    last = trained[-1]
    half = [s for s in trained if s[0] >= args.steps / 2]
    span = (last[0] - base[0]) / 1000
    growth = last[2] - base[2]
    print(f"\nRSS at step {base[0]}: {base[2]:.1f} MB; at step {last[0]}: {last[2]:.1f} MB; "
          f"growth {growth:+.1f} MB ({growth / span:+.2f} MB per 1000 steps)" if span else "")
    slope = slope_per_1000([s[0] for s in half], [s[2] for s in half])
    print(f"least-squares RSS slope over the second half: {slope:+.2f} MB per 1000 steps")
    print(f"Python objects tracked by gc: {base[4]} at step {base[0]}, {last[4]} at step {last[0]} "
          f"({last[4] - base[4]:+d}); peak RSS {last[3]:.1f} MB")


if __name__ == "__main__":
    main()
