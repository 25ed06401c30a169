"""How fast does an exported page draw 16 images in the browser, against PyTorch on the same CPU?

The MNIST recipe's network (configs/mnist.toml: 0.5M parameters, 28x28, 10 classes) at 20 steps of
the recipe's sampler, and a 4-step student distilled from it, each exported with ``ddpm export web
--bundle-runtime`` and timed in headless Chromium (onnxruntime-web on WebAssembly; served plainly,
one thread, and with the cross-origin-isolation headers that let the browser give it threads)
against ``GaussianDiffusion.sample`` in PyTorch, one row after the other, medians of repeats after a warm-up. The run is trained
briefly and the student distilled briefly: a network's speed does not depend on how good its
weights are, so the figures hold for the fully trained recipe.

    python benchmarks/browser_speed.py                 # ~10 min on 2 CPU cores (training included)
    python benchmarks/browser_speed.py --repeats 3

Needs the export extra, Playwright, Chromium at /usr/bin/chromium and ``npm install
onnxruntime-web@<pinned>`` in the project's root (see README: Put it in your blog post).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from ddpm import load_run
from ddpm.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def handler_class(isolated: bool):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def end_headers(self):
            if isolated:  # cross-origin isolation: SharedArrayBuffer, so WebAssembly threads
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

        def log_message(self, *args):
            pass

    return Handler


def serve(folder: Path, isolated: bool) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler_class(isolated), directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def browser_times(pw, folder: Path, isolated: bool, repeats: int, profile: Path) -> tuple[list[float], str]:
    """Seconds of each Generate of 16 images (after one warm-up) and the page's own description."""
    server, address = serve(folder, isolated)
    context = pw.chromium.launch_persistent_context(str(profile), executable_path="/usr/bin/chromium", headless=True,
                                                    args=CHROMIUM_ARGS)
    try:
        page = context.new_page()
        page.goto(address)
        page.wait_for_selector("body[data-ready=true]", timeout=300_000)
        about = page.inner_text("#about")
        times = []
        for k in range(repeats + 1):
            page.click("#generate")
            page.wait_for_function(f"window.ddpmTest.runs === {k + 1}", timeout=300_000)
            if k:
                times.append(page.evaluate("window.ddpmTest.seconds"))
        return times, about
    finally:
        context.close()
        server.shutdown()


def torch_times(run: Path, sampler: str | None, steps: int | None, repeats: int) -> list[float]:
    diffusion = load_run(run)
    sc = diffusion_settings(run)
    sampler, steps = sampler or sc.sampler, steps or sc.steps
    grid = sc.grid or None
    classes = [i % 10 for i in range(16)]
    times = []
    for k in range(repeats + 1):
        began = time.perf_counter()
        diffusion.sample(16, sampler=sampler, steps=steps, grid=grid, classes=classes, guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(k))
        if k:
            times.append(time.perf_counter() - began)
    return times


def diffusion_settings(run: Path):
    from ddpm.runs import load_for_sampling

    return load_for_sampling(run, device="cpu")[1].config.sample


def size_mb(folder: Path, skip_runtime: bool = False) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and not (skip_runtime and "runtime" in p.parts)) / 1e6


def main_(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--work", type=Path, help="keep the runs and pages here (default: a temporary folder)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    work = args.work or Path(tempfile.mkdtemp(prefix="browser-speed-"))
    runs = work / "runs"
    teacher, student = runs / "mnist", runs / "student"
    if not teacher.exists():
        assert main(["train", "--config", str(ROOT / "configs/mnist.toml"), "--dataset", "mnist10k", "--runs-dir",
                     str(runs), "--max-steps", str(args.train_steps), "--max-minutes", "0", "--sample-every", "0",
                     "--save-every", "0", "--no-tensorboard", "--batch-size", "32"]) == 0
    if not student.exists():
        assert main(["distill", "--run", str(teacher), "--to-steps", "4", "--rounds", "1", "--steps-per-round", "20",
                     "--out", str(student), "--batch-size", "16", "--num-samples", "4", "--no-tensorboard"]) == 0
    rows = [("MNIST recipe, 20 steps (dpm++2m-sde)", teacher, None, 20), ("4-step student (ddim)", student, None, None)]
    pages = {}
    for label, run, sampler, steps in rows:
        out = work / f"site-{run.name}"
        if not out.exists():
            extra = ["--steps", str(steps)] if steps else []
            assert main(["export", "web", "--run", str(run), "--out", str(out), "--n", "16", "--bundle-runtime",
                         "--runtime-dir", str(ROOT / "node_modules/onnxruntime-web"), *extra]) == 0
        pages[label] = out
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; cpus: {os.cpu_count()}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print("| network | PyTorch (CPU) | Chromium, 1 thread | Chromium, isolated (threads) | folder (bundled / CDN) |")
    print("| --- | --- | --- | --- | --- |")
    with sync_playwright() as pw:
        for label, run, sampler, steps in rows:
            t_torch = torch_times(run, sampler, steps, args.repeats)
            plain, about = browser_times(pw, pages[label], False, args.repeats, work / "profile-plain")
            isolated, about_iso = browser_times(pw, pages[label], True, args.repeats, work / "profile-iso")
            med = statistics.median
            print(f"| {label} | {med(t_torch):.3f} s | {med(plain):.3f} s ({med(plain) / med(t_torch):.1f}x) | "
                  f"{med(isolated):.3f} s ({med(isolated) / med(t_torch):.1f}x) | "
                  f"{size_mb(pages[label]):.1f} / {size_mb(pages[label], skip_runtime=True):.1f} MB |")
            print(f"<!-- {about} | isolated: {about_iso} -->")
    print(f"# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main_()
