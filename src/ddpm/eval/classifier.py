"""A small CNN trained on a data set's own labels, used as an offline feature extractor.

FID with the Inception network needs a 92 MB download and is poorly suited to 8x8 or 28x28
images. The common alternative for small data sets is a classifier trained on the data set's
labelled training split: its penultimate activations (the global average of the last conv
block, ``feature_dim`` numbers) serve as features for FID/KID/precision-recall, and its
predictions give a class histogram of generated samples.

Weights are stored in safetensors and the constructor arguments in JSON, so loading runs no
code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, DataError
from ..fileio import atomic_write, atomic_write_text

WEIGHTS_FILE = "classifier.safetensors"
INFO_FILE = "classifier.json"
FORMAT = "ddpm-classifier"
FORMAT_VERSION = 1


class SmallClassifier(nn.Module):
    """Conv stages ``widths`` (3x3 conv, GroupNorm, ReLU; 2x2 max-pool between stages while the
    map is at least 8 pixels wide) -> global average pool (the features) -> linear head.

    Takes images ``[N, channels, image_size, image_size]`` in [0, 1]. Works from 8x8 up; the
    global pool makes the head independent of the image size.
    """

    def __init__(self, channels: int, num_classes: int, image_size: int, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        if channels < 1 or num_classes < 2 or image_size < 4 or not widths:
            raise ConfigError(
                f"a classifier needs channels >= 1, num_classes >= 2, image_size >= 4 and some widths; "
                f"got channels={channels}, num_classes={num_classes}, image_size={image_size}, widths={list(widths)}"
            )
        self.channels, self.num_classes, self.image_size = channels, num_classes, image_size
        self.widths = [int(w) for w in widths]
        layers: list[nn.Module] = []
        cin, size = channels, image_size
        for i, w in enumerate(self.widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.GroupNorm(min(8, w), w), nn.ReLU()]
            if i < len(self.widths) - 1 and size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    @property
    def dim(self) -> int:
        return self.feature_dim

    def config(self) -> dict:
        """The constructor arguments, as stored in ``classifier.json``."""
        return {
            "channels": self.channels,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "widths": list(self.widths),
        }

    def embed(self, images: Tensor) -> Tensor:
        """Penultimate features ``[N, feature_dim]`` of images ``[N, C, H, W]`` in [0, 1]."""
        return self.trunk(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``[N, num_classes]``."""
        return self.head(self.embed(images))


def _as_unit_float(images: Tensor, model: SmallClassifier) -> Tensor:
    """uint8 [0, 255] or float [0, 1] images -> float32 [0, 1], checked against the model."""
    images = torch.as_tensor(images)
    want = [model.channels, model.image_size, model.image_size]
    if images.ndim != 4 or list(images.shape[1:]) != want:
        raise ConfigError(
            f"this classifier takes images of shape [N, {', '.join(map(str, want))}]; got {list(images.shape)}"
        )
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    return images.float()


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batched(model: SmallClassifier, images: Tensor, fn: Callable[[Tensor], Tensor], batch_size: int) -> Tensor:
    images = _as_unit_float(images, model)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = [fn(images[i : i + batch_size].to(device)).cpu() for i in range(0, images.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def features(model: SmallClassifier, images: Tensor, *, batch_size: int = 512) -> Tensor:
    """Features ``[N, feature_dim]`` (float32, CPU) of images ``[N, C, H, W]`` in [0, 1] (or uint8)."""
    return _batched(model, images, model.embed, batch_size)


def predict(model: SmallClassifier, images: Tensor, *, batch_size: int = 512) -> Tensor:
    """Predicted labels ``[N]`` (int64, CPU)."""
    return _batched(model, images, lambda x: model(x).argmax(dim=1), batch_size)


def classifier_accuracy(model: SmallClassifier, images: Tensor, labels: Tensor, *, batch_size: int = 512) -> float:
    """Fraction of ``images`` whose predicted label equals ``labels [N]``."""
    labels = torch.as_tensor(labels).long().cpu()
    return float((predict(model, images, batch_size=batch_size) == labels).float().mean())


def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    widths: Sequence[int] = (32, 64, 128),
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> SmallClassifier:
    """Train a :class:`SmallClassifier` on uint8 images ``[N, C, H, W]`` and labels ``[N]``.

    AdamW with cross-entropy, reshuffled every epoch. Initialisation and shuffling come from
    ``seed`` alone (the global RNG is left as it was), so a run on the same device repeats
    exactly. Returns the model in eval mode, on ``device``; ``log`` gets one line per epoch.
    """
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise DataError(
            f"train_classifier needs square uint8 images [N, C, H, H]; got {images.dtype} {list(images.shape)}"
        )
    if labels.shape != (images.shape[0],) or images.shape[0] == 0:
        raise DataError(f"need one label per image; got {list(labels.shape)} labels for {images.shape[0]} images")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(
            f"labels must lie in [0, {num_classes - 1}]; got values from {int(labels.min())} to {int(labels.max())}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(images.shape[1], num_classes, images.shape[-1], widths)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = (images[idx].float() / 255.0).to(device)
            y = labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        log(f"classifier epoch {epoch + 1}/{epochs}: loss {total / n:.4f}, train accuracy {correct / n:.4f}")
    return model.eval()


def save_classifier(
    model: SmallClassifier, directory: str | Path, *, accuracy: float, meta: dict | None = None
) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` into ``directory``, atomically.

    ``accuracy`` (on held-out data) and ``meta`` (JSON-serialisable, e.g. the data set name)
    are stored beside the constructor arguments. The JSON is written last, so a directory with
    a JSON file always has its weights. Returns the directory.
    """
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    info = {"format": FORMAT, "version": FORMAT_VERSION, **model.config()}
    info.update(accuracy=float(accuracy), meta=meta or {})
    atomic_write_text(directory / INFO_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return directory


def load_classifier(directory: str | Path) -> tuple[SmallClassifier, dict]:
    """Load a classifier written by :func:`save_classifier` -> ``(model in eval mode on CPU, info)``.

    ``info`` is the JSON content (constructor arguments, ``accuracy``, ``meta``). A missing,
    damaged or mismatched file raises :class:`CheckpointError`.
    """
    directory = Path(directory)
    info_path, weights_path = directory / INFO_FILE, directory / WEIGHTS_FILE
    for p in (info_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"{p} does not exist; {directory} is not a saved classifier directory")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("format") != FORMAT:
            raise ValueError(info.get("format"))
        model = SmallClassifier(
            int(info["channels"]), int(info["num_classes"]), int(info["image_size"]), info["widths"]
        )
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError):
        raise CheckpointError(
            f"{info_path} is damaged or not a {FORMAT} file; expected the JSON written by save_classifier"
        ) from None
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors raises its own error type; load_state_dict raises RuntimeError
        raise CheckpointError(
            f"{weights_path} is damaged or does not match {info_path} ({type(exc).__name__}); retrain the classifier"
        ) from None
    return model.eval(), info
