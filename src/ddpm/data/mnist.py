"""MNIST and Fashion-MNIST: four IDX files per data set, read from a folder or downloaded.

A folder holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
and ``t10k-labels-idx1-ubyte``, each plain or gzip-compressed with a ``.gz`` suffix. With
``download=True`` the missing files of the requested split are fetched (``.gz``, MD5 checked)
from the source's mirrors. Both data sets: 60,000 training and 10,000 test images, 28x28, 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from .base import check_split
from .download import FileSpec, download_file
from .idx import read_idx

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """An IDX data set: its name, where to download it, the MD5 of each ``.gz`` file, its classes."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    files: tuple[FileSpec, ...]
    class_names: tuple[str, ...]

    def spec(self, base_name: str) -> FileSpec:
        return next(f for f in self.files if f.name == base_name + ".gz")


MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    files=(
        FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    class_names=tuple(str(d) for d in range(10)),
)

FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    files=(
        FileSpec("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        FileSpec("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

IDX_SOURCES = {s.name: s for s in (MNIST, FASHION_MNIST)}


def load_idx_dataset(
    source: IdxSource,
    split: str,
    folder: str | Path,
    *,
    download: bool = False,
    mirrors: Sequence[str] | None = None,
    tries: int = 3,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 1, H, W] and uint8 labels [N] of one split of ``source`` from ``folder``.

    ``mirrors`` replaces ``source.mirrors``; ``tries`` and ``backoff`` go to the downloader.
    """
    check_split(split)
    folder = Path(folder).expanduser()
    paths = []
    for base_name in SPLIT_FILES[split]:
        path = _find(folder, base_name)
        if path is None and download:
            spec = source.spec(base_name)
            path = download_file(spec, mirrors or source.mirrors, folder, tries=tries, backoff=backoff, log=log)
        if path is None:
            where = f" from {folder}" if folder.is_dir() else f": {folder} does not exist"
            raise DataError(
                f"{source.title} file {base_name}[.gz] is missing{where}; "
                f"pass --download (download=True) to fetch it, or put the file there by hand."
            )
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3:
        raise DataError(f"{paths[0]} should hold images [N, H, W] but has {images.ndim} dimensions.")
    if labels.ndim != 1:
        raise DataError(f"{paths[1]} should hold labels [N] but has {labels.ndim} dimensions.")
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds {len(labels)} labels.")
    if len(images) == 0:
        raise DataError(f"{paths[0]} holds no images.")
    if labels.max() >= len(source.class_names):
        raise DataError(f"{paths[1]} holds label {labels.max()}; {source.title} labels are 0 to {len(source.class_names) - 1}.")
    return images[:, None], labels


def _find(folder: Path, base_name: str) -> Path | None:
    for name in (base_name, base_name + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None
