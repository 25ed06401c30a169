"""Load test of ``ddpm serve`` on this machine: concurrent clients generating, viewing the forward
process and cancelling, for a fixed time. Reports the status codes seen (no 5xx expected), that
the queue bound holds (a full queue answers 429, never more than --queue-size waiting) and the
server's resident memory at the start, middle and end.

    python benchmarks/serve_load.py                      # 20 clients, 60 s, a tiny run trained first
    python benchmarks/serve_load.py --clients 5 --seconds 10

It only ever talks to 127.0.0.1, to a server it starts itself, and stops by itself: every client
loop is bounded by a deadline and a count, every request by a timeout. Exit status 1 if a 5xx
came back or the queue bound was broken.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

TINY = {"dataset": "digits", "dim": "8", "dim_mults": "1,2", "attn_heads": "2", "attn_dim_head": "8",
        "batch_size": "8", "sample_every": "0", "save_every": "0", "num_samples": "4", "tensorboard": "false",
        "max_steps": "2", "timesteps": "100", "name": "load"}
MAX_LOOPS = 10_000  # per client, whatever the deadline
MAX_EVENTS = 2_000  # per stream read


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(runs: Path, queue_size: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ddpm", "serve", "--runs-dir", str(runs), "--host", "127.0.0.1",
                             "--port", "0", "--device", "cpu", "--queue-size", str(queue_size)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if found:
            threading.Thread(target=lambda: [sys.stderr.write("server: " + x) for x in proc.stdout], daemon=True).start()
            return proc, found.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("ddpm serve printed no address")


def read_stream(response, stop_at: float, on_queued=None) -> str:
    """The last event's name of a job stream, read for at most MAX_EVENTS events and until
    ``stop_at`` (leaving early closes the stream, which cancels the job); ``on_queued(data)``
    is called with the ``queued`` event's data."""
    last, seen = "none", 0
    for line in response.iter_lines():
        if line.startswith("event: "):
            last, seen = line[7:], seen + 1
        elif line.startswith("data: ") and last == "queued" and on_queued is not None:
            on_queued(json.loads(line[6:]))
        if seen >= MAX_EVENTS or time.monotonic() > stop_at:
            return last + " (left)"
    return last


def client(i: int, address: str, deadline: float, stats: Counter, lock: threading.Lock) -> None:
    rng = random.Random(i)

    def count(key: str) -> None:
        with lock:
            stats[key] += 1

    with httpx.Client(base_url=address, timeout=30.0) as http:

        def cancel(queued: dict) -> None:
            count(f"DELETE {http.delete('api/jobs/' + queued['job']).status_code}")

        for _ in range(MAX_LOOPS):
            if time.monotonic() >= deadline:
                return
            action = rng.choice(["generate", "generate", "forward", "cancel"])
            outcome = ""
            try:
                if action == "forward":
                    r = http.get("api/runs/load/forward", params={"image": f"train:{rng.randrange(100)}",
                                                                 "t": rng.randrange(100), "seed": i})
                else:
                    body = {"sampler": "ddim", "steps": rng.randint(2, 6) if action == "generate" else 50,
                            "n": rng.randint(1, 8), "seed": rng.randrange(1000)}
                    with http.stream("POST", "api/runs/load/generate", json=body) as r:
                        if r.status_code != 200:
                            r.read()
                        elif action == "generate":
                            outcome = read_stream(r, deadline + 15)
                        else:  # cancelled with DELETE as soon as the job has an id
                            outcome = read_stream(r, deadline + 15, cancel)
            except httpx.HTTPError as err:
                r, outcome = None, type(err).__name__
            count(f"{action} {r.status_code if r is not None else 'no answer'}{' ' + outcome if outcome else ''}")


def monitor(address: str, proc: subprocess.Popen, deadline: float, queue_size: int, report: dict) -> None:
    """Samples the queues every 0.25 s and the server's RSS at the start, middle and end."""
    start = time.monotonic()
    report["rss"] = {"start": rss_mib(proc.pid)}
    with httpx.Client(base_url=address, timeout=30.0) as http:
        while time.monotonic() < deadline:
            runs = http.get("api/jobs").json()["runs"]
            for state in runs.values():
                report["max_waiting"] = max(report.get("max_waiting", 0), len(state["waiting"]))
            if "middle" not in report["rss"] and time.monotonic() - start >= (deadline - start) / 2:
                report["rss"]["middle"] = rss_mib(proc.pid)
            time.sleep(0.25)
    report["rss"]["end"] = rss_mib(proc.pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--queue-size", type=int, default=4)
    args = parser.parse_args()
    from ddpm.config import RunConfig, apply_overrides
    from ddpm.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        train(apply_overrides(RunConfig(), {**TINY, "runs_dir": tmp}), log=lambda m: None, progress=False)
        proc, address = start_server(Path(tmp), args.queue_size)
        try:
            httpx.post(address + "api/runs/load/generate", json={"n": 1, "steps": 2}, timeout=120).raise_for_status()
            stats, lock, report = Counter(), threading.Lock(), {}
            deadline = time.monotonic() + args.seconds
            threads = [threading.Thread(target=client, args=(i, address, deadline, stats, lock))
                       for i in range(args.clients)]
            threads.append(threading.Thread(target=monitor, args=(address, proc, deadline, args.queue_size, report)))
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=args.seconds + 120)  # a request in flight at the deadline still ends (timeouts)
            alive = httpx.get(address + "api/info", timeout=30).status_code
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{args.clients} clients, {args.seconds:g} s, --queue-size {args.queue_size}")
    for key, count in sorted(stats.items()):
        print(f"  {key:<40} {count:>6}")
    rss = report["rss"]
    print(f"most waiting on the run at once: {report.get('max_waiting', 0)} (bound {args.queue_size})")
    print(f"server RSS MiB: start {rss['start']:.0f}, middle {rss.get('middle', float('nan')):.0f}, end {rss['end']:.0f}")
    print(f"GET /api/info after the load: {alive}")
    bad = [k for k in stats if re.search(r" 5\d\d", k)]
    full = sum(c for k, c in stats.items() if " 429" in k)
    ok = not bad and report.get("max_waiting", 0) <= args.queue_size and alive == 200
    print(f"429 (queue full): {full}; 5xx: {bad or 'none'}; {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
