"""Prompt accuracy: does a text-conditional run draw what its prompts ask for?

For prompts whose class is known (label-derived captions: "a handwritten seven" asks for a 7),
images are drawn for each prompt in turn and the data set's classifier labels them; the prompt
accuracy is the fraction labelled as asked, overall, per class and per prompt.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..config import SampleConfig
from ..generate import generate
from ..text.label_captions import LABEL_CAPTIONS, label_phrasings
from .classifier import predict


def trained_prompts(dataset: str, class_names: list[str] | None, num_classes: int) -> list[tuple[int, str]] | None:
    """(class, phrasing) for every class and every phrasing the run trained on, or None for a data
    set without label-derived captions (a folder)."""
    if dataset not in LABEL_CAPTIONS:
        return None
    per_class = label_phrasings(dataset, class_names, num_classes)
    # phrasing-major order: drawing N images in turn covers every class evenly, whatever N
    return [(c, per_class[c][j]) for j in range(max(len(p) for p in per_class)) for c in range(num_classes)
            if j < len(per_class[c])]


def prompt_layout(labelled: Sequence[tuple[int, str]], num: int) -> tuple[list[int], list[str]]:
    """The class and prompt of each of ``num`` images, cycling over ``labelled``."""
    picks = [labelled[i % len(labelled)] for i in range(num)]
    return [c for c, _ in picks], [p for _, p in picks]


def score_prompts(predicted: Tensor, wanted: Sequence[int], prompts: Sequence[str]) -> dict[str, Any]:
    """Accuracy of classifier labels ``predicted`` [N] against the classes asked ``wanted``."""
    wanted_t = torch.as_tensor(list(wanted))
    hit = (predicted.cpu() == wanted_t).float()
    per_class = {str(c): float(hit[wanted_t == c].mean()) for c in sorted(set(wanted))}
    per_prompt: dict[str, list[float]] = {}
    for h, p in zip(hit.tolist(), prompts):
        per_prompt.setdefault(p, []).append(h)
    return {"overall": float(hit.mean()), "per_class": per_class,
            "per_prompt": {p: sum(v) / len(v) for p, v in per_prompt.items()}, "images": len(hit)}


def prompt_accuracy(diffusion, classifier, labelled: Sequence[tuple[int, str]], num: int, *, sample: SampleConfig,
                    batch_size: int = 250, seed: int = 0) -> tuple[dict[str, Any], Tensor]:
    """Draw ``num`` images cycling over ``labelled`` prompts and score them; returns the scores
    and the images [num, C, H, W] in [0, 1]."""
    wanted, prompts = prompt_layout(labelled, num)
    images = generate(diffusion, num, batch_size=batch_size, sample=sample, seed=seed, prompts=prompts)
    return score_prompts(predict(classifier, images), wanted, prompts), images


__all__ = ["prompt_accuracy", "prompt_layout", "score_prompts", "trained_prompts"]
