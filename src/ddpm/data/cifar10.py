"""CIFAR-10 from its binary version (``cifar-10-binary.tar.gz``), never the pickled one.

The folder may hold the extracted ``cifar-10-batches-bin/`` (or be that folder), or only the
archive; with ``download=True`` a missing archive is fetched and MD5 checked. Train is
``data_batch_1.bin`` .. ``data_batch_5.bin`` (50,000 images), test is ``test_batch.bin`` (10,000).
Each record is 3,073 bytes: the label, then the 1,024 red, 1,024 green and 1,024 blue values of a
32x32 image, row-major, i.e. already the [C, H, W] layout.

The archive is never extracted: the needed members are read straight into memory in one pass,
and an archive with any member that extraction could abuse (absolute path, ``..``, a link, a
device) is refused as a whole, so no archive can write anything anywhere.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np

from ..errors import DataError
from .base import check_split
from .download import FileSpec, download_file

ARCHIVE = FileSpec("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
FOLDER = "cifar-10-batches-bin"
BATCHES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
META = "batches.meta.txt"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 1 + 3 * 32 * 32
MAX_RECORDS = 60_000  # the real files hold 10,000; a claim far beyond is damage or a decompression bomb
_MAX_META = 1 << 16


def load_cifar10(
    split: str,
    folder: str | Path,
    *,
    download: bool = False,
    mirrors: Sequence[str] | None = None,
    archive: FileSpec = ARCHIVE,
    tries: int = 3,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 images [N, 3, 32, 32], uint8 labels [N] and the class names of one split.

    ``archive`` names the archive file and its MD5 (replaceable for tests); ``mirrors`` replaces
    :data:`MIRRORS`; ``tries`` and ``backoff`` go to the downloader.
    """
    check_split(split)
    folder = Path(folder).expanduser()
    wanted = BATCHES[split]
    for candidate in (folder / FOLDER, folder):
        if all((candidate / name).is_file() for name in wanted):
            blobs = {name: _read_bin(candidate / name) for name in wanted}
            meta = candidate / META
            names = _parse_meta(meta.read_bytes(), str(meta)) if meta.is_file() else list(CLASS_NAMES)
            return _assemble(blobs, wanted, names)
    path = folder / archive.name
    if not path.is_file():
        if not download:
            where = f" from {folder}" if folder.is_dir() else f": {folder} does not exist"
            raise DataError(
                f"CIFAR-10 ({archive.name} or {FOLDER}/) is missing{where}; "
                f"pass --download (download=True) to fetch it, or put the file there by hand."
            )
        path = download_file(archive, mirrors or MIRRORS, folder, tries=tries, backoff=backoff, log=log)
    members = read_archive(path, {f"{FOLDER}/{name}" for name in (*wanted, META)})
    missing = [name for name in wanted if f"{FOLDER}/{name}" not in members]
    if missing:
        raise DataError(f"{path} has no member {FOLDER}/{missing[0]}; is it the binary version of CIFAR-10?")
    blobs = {name: _check_records(members[f"{FOLDER}/{name}"], f"{path}:{FOLDER}/{name}") for name in wanted}
    meta = members.get(f"{FOLDER}/{META}")
    names = _parse_meta(meta, f"{path}:{FOLDER}/{META}") if meta is not None else list(CLASS_NAMES)
    return _assemble(blobs, wanted, names)


def read_archive(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The bytes of the ``wanted`` members of a tar archive (gzip, bzip2, xz or none), read in one pass.

    Every member is checked first: regular files and folders with relative, ``..``-free names
    only; anything else makes the whole archive a :class:`DataError`.
    """
    found: dict[str, bytes] = {}
    try:
        # "r|": a forward-only stream, each member read once. The decompression is the standard
        # modules' own (tarfile's built-in one fails on some damaged headers with a TypeError).
        with _decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                name = _check_member(member, path)
                if name not in wanted or not member.isfile():
                    continue
                if name.endswith(".bin"):
                    _check_size(member.size, f"{path}:{name}")
                elif member.size > _MAX_META:
                    raise DataError(f"{path}:{name} is {member.size} bytes, too large for a list of class names.")
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has one
                found[name] = stream.read()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as err:
        raise DataError(f"{path} is not a readable tar archive or is damaged ({err}).") from None
    return found


def _decompressed(path: Path) -> BinaryIO:
    """``path`` opened for reading, through gzip, bzip2 or xz as its first bytes say."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _check_member(member: tarfile.TarInfo, path: Path) -> str:
    """The member's normalised name, or a DataError if extracting it could escape or link."""
    name = member.name
    kind = (
        "a symbolic link" if member.issym() else "a hard link" if member.islnk()
        else "a device or pipe" if not (member.isfile() or member.isdir()) else None
    )
    if kind:
        raise DataError(f"refusing {path}: member {name!r} is {kind}; only regular files and folders are allowed.")
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise DataError(f"refusing {path}: member {name!r} points outside the archive's own folder.")
    return "/".join(p for p in parts if p not in ("", "."))


def _check_size(size: int, where: str) -> None:
    if size == 0 or size % RECORD:
        raise DataError(f"{where} is {size} bytes, which is not a positive multiple of the {RECORD}-byte CIFAR-10 record.")
    if size > MAX_RECORDS * RECORD:
        raise DataError(
            f"{where} is {size} bytes ({size // RECORD} records); a CIFAR-10 batch file holds 10,000 "
            f"and at most {MAX_RECORDS:,} are accepted."
        )


def _read_bin(path: Path) -> bytes:
    _check_size(path.stat().st_size, str(path))  # before reading: a wrong file may be huge
    return _check_records(path.read_bytes(), str(path))


def _check_records(blob: bytes, where: str) -> bytes:
    _check_size(len(blob), where)
    labels = np.frombuffer(blob, np.uint8)[::RECORD]
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{where} holds label {labels.max()}; CIFAR-10 labels are 0 to 9.")
    return blob


def _parse_meta(blob: bytes, where: str) -> list[str]:
    names = [line.strip() for line in blob.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{where} lists {len(names)} class names; CIFAR-10 has {len(CLASS_NAMES)}.")
    return names


def _assemble(blobs: dict[str, bytes], order: Sequence[str], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    records = np.concatenate([np.frombuffer(blobs[name], np.uint8).reshape(-1, RECORD) for name in order])
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].copy(), names
