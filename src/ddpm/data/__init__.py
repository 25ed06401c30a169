"""Training images, in memory, from one call: ``get_dataset(name, ...)``.

Sources (``name``):

- ``"mnist10k"`` (default): 11,000 MNIST digits, 28x28, shipped with the package (10,000 train /
  1,000 test, CC BY-SA 3.0, see ``MNIST10K_LICENSE.txt``). No download.
- ``"digits"``: 1,797 8x8 handwritten digits shipped with the package (UCI optdigits,
  CC BY 4.0, see ``DIGITS_LICENSE.txt``). No download; every sixth image is the test split.
- ``"mnist"``, ``"fashion-mnist"``: 28x28 grayscale, 60,000 train / 10,000 test, from the four
  IDX files (``.gz`` or not) in ``data_dir``; ``download=True`` fetches missing ones, MD5 checked.
- ``"cifar10"``: 32x32 RGB, 50,000 / 10,000, from the *binary* version: ``data_dir`` holding
  ``cifar-10-binary.tar.gz`` or its extracted ``cifar-10-batches-bin/``; ``download=True`` fetches it.
- ``"flowers102"``: Oxford Flowers-102, 8,189 photographs of 102 kinds of flowers (7,169 train /
  1,020 test, see :mod:`ddpm.data.flowers102`), resized to ``image_size`` (default 64); from
  ``102flowers.tgz``, ``imagelabels.mat`` and ``setid.mat`` in ``data_dir``, or ``download=True``.
- ``"folder:PATH"``: your own images below PATH (png, jpg, webp, bmp, gif), labelled by their
  first-level sub-folder; ``image_size`` is required. There is no test split (it equals train).

Downloads go to ``data_dir`` if given, otherwise to ``<cache_dir>/<name>`` (default cache_dir:
``~/.cache/torch-ddpm``), which is also where files are looked for. ``image_size`` resizes (short
side, then center crop) and ``channels`` converts to grayscale (1) or RGB (3). Every source returns
an :class:`ImageDataset` of uint8 images [N, C, H, W]; ``to_float`` gives [-1, 1] batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence


from ..config import register_choices
from ..errors import ConfigError
from .base import ImageDataset, check_channels, check_split, finish, parse_image_size
from .cifar10 import load_cifar10
from .digits import CLASS_NAMES as DIGIT_NAMES
from .digits import load_digits
from .download import FileSpec, cache_dir_for, download_file
from .flowers102 import CLASS_NAMES as FLOWER_NAMES
from .flowers102 import load_flowers102
from .folder import load_folder
from .mnist import IDX_SOURCES, load_idx_dataset
from .mnist10k import load_mnist10k

DATASET_NAMES = ("mnist10k", "digits", "mnist", "fashion-mnist", "cifar10", "flowers102", "folder:PATH")
register_choices("dataset", DATASET_NAMES)


def get_dataset(
    name: str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = False,
    cache_dir: str | Path | None = None,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    class_labels: bool = True,
    mirrors: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> ImageDataset:
    """Load split ``split`` of data set ``name`` (one of :data:`DATASET_NAMES`) into memory.

    data_dir: folder holding the files (mnist, fashion-mnist, cifar10); default
        ``<cache_dir>/<name>``. Ignored by digits; folders take their path from the name.
    download: fetch missing files from the public mirrors (or ``mirrors``, a list of base URLs).
    image_size: ``s`` or ``(H, W)``; resize when different from the source (required for folders).
    channels: 1 or 3 to convert; default: the source's own (folders: 3).
    class_labels: False drops the labels (``labels`` and ``class_names`` are None).
    log: receives progress lines and warnings (e.g. skipped files).
    """
    check_split(split)
    size = parse_image_size(image_size)
    channels = check_channels(channels)
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    key = name.strip()
    options = dict(image_size=size, channels=channels, class_labels=class_labels)
    if key.startswith("folder:") and key[len("folder:"):]:
        path = key[len("folder:"):]
        if size is None:
            raise ConfigError(f"data set {name!r} needs an image_size, e.g. 64 or (64, 64), to bring its images to one size.")
        files: list[str] = []
        images, labels, names = load_folder(path, split, size, channels or 3, class_labels=class_labels, log=log,
                                            files_read=files)
        return finish(images, labels, names, f"folder:{path}", **options, files=files)
    key = key.lower()
    if key == "digits":
        images, labels = load_digits(split)
        return finish(images, labels, DIGIT_NAMES, "digits", **options)
    if key == "mnist10k":
        images, labels = load_mnist10k(split)
        return finish(images, labels, DIGIT_NAMES, "mnist10k", **options)
    folder = Path(data_dir).expanduser() if data_dir is not None else cache_dir_for(key, cache_dir)
    if key in IDX_SOURCES:
        source = IDX_SOURCES[key]
        images, labels = load_idx_dataset(source, split, folder, download=download, mirrors=mirrors, log=log)
        return finish(images, labels, list(source.class_names), key, **options)
    if key == "cifar10":
        images, labels, names = load_cifar10(split, folder, download=download, mirrors=mirrors, log=log)
        return finish(images, labels, names, key, **options)
    if key == "flowers102":
        images, labels, names = load_flowers102(split, folder, image_size=size, channels=channels, download=download,
                                                mirrors=mirrors, log=log)
        return finish(images, labels, names, key, **options)
    raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}.")


__all__ = ["DATASET_NAMES", "FLOWER_NAMES", "FileSpec", "ImageDataset", "cache_dir_for", "download_file", "get_dataset"]
