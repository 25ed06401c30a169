"""Quality against training time: every checkpoint of a run, scored on digits a classifier knows.

For each checkpoint of ``--run`` (EMA weights), draws ``--num-samples`` images with each
``--sampler NAME:STEPS`` and scores them with the project's classifier (``ddpm eval``'s: the small
CNN trained once on the data set's labelled training split and cached, see
``ddpm.eval.report.get_classifier``):

- ``confident``: the fraction of samples the classifier assigns to one class with softmax
  probability >= 0.9 (a digit it recognises; smudges and hybrids score low);
- ``fid``: the FID-style Frechet distance to the held-out split in the classifier's features
  (what ``ddpm eval`` reports; comparable only between cells with the same classifier and N);
- ``kid``: the kernel distance (unbiased), x 1000.

Minutes: ``train_min`` is the run's own elapsed training time at that step (from metrics.csv,
on whatever the machine was doing then); with ``--images-per-s R`` (the configuration's
uncontended throughput, measured with ``--calibrate``) the table also gives ``min@R``, the
minutes the same steps take at R images/s.

    python benchmarks/quality_curve.py --run runs/mnist --data-dir ../shared/data/mnist \
        --sampler dpm++2m:20 --sampler dpm++2m-sde:50 --num-samples 1000 --images-per-s 210
    python benchmarks/quality_curve.py --calibrate configs/mnist.toml --data-dir ../shared/data/mnist

``--every N`` scores the checkpoints at multiples of N and the final one; ``--last`` the final one
alone (the guidance rows of the MNIST recipe's table).

Results go to ``RUN/quality_curve.json`` cell by cell (an interrupted run continues); the
command behind the MNIST table in benchmarks/README.md is there.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ddpm.config import apply_overrides, load_toml
from ddpm.errors import CheckpointError
from ddpm.eval.features import classifier_extractor, compute_statistics, load_statistics, save_statistics
from ddpm.eval.metrics import frechet_distance, kernel_distance
from ddpm.eval.report import EvalSettings, _cache_root, _data_key, _load_split, get_classifier
from ddpm.fileio import atomic_write_text
from ddpm.generate import class_layout, generate
from ddpm.runs.load import load_for_sampling
from ddpm.runs.checkpoint import list_checkpoints, read_checkpoint
from ddpm.viz import save_grid

CONFIDENT = 0.9


def confident_fraction(classifier, images: torch.Tensor, threshold: float = CONFIDENT) -> float:
    """Fraction of ``images`` [N, C, H, W] in [0, 1] whose top softmax probability is >= threshold."""
    with torch.inference_mode():
        probs = torch.cat([torch.softmax(classifier(images[i : i + 500]), dim=1) for i in range(0, len(images), 500)])
    return float((probs.max(dim=1).values >= threshold).float().mean())


class Scorer:
    """The classifier and the held-out statistics of one data set, built (or read from cache) once."""

    def __init__(self, config, cache_dir: str | None, log=print):
        settings = EvalSettings(cache_dir=cache_dir)
        self.classifier, self.accuracy = get_classifier(config, settings, torch.device("cpu"), log)
        self.classifier.eval()
        self.extractor = classifier_extractor(self.classifier)
        stats = _cache_root(cache_dir) / "stats" / f"{_data_key(config)}-test-{self.extractor.name}.npz"
        try:
            self.mu, self.sigma, self.feats = load_statistics(stats, extractor=self.extractor.name)
            if self.feats is None:
                raise CheckpointError("no features")
        except CheckpointError:
            real = _load_split(config, "test", log)
            self.mu, self.sigma, self.feats = compute_statistics(self.extractor, real.images.float() / 255.0)
            save_statistics(stats, self.mu, self.sigma, self.feats, extractor=self.extractor.name)

    def __call__(self, images: torch.Tensor) -> dict:
        mu, sigma, feats = compute_statistics(self.extractor, images)
        kid, kid_se = kernel_distance(self.feats, feats, subset_size=min(1000, len(feats)))
        return {"confident": confident_fraction(self.classifier, images), "fid": frechet_distance(self.mu, self.sigma, mu, sigma),
                "kid_x1000": 1000 * kid, "kid_se_x1000": 1000 * kid_se}


def elapsed_at(run: Path) -> dict[int, float]:
    """Training seconds at each logged step (metrics.csv's elapsed_s, sample-grid time excluded
    where the run drew none)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {int(r["step"]): float(r["elapsed_s"]) for r in csv.DictReader(f)}


def train_seconds(elapsed: dict[int, float], step: int) -> float | None:
    """Training seconds at ``step``: logged, or (a run stopped by its clock ends between log rows)
    the last logged row before it plus the steps since at that row's seconds per step, taken
    over the interval before it. None where nothing was logged before ``step``."""
    if step in elapsed:
        return elapsed[step]
    before = sorted(s for s in elapsed if s < step)
    if not before:
        return None
    last = before[-1]
    if len(before) < 2:
        return elapsed[last] * step / last
    prev = before[-2]
    return elapsed[last] + (step - last) * (elapsed[last] - elapsed[prev]) / (last - prev)


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint directory ``step_00004317``, from its name (no weights read)."""
    return int(path.name.rpartition("_")[2])


def parse_sampler(text: str) -> tuple[str, int, float]:
    """``NAME:STEPS`` or, for class-conditional runs, ``NAME:STEPS@W`` (guidance w; default 1)."""
    text, _, w = text.partition("@")
    name, _, steps = text.partition(":")
    return name, int(steps or 0), float(w or 1.0)


def steps_to_score(steps: list[int], every: int, last: bool) -> set[int]:
    """The checkpoint steps to score, out of a run's ``steps``: every one; with ``every`` > 0 the
    multiples of it and always the final checkpoint (a run stopped by its clock ends between
    multiples, and its last checkpoint carries the figure); with ``last`` the final one alone."""
    if not steps:
        return set()
    if last:
        return {max(steps)}
    return {s for s in steps if not every or s % every == 0} | {max(steps)}


def curve(args) -> None:
    run = Path(args.run)
    out_path = run / "quality_curve.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {"cells": {}}
    results["command"] = args.command_line
    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise SystemExit(f"no checkpoints in {run}")
    config = read_checkpoint(checkpoints[-1]).config
    if args.data_dir:
        config = replace(config, data=replace(config.data, data_dir=str(Path(args.data_dir).resolve())))
    scorer = Scorer(config, args.cache_dir)
    results["classifier_test_accuracy"] = scorer.accuracy
    if "real_confident" not in results:  # the reference: the held-out real images, scored alike
        real = _load_split(config, "test", print)
        results["real_confident"] = confident_fraction(scorer.classifier, real.images.float() / 255.0)
    print(f"held-out real images: confident {results['real_confident']:.3f} (classifier test accuracy {scorer.accuracy:.4f})")
    key = f"real_train|{args.num_samples}"  # the floor of the distances at this N: real images scored as samples are
    if key not in results.setdefault("real_train", {}):
        train_split = _load_split(config, "train", print)
        pick = torch.randperm(len(train_split.images), generator=torch.Generator().manual_seed(args.seed))[: args.num_samples]
        results["real_train"][key] = scorer(train_split.images[pick].float() / 255.0)
        atomic_write_text(out_path, json.dumps(results, indent=2) + "\n")
    ref = results["real_train"][key]
    print(f"{args.num_samples} real training images scored as samples: confident {ref['confident']:.3f}  fid {ref['fid']:.4f}  "
          f"kid {ref['kid_x1000']:.2f}")
    elapsed = elapsed_at(run)
    # the images column: steps x the run's global batch (given by --processes, which the run does not record)
    results["global_batch"] = config.train.batch_size * config.train.grad_accum * args.processes
    for cell in results["cells"].values():  # cells kept from an earlier invocation: minutes as now computed
        cell["train_s"] = train_seconds(elapsed, cell["step"])
    torch.set_num_threads(args.threads)
    chosen = steps_to_score([checkpoint_step(p) for p in checkpoints], args.every, args.last)
    for ckpt_path in checkpoints:
        if checkpoint_step(ckpt_path) not in chosen:
            continue
        ckpt = read_checkpoint(ckpt_path)
        diffusion = None
        for spec in args.sampler:
            name, steps, w = parse_sampler(spec)
            conditional = bool(config.data.class_conditional)
            if w != 1.0 and not conditional:
                raise SystemExit(f"--sampler {spec}: guidance needs a class-conditional run")
            key = f"{ckpt.step}|{name}:{steps}|{args.num_samples}" + (f"|w{w:g}" if conditional else "")
            if key in results["cells"]:
                continue
            if diffusion is None:
                diffusion, _ = load_for_sampling(ckpt_path, device="cpu")
            sample = replace(config.sample, sampler=name, steps=steps, eta=0.0, grid="", guidance_scale=w)
            # a class-conditional run draws the classes in turn (0, 1, ..., 9, 0, ...), as ddpm sample does
            labels = class_layout(args.num_samples, diffusion.num_classes) if conditional else None
            began = time.monotonic()
            images = generate(diffusion, args.num_samples, batch_size=250, sample=sample, seed=args.seed, labels=labels)
            cell = scorer(images)
            cell.update(step=ckpt.step, sampler=name, steps=steps, guidance=w if conditional else None, num_samples=args.num_samples,
                        train_s=train_seconds(elapsed, ckpt.step), sample_s_per_image=(time.monotonic() - began) / args.num_samples)
            suffix = f"-w{w:g}" if conditional else ""
            save_grid(images[:64], run / "quality_curve" / f"step{ckpt.step:08d}-{name}-{steps}{suffix}.png")
            results["cells"][key] = cell
            atomic_write_text(out_path, json.dumps(results, indent=2) + "\n")
            print(f"step {ckpt.step} {name}:{steps}{'@' + format(w, 'g') if conditional else ''}: confident {cell['confident']:.3f}  fid {cell['fid']:.4f}  "
                  f"kid {cell['kid_x1000']:.2f}", flush=True)
    print_table(results, args.images_per_s)


def print_table(results: dict, images_per_s: float | None) -> None:
    cells = sorted(results["cells"].values(), key=lambda c: (c["sampler"], c["steps"], c.get("guidance") or 1, c["step"]))
    rate = f" | min@{images_per_s:g}/s" if images_per_s else ""
    print(f"\n| sampler | step | images | train min{rate} | confident >= {CONFIDENT} | FID-style | KID x1000 |")
    print("|---|---:|---:|---:|" + ("---:|" if images_per_s else "") + "---:|---:|---:|")
    for c in cells:
        train_min = f"{c['train_s'] / 60:.1f}" if c.get("train_s") else "-"
        images = c["step"] * results["global_batch"]
        at_rate = f" | {images / images_per_s / 60:.1f}" if images_per_s else ""
        w = f"@{c['guidance']:g}" if c.get("guidance") else ""
        print(f"| {c['sampler']}:{c['steps']}{w} | {c['step']} | {images:,} | {train_min}{at_rate} | "
              f"{c['confident']:.3f} | {c['fid']:.4f} | {c['kid_x1000']:.2f} ± {c['kid_se_x1000']:.2f} |")


def calibrate(args) -> None:
    """Uncontended images/s of a configuration: a short run of the real training loop."""
    from ddpm.training.loop import train

    config = load_toml(args.calibrate)
    overrides = {"max_steps": str(args.calibrate_steps), "sample_every": "0", "save_every": "0",
                 "log_every": str(max(args.calibrate_steps // 4, 1)), "tensorboard": "false"}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    for item in args.set or ():
        key, _, value = item.partition("=")
        overrides[key.replace("-", "_")] = value
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        overrides.update(runs_dir=tmp, name="calibrate")
        config = apply_overrides(config, overrides)
        before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.monotonic()
        train(config, log=lambda msg: None, progress=False)
        wall = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_SELF)
        with (Path(tmp) / "calibrate" / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
    rates = [float(r["images_per_s"]) for r in rows[1:]]  # the first interval holds the warm-up
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    images = config.train.max_steps * config.train.batch_size
    # With one thread, CPU seconds are the run's own time whatever else the machine does: the
    # images per CPU-second are the uncontended one-thread rate (start-up included, so a lower bound).
    print(f"{args.calibrate} {' '.join(args.set or ())} ({torch.get_num_threads()} threads): images/s per interval "
          f"{[round(r) for r in rates]}, median {sorted(rates)[len(rates) // 2]:.1f}; {images} images in {wall:.0f} s "
          f"wall, {cpu:.0f} CPU-s: {images / cpu:.1f} images per CPU-second")


def main() -> None:
    import sys

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a run directory whose checkpoints to score")
    p.add_argument("--sampler", action="append",
                   help="NAME:STEPS, or NAME:STEPS@W for guidance w on a class-conditional run; repeat for several (default dpm++2m:20)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=0,
                   help="only checkpoints whose step is a multiple of this, and the final checkpoint")
    p.add_argument("--last", action="store_true", help="only the final checkpoint (e.g. for the guidance rows)")
    p.add_argument("--data-dir", help="where the data set's files are (for the classifier and the held-out split)")
    p.add_argument("--cache-dir", help="classifier and statistics cache (default: ddpm eval's)")
    p.add_argument("--images-per-s", type=float, help="uncontended throughput, for the min@R column")
    p.add_argument("--processes", type=int, default=1, help="the run's torchrun processes (its global batch is batch_size x this)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--calibrate", metavar="CONFIG", help="measure a config's training images/s instead")
    p.add_argument("--calibrate-steps", type=int, default=400)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="--calibrate: config overrides")
    args = p.parse_args()
    args.command_line = " ".join(["python", "benchmarks/quality_curve.py"] + sys.argv[1:])
    args.sampler = args.sampler or ["dpm++2m:20"]
    if args.calibrate:
        calibrate(args)
    elif args.run:
        curve(args)
    else:
        p.error("give --run RUN or --calibrate CONFIG")


if __name__ == "__main__":
    main()
