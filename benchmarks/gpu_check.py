"""GPU readiness: every CUDA path of the library run once, the CUDA tests, and the throughput rows.

On a machine with a CUDA GPU (and the ``bench`` extra for the reference rows)::

    python benchmarks/gpu_check.py                  # ~3-6 minutes on a recent GPU
    python benchmarks/gpu_check.py --quick          # fewer repeats
    python benchmarks/gpu_check.py --json out.json  # also every figure as JSON

prints one table: each check (pass / FAIL / skipped and why) with its figure, then the training
throughput of ours against lucidrains' and diffusers' networks at the seed configuration
(lucidrains' README Unet, 3x32x32, batch 16) with bf16 autocast, and the sampling cost (one
network evaluation at batch 64, bf16). It exits with status 1 when a check fails, and 2 at once,
with one sentence, where PyTorch sees no CUDA GPU.

What each check reaches:

- ``cuda tests``: ``pytest tests/test_fastpaths.py tests/test_distributed.py``, where the CUDA
  cases (bf16 against fp32, channels_last, the attention kernels, inductor, samplers that never
  synchronise, a CUDA training step) run instead of skipping;
- ``fused AdamW``: one step of ``AdamW(fused=True)`` equal to the foreach kernel's;
- ``bf16 autocast``: ``use_bf16('auto')`` chooses it on this GPU, and a Unet's convolutions
  really run in bf16 under the trainer's autocast;
- ``channels_last``: outputs and gradients of a channels_last Unet against the contiguous one;
- ``SDPA flash``: our Attention with ``impl='sdpa'`` under the flash-attention backend alone
  (PyTorch raises if that kernel cannot run), against the math kernel;
- ``DDP with NCCL``: with two or more GPUs, two torchrun processes on NCCL against one process
  with twice the batch; with one GPU, a one-process NCCL group and a DistributedDataParallel
  step (two ranks cannot share one GPU under NCCL);
- ``ddpm train on CUDA``: the command itself, streaming a generated image folder with pinned
  memory and worker processes, bf16 chosen automatically, fused AdamW.

``--cpu-rehearsal`` runs the same script on a CPU (CUDA-only checks reported as skipped) so
that its own plumbing is tested without a GPU (tests/test_gpu_check.py); its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ddpm.models import Unet  # noqa: E402
from ddpm.models.layers import Attention  # noqa: E402
from ddpm.runs.build import adamw_kernel, use_bf16  # noqa: E402


class Skip(Exception):
    """A check that does not apply here (the reason is printed)."""


def env(extra: dict | None = None) -> dict:
    path = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run(cmd: list[str], timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


# ---- the checks: each returns a short figure, raises Skip, or fails with an exception ---------


def check_cuda_tests(device: torch.device, args) -> str:
    out = run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               "tests/test_fastpaths.py", "tests/test_distributed.py"], timeout=900)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    if out.returncode != 0 or counts.get("failed") or counts.get("error"):
        raise AssertionError(f"pytest: {summary}\n{out.stdout[-4000:]}")
    cuda_skips = len(re.findall(r"SKIPPED.*needs a CUDA GPU", out.stdout))
    if device.type == "cuda" and cuda_skips:
        raise AssertionError(f"{cuda_skips} CUDA tests skipped on a CUDA machine: {summary}")
    return summary + (f" ({cuda_skips} skipped for want of CUDA)" if cuda_skips else "")


def _unet(device, **options) -> Unet:
    torch.manual_seed(0)
    model = Unet(dim=16, dim_mults=(1, 2), channels=3, full_attn=(False, True), **options)
    with torch.no_grad():  # switch on the zero-initialised output branches
        for p in model.parameters():
            if p.ndim > 1 and float(p.abs().max()) == 0:
                p.normal_(std=0.02)
    return model.to(device)


def check_fused_adamw(device, args) -> str:
    kernel = adamw_kernel(device)
    assert kernel == {"fused": True}, f"the trainer would use {kernel} here"
    results = []
    for option in ("fused", "foreach"):
        model = _unet(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **{option: True})
        x = torch.randn(4, 3, 16, 16, device=device)
        for _ in range(3):
            opt.zero_grad()
            model(x, torch.tensor([1, 50, 300, 900], device=device)).square().mean().backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    diff = float((results[0] - results[1]).abs().max())
    assert diff < 1e-5, f"fused and foreach AdamW differ by {diff:.2e} after 3 steps"
    return f"fused = foreach within {diff:.1e} after 3 steps"


def check_bf16(device, args) -> str:
    chosen = use_bf16(None, device)
    if device.type == "cuda":
        assert chosen, "bf16 'auto' is off on this GPU (no native bf16: pre-Ampere?)"
    seen = []
    model = _unet(device)
    hook = model.init_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 16, 16, device=device), torch.tensor([3, 700], device=device))
    hook.remove()
    assert seen == [torch.bfloat16], f"convolutions ran in {seen}"
    ref = model(torch.randn(2, 3, 16, 16, device=device), torch.tensor([3, 700], device=device))
    assert torch.isfinite(out).all() and ref.dtype == torch.float32
    return f"auto -> {'on' if chosen else 'off'}; convolutions in bf16 under autocast"


def check_channels_last(device, args) -> str:
    model = _unet(device)
    other = _unet(device).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16, device=device)
    t = torch.tensor([1, 10, 100, 999], device=device)
    a = model(x, t)
    b = other(x.contiguous(memory_format=torch.channels_last), t)
    a.square().mean().backward()
    b.square().mean().backward()
    out = float((a - b).detach().abs().max())
    grad = max(float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), other.parameters()))
    assert out < 1e-3 and grad < 1e-3, f"channels_last differs: outputs {out:.1e}, gradients {grad:.1e}"
    return f"outputs within {out:.1e}, gradients within {grad:.1e}"


def check_flash(device, args) -> str:
    if device.type != "cuda":
        raise Skip("the flash-attention kernel is CUDA only")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    fast, slow = Attention(128, heads=4, dim_head=32, impl="sdpa"), Attention(128, heads=4, dim_head=32, impl="math")
    slow.load_state_dict(fast.state_dict())
    fast, slow = fast.to(device), slow.to(device)
    x = torch.randn(8, 128, 32, 32, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if the flash kernel cannot take this call
            a = fast(x)
        b = slow(x)
    diff = float((a.float() - b.float()).abs().max())
    assert diff < 5e-2, f"flash and math attention differ by {diff:.2e} in bf16"
    return f"flash kernel ran (1024 positions, bf16); within {diff:.1e} of math"


def _ddp_one_process_nccl(device) -> str:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("nccl", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            model = _unet(device)
            ddp = DistributedDataParallel(model, device_ids=[device.index or 0])
            ddp(torch.randn(2, 3, 16, 16, device=device), torch.tensor([5, 500], device=device)).mean().backward()
            t = torch.ones(1, device=device)
            dist.all_reduce(t)
            assert float(t) == 1.0 and all(p.grad is not None for p in model.parameters())
        finally:
            dist.destroy_process_group()
    return "1 GPU: one-process NCCL group, a DDP backward and an all-reduce ran (2 ranks need 2 GPUs)"


def check_ddp_nccl(device, args) -> str:
    if device.type != "cuda":
        raise Skip("NCCL is CUDA only (tests/test_distributed.py covers gloo on CPUs)")
    if torch.cuda.device_count() < 2:
        return _ddp_one_process_nccl(device)
    tiny = ["--dataset", "digits", "--dim", "16", "--dim-mults", "1,2", "--timesteps", "50", "--sample-every", "0",
            "--save-every", "0", "--no-tensorboard", "--no-bf16", "--max-steps", "6", "--log-every", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ddpm",
                   "train", *tiny, "--batch-size", "8", "--runs-dir", tmp, "--name", "two"], timeout=600)
        assert two.returncode == 0, two.stderr[-3000:]
        one = run([sys.executable, "-m", "ddpm", "train", *tiny, "--batch-size", "16", "--runs-dir", tmp, "--name", "one"],
                  timeout=600)
        assert one.returncode == 0, one.stderr[-3000:]
        from ddpm.runs.checkpoint import read_checkpoint

        a, b = read_checkpoint(Path(tmp) / "two").weights(ema=False), read_checkpoint(Path(tmp) / "one").weights(ema=False)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    # cuDNN may pick different convolution algorithms for batch 8 and 16: close, not equal
    assert diff < 1e-3, f"2 NCCL ranks and 1 process with twice the batch differ by {diff:.2e}"
    return f"2 ranks on NCCL = 1 process with twice the batch within {diff:.1e} (6 steps)"


def check_train_command(device, args) -> str:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        rng = np.random.default_rng(0)
        for i in range(64):
            (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"c{i % 2}" / f"{i}.jpg")
        began = time.monotonic()
        cuda = device.type == "cuda"  # the CPU rehearsal tests the plumbing only: as small as it gets
        steps, size, dim = ("30", "32", "32") if cuda else ("3", "16", "8")
        out = run([sys.executable, "-m", "ddpm", "train", "--dataset", f"folder:{folder}", "--image-size", size,
                   "--stream", "--num-workers", "2", "--dim", dim, "--dim-mults", "1,2", "--max-steps", steps,
                   "--batch-size", "16", "--log-every", "1", "--sample-every", steps, "--num-samples", "16" if cuda else "4",
                   "--steps", "5" if cuda else "2", "--no-tensorboard", "--runs-dir", tmp, "--name", "cuda",
                   "--device", device.type], timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        first = out.stdout.splitlines()
        line = next(x for x in first if x.startswith("training on"))
        if device.type == "cuda":
            assert "cuda" in line and "bf16 autocast" in line, line
        assert "streaming 64 images" in out.stdout
    return f"{line.split(';')[0]}; {steps} steps streamed in {time.monotonic() - began:.0f} s"


CHECKS = {
    "cuda tests": check_cuda_tests,
    "fused AdamW": check_fused_adamw,
    "bf16 autocast": check_bf16,
    "channels_last": check_channels_last,
    "SDPA flash": check_flash,
    "DDP with NCCL": check_ddp_nccl,
    "ddpm train on CUDA": check_train_command,
}


# ---- throughput rows, from benchmarks/throughput.py --------------------------------------------


def throughput_rows(device, args) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "t.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", device.type, "--no-memory",
               "--json", str(out_json)] + (["--quick"] if args.quick else [])
        out = run(cmd, timeout=1800)
        if out.returncode != 0:
            raise AssertionError(f"throughput.py failed: {out.stderr[-3000:]}")
        data = json.loads(out_json.read_text())
    import statistics

    rows = []
    train = data["training"]

    def rate(label):
        entry = train.get(label)
        if entry is None:
            return None
        return entry["spec"]["net"]["batch"] / statistics.median(entry["seconds"])

    ours_label = next((k for k in train if k.startswith("ours, defaults here")), None)
    wanted = [(ours_label, "ours, defaults (bf16, fused AdamW)"), ("lucidrains, bf16 autocast", "lucidrains, bf16"),
              ("diffusers UNet2DModel, bf16 autocast", "diffusers, bf16"), ("lucidrains, fp32 (its default)", "lucidrains, fp32")]
    base = rate("lucidrains, bf16 autocast")
    for label, name in wanted:
        r = rate(label) if label else None
        if r is None:
            rows.append((f"training: {name}", "skipped", "not measured (bench extra not installed?)"))
        else:
            ratio = f", {r / base:.2f}x lucidrains bf16" if base else ""
            rows.append((f"training: {name}", "measured", f"{r:.1f} images/s{ratio}"))
    forward = data.get("forward", {})
    for name in ("ours seed", "lucidrains seed", "diffusers seed"):
        v = forward.get(f"{name}, bf16")
        rows.append((f"sampling: {name}, bf16", "measured" if v else "skipped",
                     f"{1e3 * statistics.median(v):.2f} ms per evaluation at batch 64" if v else "not measured"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats in the throughput rows")
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    ap.add_argument("--skip", action="append", default=[], help="leave out a check (its name; repeatable)")
    ap.add_argument("--skip-throughput", action="store_true", help="leave out the throughput and sampling rows")
    ap.add_argument("--cpu-rehearsal", action="store_true", help="run on the CPU to test this script (figures mean nothing)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_rehearsal:
        print(f"gpu_check: PyTorch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False); run this "
              "on a machine with one (--cpu-rehearsal tests the script itself on a CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.cpu_rehearsal else torch.device("cuda", 0)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"# {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}; "
              f"{torch.cuda.device_count()} GPU(s); torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()}; bf16 native: {torch.cuda.is_bf16_supported(including_emulation=False)}")
    else:
        print(f"# CPU rehearsal: torch {torch.__version__}; the CUDA-only checks are skipped and no figure means anything")
    table = []
    for name, check in CHECKS.items():
        if name in args.skip:
            table.append((name, "skipped", "--skip"))
            continue
        began = time.monotonic()
        try:
            figure = check(device, args)
            status = "pass"
        except Skip as why:
            status, figure = "skipped", str(why)
        except Exception as err:  # noqa: BLE001 - a failed check is reported, and the others still run
            status, figure = "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"## {name} failed:\n{err}", file=sys.stderr)
        table.append((name, status, f"{figure} [{time.monotonic() - began:.0f} s]"))
        print(f"# {name}: {status}", flush=True)
    if not args.skip_throughput:
        try:
            table += throughput_rows(device, args)
        except Exception as err:  # noqa: BLE001
            table.append(("throughput", "FAIL", f"{type(err).__name__}: {str(err)[:300]}"))
    print("\n| check | result | figure |\n|---|---|---|")
    for name, status, figure in table:
        print(f"| {name} | {status} | {figure} |")
    if args.json:
        args.json.write_text(json.dumps([dict(check=n, result=s, figure=f) for n, s, f in table], indent=1))
    return 1 if any(status == "FAIL" for _, status, _ in table) else 0


if __name__ == "__main__":
    sys.exit(main())
