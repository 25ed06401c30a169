"""Prompt accuracy of a text-conditional MNIST run, per digit, against the guidance scale.

For each guidance scale and each set of prompts (the phrasings the run trained on, and
phrasings it never saw: ``benchmarks/prompts/mnist_unseen.txt``, which shares no sequence of three
words with any training caption; ``--unseen`` again for more sets), draws ``--per-prompt`` images
of every prompt and lets the MNIST classifier of ``ddpm eval`` (a small CNN trained once on the
training split, cached) say which digit each image shows. Prints one row per (scale, set): the
fraction of images showing the digit asked for, per digit and overall. Results go to
``--out`` cell by cell, so an interrupted run continues where it stopped; ``--picture`` writes
one grid row per digit, each prompted with another unseen phrasing.

    OMP_NUM_THREADS=1 python benchmarks/text_prompts.py --run runs/mnist-text --data-dir ../shared/data/mnist \\
        --picture docs/images/text_prompts.png

(the run: ``ddpm train --config configs/mnist-text.toml --data-dir ../shared/data/mnist``.)
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ddpm.eval.prompts import prompt_accuracy, trained_prompts
from ddpm.eval.report import EvalSettings, get_classifier
from ddpm.fileio import atomic_write_text
from ddpm.generate import generate
from ddpm.runs.load import load_for_sampling
from ddpm.text.prompts import read_labelled_prompts
from ddpm.viz import save_grid

UNSEEN = Path(__file__).parent / "prompts" / "mnist_unseen.txt"


def set_name(path: str) -> str:
    """A prompt file's row name: ``unseen`` for benchmarks/prompts/mnist_unseen.txt, else its stem
    less a leading ``mnist_`` (``mnist_near_templates.txt``: ``near_templates``)."""
    stem = Path(path).stem
    return stem[len("mnist_"):] if stem.startswith("mnist_") else stem


def spread(labelled: list[tuple[int, str]], per_class: int) -> list[tuple[int, str]]:
    """At most ``per_class`` of each class's prompts, evenly spaced over its list (all of a shorter
    list), in the phrasing-major order of ``labelled``: classes in turn."""
    by_class: dict[int, list[str]] = {}
    for c, p in labelled:
        by_class.setdefault(c, []).append(p)
    picks = {c: [ps[(j * len(ps)) // per_class] for j in range(per_class)] if len(ps) > per_class else ps
             for c, ps in by_class.items()}
    return [(c, picks[c][j]) for j in range(max(map(len, picks.values()))) for c in sorted(picks) if j < len(picks[c])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a text-conditional MNIST run (configs/mnist-text.toml)")
    ap.add_argument("--data-dir", help="MNIST's IDX files, for the classifier (default: the run's)")
    ap.add_argument("--guidance", default="1,2,3,5")
    ap.add_argument("--per-prompt", type=int, default=6, help="images drawn for each prompt")
    ap.add_argument("--unseen", action="append",
                    help="'CLASS: prompt' lines the run never trained on; repeat for several sets, each a row named "
                         "after its file (default: benchmarks/prompts/mnist_unseen.txt, the row 'unseen')")
    ap.add_argument("--trained-per-class", type=int, default=10,
                    help="trained phrasings measured per digit, spread evenly over its list (all of them when it has fewer)")
    ap.add_argument("--sampler", default="dpm++2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="results JSON (default RUN/text_prompts.json)")
    ap.add_argument("--picture", help="also a grid, one row per prompt, at guidance --picture-scale")
    ap.add_argument("--picture-scale", type=float, default=3.0)
    ap.add_argument("--cache-dir", help="the classifier cache of ddpm eval (default ~/.cache/torch-ddpm/eval)")
    args = ap.parse_args()

    diffusion, ckpt = load_for_sampling(args.run, device="cpu")
    config = ckpt.config
    if args.data_dir:
        config = replace(config, data=replace(config.data, data_dir=str(Path(args.data_dir).resolve())))
    classifier, accuracy = get_classifier(config, EvalSettings(cache_dir=args.cache_dir), diffusion.device, print)
    names = [str(d) for d in range(10)]
    sets = {"trained": spread(trained_prompts(config.data.dataset, names, 10), args.trained_per_class)}
    for path in args.unseen or [str(UNSEEN)]:
        sets[set_name(path)] = read_labelled_prompts(path, names)
    out = Path(args.out) if args.out else ckpt.path.parent.parent / "text_prompts.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    if results.get("checkpoint") != str(ckpt.path):
        results = {"checkpoint": str(ckpt.path), "step": ckpt.step, "classifier_test_accuracy": accuracy, "cells": {}}
    print(f"# {ckpt.path} (step {ckpt.step}); classifier test accuracy {accuracy:.4f}; {args.sampler}, {args.steps} steps; "
          f"{args.per_prompt} images per prompt; torch threads {torch.get_num_threads()}")
    for w in [float(v) for v in args.guidance.split(",")]:
        sample = replace(config.sample, sampler=args.sampler, steps=args.steps, guidance_scale=w, eta=0.0, grid="")
        for name, labelled in sets.items():
            key = f"w={w:g} {name}"
            if key in results["cells"]:
                continue
            began = time.monotonic()
            scores, _ = prompt_accuracy(diffusion, classifier, labelled, args.per_prompt * len(labelled), sample=sample,
                                        batch_size=args.batch_size, seed=args.seed)
            scores["seconds"] = time.monotonic() - began
            results["cells"][key] = scores
            atomic_write_text(out, json.dumps(results, indent=1) + "\n")
            print(f"  {key}: {scores['overall']:.3f} ({scores['images']} images, {scores['seconds']:.0f} s)", flush=True)

    print("\n| guidance | prompts | " + " | ".join(names) + " | all |")
    print("|---:|---|" + "---:|" * 11)
    for key, s in results["cells"].items():
        w, name = key.split(" ")
        print(f"| {w[2:]} | {name} | " + " | ".join(f"{100 * s['per_class'][d]:.0f}" for d in names)
              + f" | **{100 * s['overall']:.1f}** |")
    worst = {}
    for key, s in results["cells"].items():
        for p, v in s["per_prompt"].items():
            worst.setdefault(key, []).append((v, p))
    print("\nweakest prompts per cell: " + "; ".join(
        f"{k}: " + ", ".join(f"{p!r} {v:.2f}" for v, p in sorted(v)[:3]) for k, v in worst.items()))

    if args.picture:
        # one row per digit, each with another of the unseen phrasings
        unseen = [[p for c, p in sets[set_name((args.unseen or [str(UNSEEN)])[0])] if c == d] for d in range(10)]
        prompts = [unseen[d][d % len(unseen[d])] for d in range(10)]
        n = 8
        sample = replace(config.sample, sampler=args.sampler, steps=args.steps, guidance_scale=args.picture_scale)
        images = generate(diffusion, n * len(prompts), batch_size=args.batch_size, sample=sample, seed=args.seed,
                          prompts=[p for p in prompts for _ in range(n)])
        save_grid(images, args.picture, nrow=n, scale=max(1, 32 // images.shape[-2]))  # 28 px MNIST as it is
        atomic_write_text(Path(args.picture).with_suffix(".txt"), "".join(f"{p}\n" for p in prompts))
        print(f"wrote {args.picture}: rows = " + " / ".join(prompts))


if __name__ == "__main__":
    main()
