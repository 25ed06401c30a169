"""Progressively distilled students against their teacher on MNIST.

Draws ``--num-samples`` images from every round's student of the ``--students`` runs (made by
``ddpm distill``; a later run may continue an earlier one's chain, e.g. from its 4-step
student) and from the teacher's samplers (``--teacher-cells``, plus the DDIM that the first
distillation started from), all from the same x_T, and measures

- the FID-style distance to the 10,000 MNIST test images in the feature space of the small MNIST
  classifier that ``ddpm eval`` trains once and caches (``--features classifier``, its default),
  so ``ddpm eval --run STUDENT`` reports the same kind of figure,
- KID (unbiased) with its standard error,
- classifier confidence: the fraction of images whose top class has probability >= 0.9 (a
  recognisable digit), and the mean top probability,
- the RMSE to the starting DDIM's images (how faithfully the chain reproduces its teacher),
- seconds per image,

and reads each round's wall time from the runs' ``rounds.json``.

    ddpm distill --run runs/mnist --to-steps 4 --rounds 3 --out runs/mnist-4
    ddpm distill --run runs/mnist-4 --to-steps 1 --rounds 2 --out runs/mnist-1
    OMP_NUM_THREADS=1 python benchmarks/distill_quality.py --students runs/mnist-4,runs/mnist-1 --num-samples 1000

Every cell starts from the same x_T (``--seed``), the teacher's 1000 ancestral steps included:
the target's ratio compares two cells of one run.

Results go to ``--out`` (default ``<first student>/distill_quality.json``) cell by cell (an
interrupted run continues), sample grids beside it; the table is printed in markdown with the
target's verdict.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddpm.data import get_dataset
from ddpm.eval import classifier_extractor, compute_statistics, frechet_distance, kernel_distance
from ddpm.eval.report import EvalSettings, get_classifier
from ddpm.fileio import atomic_write_text
from ddpm.runs.load import load_for_sampling
from ddpm.training.batches import derived_seed
from ddpm.runs.checkpoint import read_checkpoint
from ddpm.viz import save_grid

TARGET = (4, "ancestral@1000", 1.5)  # the student's steps, the reference cell, the largest ratio


def cells_to_draw(start: int, teacher_cells: str, student_steps: str, distilled: set[int]) -> list[tuple[str, str]]:
    """(who, sampler@steps) of every cell, in order: the teacher's DDIM that the distillation
    started from (the reference of the map error), the teacher's ``teacher_cells``, always the
    target's reference (1000 ancestral steps: the baseline is drawn in the same run, from the same
    x_T, never taken from another table), then the students of ``student_steps`` that exist."""
    todo = [("teacher", f"ddim@{start}")]
    for cell in [c for c in teacher_cells.split(",") if c] + [TARGET[1]]:
        if ("teacher", cell) not in todo:
            todo.append(("teacher", cell))
    return todo + [("student", f"ddim@{k}") for k in (int(v) for v in student_steps.split(",") if v) if k in distilled]


@torch.inference_mode()
def draw(diffusion, x_T, sampler: str, steps: int, grid: str | None, batch_size: int, seed: int):
    """Images [N, C, H, W] in [0, 1], seconds, and network evaluations per image (counted by a hook)."""
    calls = [0]
    hook = diffusion.model.register_forward_hook(lambda m, args, out: calls.__setitem__(0, calls[0] + args[0].shape[0]))
    out, seconds = [], 0.0
    try:
        for i, start in enumerate(range(0, x_T.shape[0], batch_size)):
            noise = x_T[start: start + batch_size]
            g = torch.Generator().manual_seed(derived_seed(seed, i))
            began = time.perf_counter()
            out.append(diffusion.sample(noise.shape[0], sampler=sampler, steps=steps, grid=grid, noise=noise, generator=g))
            seconds += time.perf_counter() - began
    finally:
        hook.remove()
    return torch.cat(out), seconds, calls[0] / x_T.shape[0]


@torch.inference_mode()
def confidence(classifier, images: torch.Tensor) -> tuple[float, float]:
    """(fraction with top class probability >= 0.9, mean top probability) of images in [0, 1]."""
    top = torch.cat([classifier(images[i: i + 500]).softmax(1).max(1).values for i in range(0, len(images), 500)])
    return float((top >= 0.9).float().mean()), float(top.mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--students", required=True, help="comma-separated student runs, in the order of the chain")
    p.add_argument("--out", default="", help="results file (default: <first student>/distill_quality.json)")
    p.add_argument("--cache-dir", default=None, help="ddpm eval's cache (default ~/.cache/torch-ddpm/eval)")
    p.add_argument("--student-steps", default="16,8,4,2,1", help="the rounds' students to measure, by their steps")
    p.add_argument("--teacher-cells", default="ddim@1,ddim@2,ddim@4,ddim@8,dpm++2m@20,dpm++2m-sde@50,ancestral@1000",
                   help="sampler@steps of the teacher (ddim on the trailing grid, the others on their own); "
                        "ancestral@1000, the target's reference, is drawn whatever this says")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    students = [Path(s) for s in args.students.split(",") if s]
    teacher_run = students[0] / "teacher"  # the first teacher, as its distillation copied it
    teacher_config = read_checkpoint(teacher_run).config
    classifier, accuracy = get_classifier(teacher_config, EvalSettings(cache_dir=args.cache_dir), torch.device("cpu"),
                                          print)
    classifier.eval()
    extractor = classifier_extractor(classifier)
    d = teacher_config.data
    test = get_dataset(d.dataset, split="test", data_dir=d.data_dir or None, image_size=tuple(d.image_size),
                       channels=d.channels, log=lambda m: None)
    mu_r, sigma_r, feats_r = compute_statistics(extractor, test.images.float() / 255)

    path = Path(args.out) if args.out else students[0] / "distill_quality.json"
    out = path.parent / "distill_quality"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"cells": {}}
    save = lambda: atomic_write_text(path, json.dumps(results, indent=1) + "\n")  # noqa: E731
    results["distillation"] = [{"run": str(s), **json.loads((s / "rounds.json").read_text(encoding="utf-8")),
                                "distill": read_checkpoint(s).meta["config"]["distill"]} for s in students]
    save()
    x_T = None
    start = teacher_config.sample.steps  # the DDIM that the first distillation started from
    by_steps = {}
    for s in students:  # every round's student (kept as a checkpoint), by its steps
        for e in json.loads((s / "rounds.json").read_text(encoding="utf-8"))["rounds"]:
            by_steps[e["steps"]] = s / e["checkpoint"]
    todo = cells_to_draw(start, args.teacher_cells, args.student_steps, set(by_steps))
    reference = None  # the images of the distillation's starting point, for the map error
    for who, cell in todo:
        key = f"{who} {cell}"
        if key in results["cells"] and (reference is not None or key != f"teacher ddim@{start}"):
            continue
        sampler, steps = cell.split("@")
        steps = int(steps)
        diffusion, ckpt = load_for_sampling(teacher_run if who == "teacher" else by_steps[steps], device="cpu")
        if x_T is None:
            shape = (args.num_samples, diffusion.channels, *diffusion.image_size)
            x_T = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
        grid = "trailing" if sampler == "ddim" else None
        images, seconds, nfe = draw(diffusion, x_T, sampler, steps, grid, args.sample_batch, args.seed)
        if reference is None:
            reference = images
        mu, sigma, feats = compute_statistics(extractor, images)
        kid, kid_se = kernel_distance(feats_r, feats, subset_size=min(1000, len(feats)))
        frac, mean = confidence(classifier, images)
        results["cells"][key] = {"n": len(images), "nfe": nfe, "s_per_image": seconds / len(images),
                                 "fid": frechet_distance(mu_r, sigma_r, mu, sigma), "kid": kid, "kid_se": kid_se,
                                 "confident": frac, "mean_confidence": mean, "checkpoint": str(ckpt.path),
                                 "rmse_vs_start": float(((images - reference) ** 2).mean().sqrt())}
        save_grid(images[:100], out / f"{who}-{sampler}-{steps}.png", nrow=10)
        save()
        c = results["cells"][key]
        print(f"{key:>24}: FID-style {c['fid']:.3f}  KID {c['kid'] * 1e3:.2f}e-3  confident {c['confident']:.3f}  "
              f"{c['s_per_image'] * 1e3:.1f} ms/image  RMSE to ddim@{start} {c['rmse_vs_start']:.4f}", flush=True)
    print(f"\nclassifier test accuracy {accuracy:.4f}; {torch.get_num_threads()} thread(s); {path}\n")
    print(table(results))
    print(verdict(results))


def table(results: dict) -> str:
    lines = ["| model | sampler | steps (network evaluations) | FID-style | KID x 1e3 | confident (p >= 0.9) | "
             "mean top p | RMSE to the start | ms / image |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, c in results["cells"].items():
        who, cell = key.split(" ")
        sampler, steps = cell.split("@")
        lines.append(f"| {who} | {sampler if who == 'teacher' else 'ddim (distilled)'} | {steps} ({c['nfe']:.0f}) | "
                     f"{c['fid']:.3f} | {c['kid'] * 1e3:.2f} ± {c['kid_se'] * 1e3:.2f} | {c['confident']:.3f} | "
                     f"{c['mean_confidence']:.3f} | {c['rmse_vs_start']:.3f} | {c['s_per_image'] * 1e3:.1f} |")
    for d in results.get("distillation", []):
        total = sum(e["seconds"] for e in d["rounds"])
        lines.append("")
        lines.append(f"{d['run']}: {len(d['rounds'])} rounds of {d['distill']['steps_per_round']} steps, {total:.0f} s "
                     "wall time; per round: "
                     + ", ".join(f"{e['teacher_steps']}->{e['steps']} {e['seconds']:.0f} s" for e in d["rounds"]))
    return "\n".join(lines)


def verdict(results: dict) -> str:
    steps, ref, limit = TARGET
    a, b = results["cells"].get(f"student ddim@{steps}"), results["cells"].get(f"teacher {ref}")
    if a is None or b is None:
        return f"target: needs the {steps}-step student and the teacher's {ref}"
    ratio = a["fid"] / b["fid"]
    return (f"target: the {steps}-step student within {limit}x of the teacher's {ref}: "
            f"{a['fid']:.3f} / {b['fid']:.3f} = {ratio:.2f} ({'met' if ratio <= limit else 'NOT met'})")


if __name__ == "__main__":
    main()
