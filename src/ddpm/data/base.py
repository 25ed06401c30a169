"""The in-memory data set every source returns, and the resizing / channel conversion they share.

Images are stored as uint8 [N, C, H, W] (0..255): four times smaller than float, and exact. The
trainer turns a batch into the library's float convention, [-1, 1], with
:meth:`ImageDataset.to_float`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, DataError

SPLITS = ("train", "test")
Log = Callable[[str], None]


@dataclass
class ImageDataset:
    """A whole data set held in memory.

    images: uint8 [N, C, H, W], values 0..255.
    labels: int64 [N] class indices, or None when the source has no labels.
    class_names: the name of each class index, or None.
    name: where it came from, e.g. ``"digits"``, ``"mnist"``, ``"folder:/path"``.
    files: for a folder, each image's path relative to it (captions are looked up by it), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    name: str
    files: list[str] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.images, torch.Tensor) and self.images.dtype == torch.uint8 and self.images.dim() == 4):
            raise DataError(f"data set {self.name!r} needs images as a uint8 tensor [N, C, H, W], got {_describe(self.images)}.")
        if self.labels is not None:
            n = self.images.shape[0]
            if not (isinstance(self.labels, torch.Tensor) and self.labels.dtype == torch.int64 and self.labels.shape == (n,)):
                raise DataError(f"data set {self.name!r} needs labels as an int64 tensor [{n}], got {_describe(self.labels)}.")
            if self.class_names is not None and n and int(self.labels.max()) >= len(self.class_names):
                raise DataError(
                    f"data set {self.name!r} has label {int(self.labels.max())} but only {len(self.class_names)} class names."
                )

    @property
    def num_classes(self) -> int | None:
        """Number of classes, or None for an unlabelled data set."""
        if self.labels is None:
            return None
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, keep: torch.Tensor) -> "ImageDataset":
        """The images where ``keep`` (bool [N]) is true, with their labels and file names."""
        files = [f for f, k in zip(self.files, keep.tolist()) if k] if self.files is not None else None
        labels = self.labels[keep] if self.labels is not None else None
        return ImageDataset(self.images[keep], labels, self.class_names, self.name, files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])

    def to_float(self, indices) -> torch.Tensor:
        """float32 [B, C, H, W] in [-1, 1] (x / 127.5 - 1) for ``indices`` (tensor, list or slice)."""
        return self.images[indices].to(torch.float32) / 127.5 - 1.0


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose 'train' or 'test'.")
    return split


def parse_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``None``, ``s`` or ``(H, W)`` with positive sizes -> ``None`` or ``(H, W)``."""
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ConfigError(f"image_size must be an integer or a pair (height, width), got {image_size!r}.")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ConfigError(f"image_size must hold positive integers, got {image_size!r}.")
    return size  # type: ignore[return-value]


def check_channels(channels: int | None) -> int | None:
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    return channels


def fit_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize so the short side fits, then center-crop to ``size = (H, W)``, in one resampling.

    The crop box (the largest centered region with the target's aspect ratio, in sub-pixel
    coordinates) is passed to ``Image.resize``, so the result equals "resize the short side,
    then center-crop" without an intermediate rounding. LANCZOS when shrinking (it low-passes
    and so avoids aliasing), bicubic when enlarging.
    """
    h, w = size
    src_w, src_h = image.size
    if (src_h, src_w) == (h, w):
        return image
    scale = max(h / src_h, w / src_w)
    box_w, box_h = w / scale, h / scale
    left, top = (src_w - box_w) / 2, (src_h - box_h) / 2
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return image.resize((w, h), resample, box=(left, top, left + box_w, top + box_h))


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 3, H, W] RGB -> [N, 1, H, W] with PIL's "L" conversion (ITU-R 601-2 luma)."""
    n, _, h, w = images.shape
    if n == 0:
        return np.zeros((0, 1, h, w), np.uint8)
    # The conversion is per pixel, so all images stacked as one tall picture convert in one call.
    tall = np.ascontiguousarray(images.transpose(0, 2, 3, 1).reshape(n * h, w, 3))
    gray = np.asarray(Image.fromarray(tall, "RGB").convert("L"))
    return gray.reshape(n, 1, h, w)


def resize_all(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [N, C, H, W] (C = 1 or 3) -> [N, C, size[0], size[1]] with :func:`fit_image`."""
    n, c, h, w = images.shape
    if (h, w) == size:
        return images
    out = np.empty((n, c) + size, np.uint8)
    hwc = images.transpose(0, 2, 3, 1)
    for i in range(n):
        pic = Image.fromarray(np.ascontiguousarray(hwc[i, :, :, 0] if c == 1 else hwc[i]), "L" if c == 1 else "RGB")
        arr = np.asarray(fit_image(pic, size))
        out[i] = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return out


def finish(
    images: np.ndarray,
    labels: np.ndarray | None,
    class_names: list[str] | None,
    name: str,
    *,
    image_size: tuple[int, int] | None,
    channels: int | None,
    class_labels: bool,
    files: list[str] | None = None,
) -> ImageDataset:
    """Convert channels, resize and wrap uint8 [N, C, H, W] arrays as an :class:`ImageDataset`."""
    if channels == 1 and images.shape[1] == 3:
        images = to_grayscale(images)  # before resizing: a third of the work
    if image_size is not None:
        images = resize_all(images, image_size)
    if channels == 3 and images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # np.frombuffer / PIL views: torch wants memory it may write
        images = images.copy()
    keep = class_labels and labels is not None
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels.astype(np.int64)) if keep else None,
        class_names=list(class_names) if keep and class_names is not None else None,
        name=name,
        files=files,
    )
