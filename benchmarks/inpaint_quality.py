"""Inpainting quality on a real MNIST model: RePaint against plain replacement.

The bottom half (rows 14-27) of the first MNIST test digits is hidden and inpainted from the top
half. Two figures per setting: the hidden-half error, the mean squared difference per pixel (in
[0, 1] units) between the completed and the true bottom half, and the accuracy against the true
labels of the project's MNIST classifier (``ddpm.eval.report.get_classifier``, the one
``ddpm eval`` trains once and caches under ~/.cache/torch-ddpm/eval) on the completed digits. A
completion can be a good digit and still not be the one that was hidden, so neither figure has
a floor of 0; the rows "true digits" and "top half, bottom black" frame them. Plus the model
evaluations per image (counted by a hook on the network) and the CPU seconds per image.

Every setting sees the same digits with the same seeds. The paper's setting (250 levels, jump
length 10, 10 resamplings: 2,410 model evaluations per image) runs on the first
``--paper-images`` digits only, the others on ``--num-images``; the table gives each row on its
own images and on the first ``--paper-images`` (the same for every row).

    OMP_NUM_THREADS=1 python benchmarks/inpaint_quality.py --run runs/mnist --data-dir ../shared/data/mnist

Results go to ``<out-dir>/results.json`` row by row (an interrupted run continues where it
stopped), with a grid of the first 16 completions of each row beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddpm.data import get_dataset
from ddpm.eval.classifier import predict
from ddpm.eval.report import EvalSettings, get_classifier
from ddpm.fileio import atomic_write_text
from ddpm.runs.load import load_for_sampling
from ddpm.sampling.inpaint import model_evaluations
from ddpm.training.batches import derived_seed
from ddpm.viz import save_grid

# name: (steps, grid, jump_length, jump_n_sample); "paper" rows run on --paper-images digits
ROWS = {
    "replacement, 250 levels": (250, "uniform", 10, 1),
    "RePaint 250 / 10 / 10 (paper)": (250, "uniform", 10, 10),
    "RePaint 250 / 10 / 10, quadratic grid": (250, "quadratic", 10, 10),
    "RePaint 100 / 10 / 5": (100, "uniform", 10, 5),
    "RePaint 100 / 10 / 5, quadratic grid": (100, "quadratic", 10, 5),
    "RePaint 50 / 5 / 5 (fast)": (50, "uniform", 5, 5),
    "RePaint 50 / 5 / 5, quadratic grid": (50, "quadratic", 5, 5),
    "replacement, 50 levels": (50, "uniform", 5, 1),
}
PAPER = ("RePaint 250 / 10 / 10 (paper)", "RePaint 250 / 10 / 10, quadratic grid")


def half_keep(size: int = 28) -> torch.Tensor:
    keep = torch.zeros(1, 1, size, size, dtype=torch.bool)
    keep[..., : size // 2, :] = True
    return keep


@torch.inference_mode()
def inpaint_row(diffusion, digits: torch.Tensor, setting, batch_size: int, seed: int):
    """Completions [N, 1, 28, 28] in [0, 1], CPU seconds, and model evaluations per image."""
    steps, grid, jump_length, jump_n_sample = setting
    evaluated = [0]
    hook = diffusion.model.register_forward_hook(lambda m, a, o: evaluated.__setitem__(0, evaluated[0] + a[0].shape[0]))
    out, cpu = [], 0.0
    try:
        for i, start in enumerate(range(0, len(digits), batch_size)):
            g = torch.Generator().manual_seed(derived_seed(seed, i))
            began = time.process_time()
            out.append(diffusion.inpaint(digits[start : start + batch_size], half_keep(), steps=steps, grid=grid,
                                         jump_length=jump_length, jump_n_sample=jump_n_sample, generator=g))
            cpu += time.process_time() - began
    finally:
        hook.remove()
    return torch.cat(out), cpu, evaluated[0] / len(digits)


def scores(images: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor, classifier) -> dict:
    """Hidden-half error per image and whether the classifier names the true digit."""
    hidden = slice(14, 28)
    err = ((images[:, :, hidden] - truth[:, :, hidden]) ** 2).flatten(1).mean(1)
    right = (predict(classifier, images) == labels).float()
    return {"mse": err.tolist(), "correct": right.tolist()}


def summary(cell: dict, n: int | None = None) -> str:
    mse = torch.tensor(cell["mse"][:n])
    acc = torch.tensor(cell["correct"][:n])
    k = len(mse)
    return (f"{mse.mean():.4f} ± {mse.std() / k**0.5:.4f} | {100 * acc.mean():.1f} ± {100 * acc.std() / k**0.5:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/mnist", help="a trained MNIST run (configs/mnist.toml)")
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--num-images", type=int, default=160)
    parser.add_argument("--paper-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="which rows (default: all)")
    parser.add_argument("--out-dir", default="benchmarks/results/inpaint")
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"rows": {}}
    diffusion, ckpt = load_for_sampling(args.run, device="cpu")
    key = f"{ckpt.path} ({ckpt.step} steps), {args.num_images}/{args.paper_images} images, seed {args.seed}"
    if results.get("key") != key:
        results = {"key": key, "rows": {}}
    print(f"model: {ckpt.path}, step {ckpt.step}; torch threads {torch.get_num_threads()}")
    test = get_dataset("mnist", split="test", data_dir=args.data_dir, log=lambda m: None)
    digits = (test.to_float(slice(0, args.num_images)) + 1) / 2
    labels = test.labels[: args.num_images].long()
    classifier, accuracy = get_classifier(ckpt.config, EvalSettings(), torch.device("cpu"), print)
    print(f"classifier: test accuracy {accuracy:.4f}")
    blank = digits.clone()
    blank[:, :, 14:] = 0.0  # MNIST's background
    results["truth"] = scores(digits, digits, labels, classifier)
    results["blank"] = scores(blank, digits, labels, classifier)
    for name in args.rows:
        if name in results["rows"]:
            continue
        n = args.paper_images if name in PAPER else args.num_images
        images, cpu, nfe = inpaint_row(diffusion, digits[:n], ROWS[name], args.batch_size, args.seed)
        assert nfe == model_evaluations(*(ROWS[name][i] for i in (0, 2, 3)))
        assert torch.equal(images[:, :, :14], digits[:n, :, :14])  # the kept half, bit for bit
        cell = scores(images, digits[:n], labels[:n], classifier)
        cell.update(cpu_s_per_image=cpu / n, nfe=nfe, n=n)
        results["rows"][name] = cell
        atomic_write_text(results_path, json.dumps(results))
        save_grid(torch.cat([blank[:8], images[:16]]), out_dir / f"{''.join(c if c.isalnum() else '-' for c in name)}.png", nrow=8)
        print(f"{name}: {summary(cell)}  ({nfe:.0f} model evals, {cpu / n:.2f} CPU s / image)", flush=True)

    m = args.paper_images
    print(f"\n| setting | levels / jump length / resamplings | model evals / image | CPU s / image | N | "
          f"hidden-half MSE | classifier accuracy | MSE, first {m} | accuracy, first {m} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, ref in (("true digits", "truth"), ("top half, bottom black", "blank")):
        cell = results[ref]
        print(f"| {name} | - | - | - | {len(cell['mse'])} | {summary(cell)} | {summary(cell, m)} |")
    for name in ROWS:
        cell = results["rows"].get(name)
        if cell is not None:
            steps, grid, jl, jn = ROWS[name]
            print(f"| {name} | {steps} {grid} / {jl} / {jn} | {cell['nfe']:.0f} | {cell['cpu_s_per_image']:.2f} | "
                  f"{cell['n']} | {summary(cell)} | {summary(cell, m)} |")


if __name__ == "__main__":
    main()
