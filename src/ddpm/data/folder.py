"""A folder of the user's own images (``folder:PATH``), read recursively into memory.

Files ending in .png, .jpg, .jpeg, .webp, .bmp or .gif (first frame) are read in sorted order of
their path below the folder; names starting with a dot (and everything under such folders) are
ignored. Each image is turned upright (EXIF orientation), flattened onto white if it has
transparency, scaled from 16 to 8 bits if needed, converted to RGB or grayscale, and resized so
that its short side fits ``image_size`` then center-cropped to it.

Labels: when every image lies inside a first-level sub-folder, the sorted sub-folder names are
the classes. When some images lie directly in the folder itself, the data set has no labels (a
log line says so): mixing labelled and unlabelled images would silently invent a class.

A folder has no held-out part: the "test" split returns the same images as "train".

A file that cannot be read (corrupt, truncated, not an image, a decompression bomb beyond PIL's
``Image.MAX_IMAGE_PIXELS``) is reported through ``log`` and skipped. Only the decoders of the
formats above are ever used, whatever a file's name: PIL would otherwise try each of its dozens
of rarely used decoders on a file it does not recognise, a needless attack surface.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .base import check_split, fit_image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF")  # PIL opens multi-picture (MPO) JPEGs as JPEG
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("LA", "La", "PA", "RGBA", "RGBa")


def list_relative(root: Path) -> list[str]:
    """The relative paths ("sub/name.png") of the image files below ``root`` (symlinked folders
    not followed), sorted. Plain strings, not Path objects: a Path costs several times the bytes
    of its name, and pathlib interns every name in a table that never shrinks."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        rel = os.path.relpath(directory, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found += [prefix + f for f in files if not f.startswith(".") and f.lower().endswith(EXTENSIONS)]
    found.sort()
    return found


def list_images(root: Path) -> list[Path]:
    """Image files below ``root`` (symlinked folders not followed), sorted by their relative path."""
    return [Path(root, r) for r in list_relative(root)]


def load_image(path: Path | BinaryIO, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file (a path, or a binary file object such as an upload's bytes in ``io.BytesIO``)
    as uint8 [C, H, W] (C = ``channels``, (H, W) = ``size``); PIL errors propagate."""
    with warnings.catch_warnings():
        # Above MAX_IMAGE_PIXELS PIL only warns; a data set loader should refuse. catch_warnings
        # restores the filters afterwards, and PIL's own settings are never touched.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path, formats=FORMATS) as image:
            # JPEG only: decode at a reduced scale that still leaves >= 2x the target for LANCZOS.
            image.draft(None, (2 * max(size),) * 2)
            image = to_mode(ImageOps.exif_transpose(image), "L" if channels == 1 else "RGB")
    array = np.asarray(fit_image(image, size))
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Any PIL image -> ``mode`` ("L" or "RGB"): 16 bit scaled to 8, transparency composited on white."""
    if image.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode in _ALPHA or "transparency" in image.info:
        # Transparent pixels hold arbitrary colour (often black); show them as on a white page.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # P, CMYK, YCbCr, 1, ...: PIL's conversions
    # RGB -> L: PIL's ITU-R 601-2 luma, the same conversion as for the built-in data sets.
    return image if image.mode == mode else image.convert(mode)


def listed_folder(root: str | Path, lister: Callable[[Path], Sequence[Any]]) -> tuple[Path, Sequence[Any]]:
    """``root`` (``~`` expanded) and the images ``lister`` finds below it; one DataError sentence when
    it is not a folder or holds no image."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder.")
    files = lister(root)
    if not files:
        raise DataError(f"image folder {root} holds no image files ({', '.join(EXTENSIONS)}).")
    return root, files


def load_folder(
    root: str | Path,
    split: str,
    size: tuple[int, int],
    channels: int,
    *,
    class_labels: bool = True,
    log: Callable[[str], None] = print,
    files_read: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """uint8 images [N, channels, H, W], int64 labels [N] or None, and the class names or None.
    ``files_read``, if given, receives the path of each image read, relative to ``root``."""
    check_split(split)
    root, files = listed_folder(root, list_images)
    if split == "test":
        log("folder data sets have no held-out split: 'test' uses the same images as 'train'")
    log(f"reading {len(files)} images from {root}")
    images = np.empty((len(files), channels) + size, np.uint8)
    kept: list[Path] = []
    for path in files:
        try:
            images[len(kept)] = load_image(path, size, channels)
        except Exception as err:  # noqa: BLE001 - PIL raises many types on bad files; skip and report each
            log(f"skipping {path}: {type(err).__name__}: {err}")
            continue
        kept.append(path)
    if len(kept) < len(files):
        log(f"skipped {len(files) - len(kept)} of {len(files)} files that could not be read")
    if not kept:
        raise DataError(f"image folder {root} holds no readable image ({_count(len(files), 'file')} could not be read).")
    images = images[: len(kept)]
    if files_read is not None:
        files_read.extend(p.relative_to(root).as_posix() for p in kept)
    if not class_labels:
        return images, None, None
    labels, names = folder_labels([p.relative_to(root).parts for p in kept], root, log)
    return images, labels, names


def folder_labels(parts: list[tuple[str, ...]], root: Path, log: Callable[[str], None]) -> tuple[np.ndarray | None, list[str] | None]:
    """Class labels from the relative paths' parts: the sorted first-level sub-folders, or none
    (with a log line) when some images lie directly in ``root``."""
    names = sorted({q[0] for q in parts if len(q) > 1})
    if not names:
        return None, None
    loose = sum(len(q) == 1 for q in parts)
    if loose:
        log(f"{_count(loose, 'image')} directly in {root}, not in a class sub-folder, so the data set has no class labels")
        return None, None
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[q[0]] for q in parts], np.int64), names


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
