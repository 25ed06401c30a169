"""``ddpm eval``: how good is a trained run, in the numbers papers use.

For N images drawn from the run (EMA weights, the sampler and steps given or the run's own) and
the data set's held-out split: FID, KID (with its standard error) and precision/recall on a
feature extractor; bits/dim of held-out images through the variational bound; for a
class-conditional run, the accuracy of a classifier on images drawn for each class. The result
is printed as a table and written to ``runs/<name>/eval/<timestamp>.json`` with every setting.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import SampleConfig, resolved_guidance
from ..data import get_dataset
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_text
from ..generate import class_layout, generate
from ..runs.load import load_for_sampling
from ..text.prompts import read_labelled_prompts
from ..runs.validate import check_sample_settings
from ..sampling import config_steps_and_grid
from .classifier import classifier_accuracy, load_classifier, predict, save_classifier, train_classifier
from .features import classifier_extractor, compute_statistics, inception_extractor, load_statistics, save_statistics
from .inception import download_inception_weights
from .metrics import frechet_distance, kernel_distance, precision_recall
from .prompts import prompt_accuracy, prompt_layout, score_prompts, trained_prompts

FEATURES = ("classifier", "inception")


@dataclass
class EvalSettings:
    num_samples: int = 1000
    batch_size: int = 250
    seed: int = 0
    features: str = "classifier"
    sample: SampleConfig | None = None  # None: the run's own [sample] settings
    bpd_images: int = 100  # 0 skips bits/dim
    inception_weights: str | None = None
    download: bool = False
    cache_dir: str | None = None  # default ~/.cache/torch-ddpm/eval
    use_ema: bool = True
    device: str = "auto"
    classes: tuple[int, ...] = ()  # class-conditional runs: the classes to draw, in turn (empty: all)
    prompts_file: str | None = None  # text runs with label-derived captions: "CLASS: prompt" lines, also scored


def _cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/torch-ddpm/eval").expanduser()


def _data_key(config) -> str:
    """A cache key for one data set as the run sees it (source, size, channels)."""
    d = config.data
    name = d.dataset
    if name.startswith("folder:"):
        name = "folder-" + hashlib.sha256(str(Path(name[7:]).expanduser().resolve()).encode()).hexdigest()[:12]
    h, w = d.image_size if len(d.image_size) == 2 else (d.image_size[0], d.image_size[0])
    return f"{name}-{h}x{w}-c{d.channels}"


def _load_split(config, split: str, log):
    d = config.data
    return get_dataset(d.dataset, split=split, data_dir=d.data_dir or None, download=d.download,
                       cache_dir=d.cache_dir or None, image_size=tuple(d.image_size), channels=d.channels,
                       class_labels=True, log=log)


def get_classifier(config, settings: EvalSettings, device: torch.device, log: Callable[[str], None]):
    """The data set's classifier, trained on its labelled training split once and then cached."""
    directory = _cache_root(settings.cache_dir) / "classifiers" / _data_key(config)
    try:
        model, info = load_classifier(directory)
        return model.to(device), float(info["accuracy"])
    except CheckpointError:
        pass
    train = _load_split(config, "train", log)
    if train.labels is None or not train.num_classes:
        raise ConfigError(
            f"the classifier features need class labels and {config.data.dataset!r} has none; use --features inception"
        )
    test = _load_split(config, "test", log)
    epochs = int(min(40, max(3, math.ceil(60000 / len(train)))))
    log(f"training the {config.data.dataset} classifier for the features ({len(train)} images, {epochs} epochs; cached)")
    model = train_classifier(train.images, train.labels, num_classes=train.num_classes, epochs=epochs, device=device,
                             log=lambda msg: None)
    accuracy = classifier_accuracy(model, test.images, test.labels)
    save_classifier(model, directory, accuracy=accuracy, meta={"dataset": config.data.dataset, "epochs": epochs})
    log(f"classifier test accuracy: {accuracy:.4f}")
    return model, accuracy


def evaluate_run(run: str | Path, settings: EvalSettings | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate a run (or checkpoint) and write ``eval/<timestamp>.json`` in its directory."""
    settings = settings or EvalSettings()
    if settings.features not in FEATURES:
        raise ConfigError(f"unknown feature extractor {settings.features!r}; choose one of {', '.join(FEATURES)}")
    if settings.num_samples < 2:
        raise ConfigError(f"--num-samples must be at least 2; got {settings.num_samples}")
    diffusion, ckpt = load_for_sampling(run, use_ema=settings.use_ema, device=settings.device)
    config, device = ckpt.config, diffusion.device
    sample = settings.sample or config.sample
    sample = replace(sample, guidance_scale=resolved_guidance(sample.guidance_scale, bool(diffusion.num_classes)))
    if settings.classes and not diffusion.num_classes:
        raise ConfigError("--class needs a class-conditional run (trained with --class-conditional)")
    labels = class_layout(settings.num_samples, diffusion.num_classes, settings.classes) if diffusion.num_classes else None
    text_run = diffusion.text_conditional
    real = _load_split(config, "test", log)
    real_images = real.images.float() / 255.0
    if settings.prompts_file and not text_run:
        raise ConfigError("--prompts-file needs a text-conditional run (trained with --text-conditional)")
    labelled = file_prompts = prompts = wanted = None
    if text_run:  # the FID images are drawn for the training phrasings in turn (a folder's: unconditional)
        labelled = trained_prompts(config.data.dataset, real.class_names, int(real.num_classes or 0))
        if labelled is None:
            if settings.prompts_file:
                raise ConfigError(f"--prompts-file needs a run with label-derived captions ({config.data.dataset!r} has "
                                  "none: no classifier knows what its prompts ask for)")
            sample = replace(sample, guidance_scale=1.0)
        else:
            wanted, prompts = prompt_layout(labelled, settings.num_samples)
            if settings.prompts_file:
                file_prompts = read_labelled_prompts(settings.prompts_file, list(real.class_names or []))
    check_sample_settings(sample, diffusion.schedule, bool(diffusion.num_classes) or text_run)
    steps, grid = config_steps_and_grid(sample, diffusion.num_timesteps)  # recorded as used, not as "default"

    classifier = accuracy = None
    if settings.features == "classifier" or diffusion.num_classes or labelled is not None:
        classifier, accuracy = get_classifier(config, settings, device, log)
    if settings.features == "classifier":
        extractor = classifier_extractor(classifier, device=device)
    else:
        weights = settings.inception_weights
        if weights is None:
            cache = _cache_root(settings.cache_dir) / "inception"
            if not settings.download and not any(cache.glob("pt_inception-*.pth")):
                raise ConfigError(
                    "the Inception features need pytorch-fid's weights file: pass --inception-weights FILE, "
                    f"or --download to fetch it once into {cache}"
                )
            weights = download_inception_weights(cache)
        extractor = inception_extractor(weights, device=device)

    stats_path = _cache_root(settings.cache_dir) / "stats" / f"{_data_key(config)}-test-{extractor.name}.npz"
    try:
        mu_r, sigma_r, feats_r = load_statistics(stats_path, extractor=extractor.name)
        if feats_r is None:
            raise CheckpointError("no features")
    except CheckpointError:
        mu_r, sigma_r, feats_r = compute_statistics(extractor, real_images)
        save_statistics(stats_path, mu_r, sigma_r, feats_r, extractor=extractor.name)

    log(f"drawing {settings.num_samples} images with {sample.sampler} ({steps} steps, {grid} grid) on {device}")
    began = time.monotonic()
    fake = generate(diffusion, settings.num_samples, batch_size=settings.batch_size, sample=sample,
                    seed=settings.seed, labels=labels, prompts=prompts)
    seconds = time.monotonic() - began
    mu_g, sigma_g, feats_g = compute_statistics(extractor, fake)
    kid, kid_se = kernel_distance(feats_r, feats_g, subset_size=min(1000, len(feats_r), len(feats_g)))
    precision, recall = precision_recall(feats_r, feats_g, k=3)
    result: dict[str, Any] = {
        "run": str(ckpt.path.parent.parent),
        "checkpoint": str(ckpt.path),
        "step": ckpt.step,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": {**{k: v for k, v in asdict(settings).items() if k != "sample"}, "sample": {**asdict(sample), "steps": steps, "grid": grid}},
        "features": {"extractor": extractor.name, "dim": extractor.dim, "classifier_test_accuracy": accuracy},
        "real_images": len(real),
        "fid": frechet_distance(mu_r, sigma_r, mu_g, sigma_g),
        "kid": kid,
        "kid_stderr": kid_se,
        "precision": precision,
        "recall": recall,
        "seconds_per_image": seconds / settings.num_samples,
    }
    if labels is not None:
        predicted = predict(classifier, fake)
        wanted = torch.tensor(labels)
        per_class = {str(c): float((predicted[wanted == c] == c).float().mean()) for c in sorted(set(labels))}
        result["class_accuracy"] = {"overall": float((predicted == wanted).float().mean()), "per_class": per_class}
    if prompts is not None:
        result["prompt_accuracy"] = {"trained phrasings": score_prompts(predict(classifier, fake), wanted, prompts)}
        if file_prompts is not None:
            log(f"drawing {settings.num_samples} images for the {len(file_prompts)} prompts of {settings.prompts_file}")
            scores, _ = prompt_accuracy(diffusion, classifier, file_prompts, settings.num_samples, sample=sample,
                                        batch_size=settings.batch_size, seed=settings.seed)
            result["prompt_accuracy"][str(settings.prompts_file)] = scores
    if settings.bpd_images > 0:
        n = min(settings.bpd_images, len(real))
        log(f"bits/dim of {n} held-out images ({diffusion.num_timesteps} terms each)")
        totals = []
        g = torch.Generator(device=device).manual_seed(settings.seed)
        for start in range(0, n, settings.batch_size):
            batch = real_images[start : min(n, start + settings.batch_size)].to(device)
            batch_labels = real.labels[start : start + len(batch)].to(device) if diffusion.num_classes else None
            totals.append(diffusion.bits_per_dim(batch, batch_labels, generator=g).total.cpu())
        bpd = torch.cat(totals).double()
        result["bits_per_dim"] = float(bpd.mean())
        result["bits_per_dim_stderr"] = float(bpd.std() / math.sqrt(len(bpd))) if len(bpd) > 1 else float("nan")
        result["bpd_images"] = n
    out = Path(result["run"]) / "eval" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    n = 1
    while out.exists():
        n += 1
        out = out.with_name(f"{time.strftime('%Y%m%d-%H%M%S')}-{n}.json")
    atomic_write_text(out, json.dumps(result, indent=2, default=_jsonable) + "\n")
    result["written_to"] = str(out)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


KID_BELOW_ZERO = (" (below 0: KID is an unbiased estimate, so it can be slightly negative when the generated and "
                  "real sets are indistinguishable at this sample size)")


def format_table(result: dict[str, Any]) -> str:
    """The figures as a two-column text table."""
    s = result["settings"]["sample"]
    rows = [
        ("checkpoint", f"{result['checkpoint']} (step {result['step']})"),
        ("sampler", f"{s['sampler']}, {s['steps']} steps on the {s['grid']} grid, eta {s['eta']}, guidance {s['guidance_scale']}"),
        ("samples / real", f"{result['settings']['num_samples']} / {result['real_images']} (seed {result['settings']['seed']})"),
        ("features", result["features"]["extractor"]),
        ("FID", f"{result['fid']:.4f}"),
        ("KID", f"{result['kid']:.5f} +- {result['kid_stderr']:.5f}" + (KID_BELOW_ZERO if result["kid"] < 0 else "")),
        ("precision / recall", f"{result['precision']:.4f} / {result['recall']:.4f}"),
        ("seconds per image", f"{result['seconds_per_image']:.4f}"),
    ]
    if result["features"]["classifier_test_accuracy"] is not None:
        rows.append(("classifier test accuracy", f"{result['features']['classifier_test_accuracy']:.4f}"))
    if "bits_per_dim" in result:
        rows.append(("bits/dim", f"{result['bits_per_dim']:.4f} +- {result['bits_per_dim_stderr']:.4f} ({result['bpd_images']} images)"))
    if "class_accuracy" in result:
        ca = result["class_accuracy"]
        per = ", ".join(f"{k}: {v:.2f}" for k, v in ca["per_class"].items())
        rows.append(("class accuracy", f"{ca['overall']:.4f} ({per})"))
    for which, pa in result.get("prompt_accuracy", {}).items():
        per = ", ".join(f"{k}: {v:.2f}" for k, v in pa["per_class"].items())
        rows.append((f"prompt accuracy ({which})", f"{pa['overall']:.4f} ({per})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


__all__ = ["EvalSettings", "evaluate_run", "format_table", "get_classifier"]
