"""Sampler quality against model evaluations on a real MNIST model.

For every sampler and step count, draws images from one trained model and measures an FID-style
distance to the 10,000 MNIST test images, computed on the features of ``ddpm eval``'s MNIST
classifier (found where ``ddpm eval`` caches it, trained there once if absent), plus KID and the
wall time per image. Every cell starts from the same x_T noise (image i always gets the same
x_T), and the ancestral sampler's per-step noise comes from a generator seeded per batch, so the
cells differ only in the sampler and its step count.

FID is biased upwards by roughly a constant over N, so it is only comparable between cells
drawn with the same number of images. The table gives every cell's FID on all its images and
at ``common`` images (the smallest N of any cell): on the first ``common`` (the same x_T in every
cell), and, where a cell has several disjoint blocks of ``common`` images, their mean and spread,
which show how noisy a single block is. The real-data row (MNIST training images scored like a
sampler's output) is the floor that FID's bias alone gives at each N. KID is unbiased and
comparable across N.

    OMP_NUM_THREADS=1 python benchmarks/sampler_quality.py --run-dir runs/mnist-uncond \
        --data-dir ../shared/data/mnist --num-samples 500 --steps 10,1000 --long-samplers ancestral

(benchmarks/README.md has the commands behind its tables; ``--long-num-samples`` draws fewer images
for the 1000-step cells, ``--long-samplers`` limits which samplers run them.) A sampler may be
given with a grid, ``unipc3:logsnr``; without one it runs on its default grid. The verdict also
answers the 10-evaluation question: which sampler (and grid) at 10 model evaluations comes
closest to the 1000-step ancestral cell, and is it within ``TEN[2]`` times its distance.

A missing ``--run-dir`` is trained first from ``--config`` for at most ``--train-minutes``.
Results go to ``<out-dir>/results.json`` cell by cell, so an interrupted run continues where it
stopped (default ``<run-dir>/sampler_quality``); sample grids of every cell go beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ddpm.config import apply_overrides, load_toml
from ddpm.data import get_dataset
from ddpm.eval import compute_statistics, feature_statistics, frechet_distance, kernel_distance
from ddpm.fileio import atomic_write_text
from ddpm.runs.load import load_for_sampling
from ddpm.sampling import DEFAULT_GRIDS, get_sampler, get_timesteps
from ddpm.training.batches import derived_seed
from ddpm.viz import save_grid

DEFAULT_SAMPLERS = ("ancestral", "ddim", "dpm++2m", "dpm++3m", "dpm++2m-sde", "unipc2", "unipc3")
DEFAULT_STEPS = (10, 20, 50, 100, 1000)
TARGET = ("dpm++2m", 20, "ancestral", 1000, 1.10)  # candidate, its steps, reference, its steps, max ratio
ALSO = (("dpm++2m-sde", 20), ("dpm++2m", 100))  # other cells set against the same reference
TEN = (10, ("ancestral", 1000), 1.30)  # model evaluations, reference cell, max ratio: the best cell at 10


# ---- the classifier and the real-data statistics: ddpm eval's ---------------------------------


def eval_scorer(ckpt, data_dir: str, cache_dir: str | None, log=print):
    """``ddpm eval``'s MNIST classifier for the run's data set, found where ``ddpm eval`` keeps it
    (trained there once if absent), and the statistics of the 10,000 test images in its features,
    cached beside it: the distances of this table are those of ``ddpm eval`` and of
    ``quality_curve.py`` and ``distill_quality.py`` with the same cache."""
    from quality_curve import Scorer  # benchmarks/ is on sys.path when a script of it runs

    config = replace(ckpt.config, data=replace(ckpt.config.data, data_dir=str(Path(data_dir).resolve())))
    scorer = Scorer(config, cache_dir, log)
    log(f"classifier: ddpm eval's for {config.data.dataset} (test accuracy {scorer.accuracy:.4f})")
    return scorer.extractor, (scorer.mu, scorer.sigma, scorer.feats), scorer.accuracy


# ---- the model -----------------------------------------------------------------------------


def load_or_train_model(run_dir: Path, config_path: str, data_dir: str, train_minutes: float, log=print):
    """(diffusion, checkpoint) of ``run_dir``; a missing run is trained first and timed."""
    if not run_dir.exists():
        from ddpm.training.loop import train

        config = apply_overrides(load_toml(config_path), {
            "data_dir": data_dir, "runs_dir": str(run_dir.parent), "name": run_dir.name,
            "max_minutes": str(train_minutes), "tensorboard": "false",
            "class_conditional": "false",  # the samplers are compared on an unconditional model
        })
        log(f"{run_dir} does not exist: training it from {config_path} for at most {train_minutes} minutes")
        result = train(config, log=log, progress=False)
        log(f"training took {result.elapsed_s / 60:.1f} minutes ({result.step} steps)")
    return load_for_sampling(run_dir, device="cpu")


# ---- one cell ------------------------------------------------------------------------------


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"unipc3:logsnr"`` -> ("unipc3", "logsnr"); ``"ddim"`` -> ("ddim", None): its default grid."""
    name, _, grid = spec.partition(":")
    return name, grid or None


@torch.inference_mode()
def draw(diffusion, x_T: torch.Tensor, sampler: str, steps: int, batch_size: int, seed: int):
    """Images [N, C, H, W] in [0, 1] from noise ``x_T`` [N, C, H, W]; sampling seconds; model
    evaluations per image (counted with a hook on the network, not taken from the sampler)."""
    evaluated = [0]
    hook = diffusion.model.register_forward_hook(lambda m, args, out: evaluated.__setitem__(0, evaluated[0] + args[0].shape[0]))
    out, seconds = [], 0.0
    try:
        for i, start in enumerate(range(0, x_T.shape[0], batch_size)):
            noise = x_T[start : start + batch_size]
            g = torch.Generator().manual_seed(derived_seed(seed, i))  # the ancestral sampler's per-step noise
            began = time.perf_counter()
            name, grid = split_spec(sampler)
            out.append(diffusion.sample(noise.shape[0], sampler=name, steps=steps, grid=grid, noise=noise, generator=g))
            seconds += time.perf_counter() - began
    finally:
        hook.remove()
    return torch.cat(out), seconds, evaluated[0] / x_T.shape[0]


def score(extractor, real, images: torch.Tensor, common: int) -> tuple[dict, np.ndarray]:
    """Metrics of ``images`` [N, C, H, W] in [0, 1] and their features [N, D].

    FID on all N images; FID on each disjoint block of ``common`` images (``fid_blocks``; the
    first block is the first ``common`` images, the same x_T in every cell); KID (mean,
    standard error over subsets) on all N.
    """
    mu_r, sigma_r, real_feats = real
    mu, sigma, feats = compute_statistics(extractor, images)
    blocks = [frechet_distance(mu_r, sigma_r, *feature_statistics(feats[i : i + common]))
              for i in range(0, len(feats) - common + 1, common)]
    kid, kid_se = kernel_distance(real_feats, feats, num_subsets=100, subset_size=min(1000, len(images)))
    metrics = {"fid": frechet_distance(mu_r, sigma_r, mu, sigma), "fid_blocks": blocks, "kid": kid, "kid_se": kid_se}
    return metrics, feats


def block_estimate(cell: dict) -> tuple[float, float]:
    """FID at N = ``common``: the mean over the cell's blocks and the standard deviation of one block
    (NaN with a single block)."""
    b = np.asarray(cell["fid_blocks"])
    return float(b.mean()), float(b.std(ddof=1)) if len(b) > 1 else math.nan


# ---- the table -----------------------------------------------------------------------------


def _row(name: str, steps: str, nfe: str, r: dict, s_per_image: str) -> str:
    mean, sd = block_estimate(r)
    blocks = f"{mean:.3f} ± {sd:.3f} ({len(r['fid_blocks'])})" if len(r["fid_blocks"]) > 1 else "-"
    return (f"| {name} | {steps} | {nfe} | {r['n']} | {r['fid']:.3f} | {r['fid_blocks'][0]:.3f} | {blocks} | "
            f"{r['kid'] * 1e3:.2f} ± {r['kid_se'] * 1e3:.2f} | {s_per_image} |")


def table(results: dict, common: int, samplers, steps_list) -> str:
    lines = [
        f"| sampler | steps | model evals / image | N | FID-style (all N) | FID-style (first {common}) | "
        f"FID-style ({common}-image blocks: mean ± sd (blocks)) | KID x 1e3 | s / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    if "real" in results:
        lines.append(_row("real (MNIST train images)", "-", "-", results["real"], "-"))
    for sampler in samplers:
        for steps in steps_list:
            r = results["cells"].get(f"{sampler}@{steps}")
            if r is not None:
                lines.append(_row(sampler, str(steps), f"{r['nfe']:.0f}", r, f"{r['s_per_image']:.3f}"))
    return "\n".join(lines)


def verdict(results: dict, common: int) -> str:
    """The issue's target: the candidate's FID-style distance at most ``limit`` times the reference's,
    both at N = ``common`` (FID's bias depends on N); KID, unbiased, as a second opinion."""
    cand, cand_steps, ref, ref_steps, limit = TARGET
    nfe, (ten_ref, ten_ref_steps), ten_limit = TEN
    tens = {k: c for k, c in results["cells"].items() if round(c["nfe"]) == nfe}
    r = results["cells"].get(f"{ten_ref}@{ten_ref_steps}")
    ten = ""
    if tens and r is not None:
        best = min(tens, key=lambda k: block_estimate(tens[k])[0])
        ratio10 = block_estimate(tens[best])[0] / block_estimate(r)[0]
        ten = (f"\nbest at {nfe} model evaluations: {best} (FID-style {block_estimate(tens[best])[0]:.3f}), "
               f"{ratio10:.3f}x {ten_ref}@{ten_ref_steps} ({'within' if ratio10 <= ten_limit else 'NOT within'} "
               f"{ten_limit:.2f}x); KID {tens[best]['kid'] * 1e3:.2f}e-3 against {r['kid'] * 1e3:.2f}e-3")
    a, b = results["cells"].get(f"{cand}@{cand_steps}"), results["cells"].get(f"{ref}@{ref_steps}")
    if a is None or b is None:
        return f"target: needs both {cand}@{cand_steps} and {ref}@{ref_steps} in the grid" + ten
    same_x = a["fid_blocks"][0] / b["fid_blocks"][0]
    ratio = block_estimate(a)[0] / block_estimate(b)[0]
    floor = block_estimate(results["real"])[0] if "real" in results else 0.0
    excess = (block_estimate(a)[0] - floor) / (block_estimate(b)[0] - floor)
    kid_ratio = a["kid"] / b["kid"] if b["kid"] > 0 else math.nan
    also = "".join(
        f"\n  {name}@{steps} / {ref}@{ref_steps}: {block_estimate(c)[0] / block_estimate(b)[0]:.3f}"
        for name, steps in ALSO if (c := results["cells"].get(f"{name}@{steps}")) is not None
    )
    return (
        f"reference {ref}@{ref_steps}: FID-style {b['fid_blocks'][0]:.3f} on {common} images, "
        f"{b['nfe']:.0f} model evaluations per image\n"
        f"target {cand}@{cand_steps} / {ref}@{ref_steps} <= {limit:.2f} at N = {common}: ratio {ratio:.3f} "
        f"({'met' if ratio <= limit else 'NOT met'}) with {b['nfe'] / a['nfe']:.0f}x fewer model evaluations\n"
        f"  first {common} images only (same x_T): {same_x:.3f}; above the real-data floor {floor:.3f}: {excess:.3f}; "
        f"KID ratio: {kid_ratio:.3f}" + also + ten
    )


# ---- main ----------------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/mnist", help="a trained MNIST run (trained first if missing)")
    p.add_argument("--config", default="configs/mnist.toml", help="config for training a missing --run-dir")
    p.add_argument("--train-minutes", type=float, default=60.0, help="time budget for training a missing run")
    p.add_argument("--data-dir", default="../shared/data/mnist", help="folder with the MNIST IDX files")
    p.add_argument("--cache-dir", default=None,
                   help="ddpm eval's cache, where its classifier and the real-data statistics are (default: ddpm eval's own)")
    p.add_argument("--out-dir", default="", help="results.json and sample grids (default: <run-dir>/sampler_quality)")
    p.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS),
                   help="comma-separated; SAMPLER:GRID runs a sampler on another grid (ddim:logsnr)")
    p.add_argument("--steps", type=int_list, default=DEFAULT_STEPS, help="comma-separated step counts")
    p.add_argument("--num-samples", type=int, default=2000, help="images per cell")
    p.add_argument("--long-num-samples", type=int, default=0,
                   help="images per cell with at least --long-from steps (0: --num-samples)")
    p.add_argument("--long-from", type=int, default=1000)
    p.add_argument("--long-samplers", default="",
                   help="comma-separated samplers to run at --long-from steps and more (default: all of --samplers)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--fresh", action="store_true", help="ignore results of an earlier run in --out-dir")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    diffusion, ckpt = load_or_train_model(run_dir, args.config, args.data_dir, args.train_minutes)
    extractor, real, accuracy = eval_scorer(ckpt, args.data_dir, args.cache_dir)
    params = sum(p.numel() for p in diffusion.model.parameters())
    print(f"model: {ckpt.path} (step {ckpt.step}, {params:,} parameters, {diffusion.num_timesteps} timesteps)")

    long_n = args.long_num_samples or args.num_samples
    n_of = {s: (long_n if s >= args.long_from else args.num_samples) for s in args.steps}
    common = min(n_of.values())
    out_dir = Path(args.out_dir) if args.out_dir else run_dir / "sampler_quality"
    key = {"checkpoint": str(ckpt.path.resolve()), "step": ckpt.step, "seed": args.seed, "batch_size": args.batch_size,
           "extractor": extractor.name, "common": common}
    results_path = out_dir / "results.json"
    results = {"key": key, "cells": {}}
    if results_path.is_file() and not args.fresh:
        earlier = json.loads(results_path.read_text(encoding="utf-8"))
        if earlier.get("key") == key:
            results = earlier
            print(f"continuing {results_path}: {len(results['cells'])} cells done")

    def save() -> None:
        atomic_write_text(results_path, json.dumps(results, indent=1) + "\n")

    shape = (max(n_of.values()), diffusion.channels, *diffusion.image_size)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))

    if "real" not in results:  # the floor: real images (not the test split) scored like a sampler's
        train = get_dataset("mnist", split="train", data_dir=args.data_dir, log=lambda m: None)
        pick = torch.randperm(len(train.images), generator=torch.Generator().manual_seed(args.seed))[: args.num_samples]
        metrics, _ = score(extractor, real, train.images[pick].float() / 255, common)
        results["real"] = {"n": args.num_samples, **metrics}
        save()

    # the cost of one model evaluation, to say up front how long the grid will take
    _, sec, nfe = draw(diffusion, x_T[: args.batch_size], "ddim", 5, args.batch_size, args.seed)
    ms = 1000 * sec / (nfe * args.batch_size)
    long_samplers = [s.strip() for s in args.long_samplers.split(",") if s.strip()] or samplers
    for spec in samplers:  # a bad name or grid fails here, not after an hour of other cells
        name, grid = split_spec(spec)
        get_sampler(name)
        get_timesteps(grid or DEFAULT_GRIDS[name], diffusion.schedule, min(min(args.steps), diffusion.num_timesteps))
    todo = [(s, k) for k in sorted(args.steps) for s in samplers
            if f"{s}@{k}" not in results["cells"] and (k < args.long_from or s in long_samplers)]
    estimate = sum(k * n_of[k] for _, k in todo) * ms / 1000
    print(f"{ms:.2f} ms per model evaluation (batch {args.batch_size}); {len(todo)} cells to draw, about {estimate / 60:.0f} minutes")

    for sampler, steps in todo:  # cheap cells first
        n = n_of[steps]
        images, seconds, nfe = draw(diffusion, x_T[:n], sampler, steps, args.batch_size, args.seed)
        metrics, feats = score(extractor, real, images, common)
        cell = {"n": n, "nfe": nfe, "seconds": seconds, "s_per_image": seconds / n, **metrics}
        save_grid(images[:100], out_dir / f"{sampler}-{steps}.png", nrow=10)
        np.save(out_dir / f"{sampler}-{steps}-features.npy", feats)  # to recompute metrics without sampling
        results["cells"][f"{sampler}@{steps}"] = cell
        save()
        print(f"{sampler:>9} @ {steps:>4}: FID-style {cell['fid']:.3f} (first {common}: {cell['fid_blocks'][0]:.3f}), "
              f"KID {cell['kid'] * 1e3:.2f}e-3, {cell['s_per_image']:.3f} s/image", flush=True)

    print(f"\nclassifier test accuracy {accuracy:.4f}; {torch.get_num_threads()} thread(s); results in {results_path}\n")
    print(table(results, common, samplers, sorted(args.steps)))
    print()
    print(verdict(results, common))


if __name__ == "__main__":
    main()
