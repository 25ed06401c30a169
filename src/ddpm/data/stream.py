"""A folder of images read on the fly (``data.stream``): an index of paths, decoded by workers.

For folders too large to hold decoded in memory, only the paths are kept: one byte buffer and
its offsets rather than a list of Python strings, so that forked DataLoader workers share them
instead of copying them page by page as reference counts change. Each image is decoded, resized
and converted when a batch asks for it by :func:`~ddpm.data.folder.load_image`, the function the
in-memory path uses, so both paths give the same pixels.

A file that cannot be read when its turn comes (corrupt, truncated, deleted since the listing)
is replaced by the next readable file in listing order (i + 1, i + 2, ...): the batch keeps its
size and stays a function of the step, so resume is exact. The replacement reports the file, and
the trainer names it once and counts it (``ddpm.training.source``); each item also carries the
index of the image it holds, so a text-conditional run takes the replacement's own caption.

With ``cache_resized``, each decoded image is also written to one file of fixed-size rows, so
later epochs read C*H*W bytes instead of decoding the original. A row is used only when its
checksum and its source file's size and modification time match, so a torn write (a crash) or
an edited image is decoded again rather than trusted.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .folder import folder_labels, list_relative, listed_folder, load_image

STREAM_ABOVE_BYTES = 1 << 30
"""``stream = "auto"`` streams a folder whose decoded images would take more than this (1 GiB)."""

Note = tuple[str, str, str]  # (kind, key, message): what a worker found, for the trainer to report once


class PathIndex:
    """The relative paths of N files below ``root``: UTF-8 bytes in one buffer, offsets [N + 1].

    About (path length + 8) bytes per file, and no Python object per file, built from the sorted
    ``relative`` strings one at a time (a list of per-file bytes objects would double the peak)."""

    def __init__(self, root: str | Path, relative: Sequence[str]):
        self.root = str(root)
        offsets = np.empty(len(relative) + 1, np.int64)
        offsets[0] = 0
        buffer = bytearray()
        for i, r in enumerate(relative):
            buffer += os.fsencode(r)
            offsets[i + 1] = len(buffer)
        self.offsets = offsets
        self.buffer = np.frombuffer(bytes(buffer), np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def relative(self, i: int) -> str:
        return os.fsdecode(self.buffer[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def path(self, i: int) -> Path:
        return Path(self.root, self.relative(i))

    def digest(self) -> str:
        return hashlib.sha256(self.root.encode() + b"\0" + self.buffer.tobytes()).hexdigest()


class _FirstParts:
    """The relative paths split at their first "/", one at a time (what folder_labels reads)."""

    def __init__(self, relative: Sequence[str]):
        self.relative = relative

    def __iter__(self):
        return (r.split("/", 1) for r in self.relative)


def index_folder(root: str | Path, *, class_labels: bool, log: Callable[[str], None],
                 stream_above: int | None = None, image_bytes: int = 0):
    """``(PathIndex, labels int64 [N] or None, class names or None)`` of the images below ``root``,
    in the order and with the labels of :func:`~ddpm.data.folder.load_folder`; nothing is decoded.

    With ``stream_above``, a folder whose N * ``image_bytes`` is no more than that is not indexed
    (None; nothing logged): it is read into memory instead."""
    root, relative = listed_folder(root, list_relative)
    if stream_above is not None and len(relative) * image_bytes <= stream_above:
        return None
    labels, names = folder_labels(_FirstParts(relative), root, log) if class_labels else (None, None)
    return PathIndex(root, relative), labels, names


def _signature(path: Path) -> int:
    """The file's size and modification time as one 64-bit number (a changed file gets a new one)."""
    st = os.stat(path)
    return (st.st_mtime_ns * 1_000_003 ^ st.st_size) & 0xFFFF_FFFF_FFFF_FFFF


class ResizedCache:
    """Decoded images [C, H, W] as rows of one file, written and read with pwrite/pread (no
    memory map: pages read once do not stay in the process's resident memory)."""

    MAGIC = 0x43504444  # "DDPC"
    META = struct.Struct("<IIQ")  # magic, crc32 of the row, the source file's signature

    def __init__(self, directory: str | Path, num: int, shape: tuple[int, int, int]):
        self.directory, self.num, self.shape = Path(directory), num, shape
        self.row = int(np.prod(shape))
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, size in (("images.u8", num * self.row), ("rows.meta", num * self.META.size)):
            with open(self.directory / name, "ab") as fh:  # grown sparse, never shrunk
                if fh.tell() < size:
                    fh.truncate(size)
        self._fds: tuple[int, int] | None = None
        self._pid = -1

    def __getstate__(self) -> dict:  # descriptors are per process
        return {**self.__dict__, "_fds": None, "_pid": -1}

    def _open(self) -> tuple[int, int]:
        if self._pid != os.getpid():  # a worker made by fork opens its own descriptors
            self._fds = tuple(os.open(self.directory / n, os.O_RDWR) for n in ("images.u8", "rows.meta"))
            self._pid = os.getpid()
        return self._fds

    def read(self, i: int, signature: int) -> np.ndarray | None:
        images, meta = self._open()
        magic, crc, sig = self.META.unpack(os.pread(meta, self.META.size, i * self.META.size))
        if magic != self.MAGIC or sig != signature:
            return None
        row = os.pread(images, self.row, i * self.row)
        if len(row) != self.row or zlib.crc32(row) != crc:
            return None
        return np.frombuffer(row, np.uint8).reshape(self.shape)

    def write(self, i: int, image: np.ndarray, signature: int) -> None:
        images, meta = self._open()
        data = np.ascontiguousarray(image, np.uint8).tobytes()
        os.pwrite(images, data, i * self.row)
        os.pwrite(meta, self.META.pack(self.MAGIC, zlib.crc32(data), signature), i * self.META.size)


class FolderStream(Dataset):
    """The images below a folder, decoded on demand: ``stream[i] -> (uint8 [C, H, W], label, notes, j)``,
    where ``j`` is ``i`` or, when file ``i`` cannot be read, the index of the image that replaced it.

    Has the attributes the trainer reads from an in-memory :class:`~ddpm.data.base.ImageDataset`
    (``name``, ``labels``, ``class_names``, ``num_classes``, ``image_shape``, ``len``); ``labels``
    is -1 in the items of an unlabelled set.
    """

    def __init__(self, index: PathIndex, labels: np.ndarray | None, class_names: list[str] | None,
                 size: tuple[int, int], channels: int, name: str, cache: ResizedCache | None = None):
        self.index, self.size, self.channels, self.name, self.cache = index, size, channels, name, cache
        self.labels = torch.from_numpy(labels) if labels is not None else None
        self.class_names = class_names
        self._bad: set[int] = set()  # found unreadable in this process: skipped without a retry

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.labels is not None and self.class_names else None

    @property
    def decoded_bytes(self) -> int:
        """What the whole set would take decoded in memory."""
        return len(self) * int(np.prod(self.image_shape))

    def __len__(self) -> int:
        return len(self.index)

    def _load(self, i: int, notes: list[Note]) -> np.ndarray:
        path = self.index.path(i)
        if self.cache is None:
            return load_image(path, self.size, self.channels)
        signature = _signature(path)
        image = self.cache.read(i, signature)
        if image is None:
            image = load_image(path, self.size, self.channels)
            try:
                self.cache.write(i, image, signature)
            except OSError as err:  # a full disk slows the run down; it must not stop it
                notes.append(("cache", "write", f"cannot write the resized-image cache in {self.cache.directory} "
                                                f"({err.strerror or err}); images are decoded again each epoch"))
        return image

    @property
    def files(self) -> list[str]:
        """The images' paths relative to the folder, in index order (what a caption file names)."""
        return [self.index.relative(i) for i in range(len(self))]

    def subset(self, keep: torch.Tensor) -> "FolderStream":
        """The images where ``keep`` (bool [N]) is true (a text-conditional run drops those without
        a caption); a resized-image cache moves to the subset's own rows."""
        kept = torch.nonzero(keep).flatten().tolist()
        index = PathIndex(self.index.root, [self.index.relative(i) for i in kept])
        labels = self.labels[keep].numpy() if self.labels is not None else None
        cache = None
        if self.cache is not None:
            cache = ResizedCache(self.cache.directory.parent / _cache_key(index, self.channels, self.size), len(index),
                                 self.image_shape)
        return FolderStream(index, labels, self.class_names, self.size, self.channels, self.name, cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, tuple[Note, ...], int]:
        notes: list[Note] = []
        n = len(self)
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                image = self._load(j, notes)
            except Exception as err:  # noqa: BLE001 - PIL raises many types on bad files; skip and report each
                self._bad.add(j)
                notes.append(("unreadable", str(self.index.path(j)), f"{type(err).__name__}: {err}"))
                continue
            label = int(self.labels[j]) if self.labels is not None else -1
            return torch.from_numpy(np.array(image, np.uint8)), label, tuple(notes), j  # a writable copy
        raise DataError(f"none of the {n} image files in {self.index.root} can be read")


def collate(items: list[tuple[torch.Tensor, int, tuple[Note, ...], int]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[Note], torch.Tensor]:
    """A DataLoader batch: uint8 images [B, C, H, W], labels [B], every item's notes, and the
    indices [B] of the images the batch holds."""
    return (torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.int64),
            [note for it in items for note in it[2]], torch.tensor([it[3] for it in items], dtype=torch.int64))


def _cache_key(index: PathIndex, channels: int, size: tuple[int, int]) -> str:
    """The resized-image cache's folder name for these files at this size."""
    return hashlib.sha256(f"{index.digest()}|{channels}x{size[0]}x{size[1]}".encode()).hexdigest()[:20]


def open_folder_stream(root: str | Path, size: tuple[int, int], channels: int, *, class_labels: bool,
                       cache_resized: bool = False, cache_dir: str | Path | None = None,
                       log: Callable[[str], None] = print, stream_above: int | None = None) -> FolderStream | None:
    """Index the folder ``root`` for streaming (and open its resized-image cache if asked).

    With ``stream_above`` (bytes), a folder whose images would take no more than that decoded is
    left alone: None, with nothing logged and no cache made, for the caller to read it into memory."""
    root = Path(root).expanduser()
    found = index_folder(root, class_labels=class_labels, log=log, stream_above=stream_above,
                         image_bytes=channels * size[0] * size[1])
    if found is None:
        return None
    index, labels, names = found
    cache = None
    if cache_resized:
        base = Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/torch-ddpm").expanduser()
        cache = ResizedCache(base / "resized" / _cache_key(index, channels, size), len(index), (channels, *size))
        log(f"resized images are cached in {cache.directory}")
    log(f"streaming {len(index)} images from {root}")
    return FolderStream(index, labels, names, size, channels, f"folder:{root}", cache)


__all__ = ["STREAM_ABOVE_BYTES", "FolderStream", "PathIndex", "ResizedCache", "collate", "index_folder",
           "open_folder_stream"]
