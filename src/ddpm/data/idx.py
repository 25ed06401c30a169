"""A strict reader of the IDX format of the MNIST files, plain or gzip-compressed.

Layout (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number
of dimensions, then each dimension as a big-endian uint32, then the values in row-major order.
Every damage a download or a disk can cause becomes a one-sentence :class:`DataError` naming the
file, and the size the header claims is checked against the bytes really present before any
large buffer is allocated, so a corrupt header cannot make us reserve gigabytes.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
MAX_DIMS = 4  # MNIST uses 1 (labels) and 3 (images); more means a damaged header
MAX_BYTES = 1 << 32  # far above any real IDX file; a header claiming more is damaged
_CHUNK = 1 << 20


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip-compressed or not, told by its first bytes).

    Returns a writable uint8 array with the shape the header gives, e.g. [60000, 28, 28].
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            if not compressed:
                return _read(raw, path, os.fstat(raw.fileno()).st_size)
        with gzip.open(path, "rb") as stream:
            return _read(stream, path, None)  # type: ignore[arg-type]
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is a damaged or truncated gzip file ({err}).") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}.") from None


def _read(stream: BinaryIO, path: Path, file_size: int | None) -> np.ndarray:
    """Parse the header, check the claimed size, then read the values (``file_size``: plain files)."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise DataError(f"{path} is not an IDX file: it does not start with the IDX magic bytes 00 00.")
    code, ndim = magic[2], magic[3]
    if code != 0x08:
        what = TYPE_NAMES.get(code, "an unknown type")
        raise DataError(f"{path} stores {what} values (type code 0x{code:02x}); only unsigned bytes (0x08) are supported.")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{path} claims {ndim} dimensions in its IDX header; 1 to {MAX_DIMS} are accepted.")
    header = stream.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its IDX header.")
    dims = struct.unpack(f">{ndim}I", header)
    shape = "x".join(map(str, dims))
    expected = math.prod(dims)  # one byte per value
    if expected > MAX_BYTES:
        raise DataError(f"{path} claims dimensions {shape} ({expected} bytes), more than any real IDX file holds.")
    if math.prod(d for d in dims if d) > MAX_BYTES:  # e.g. 0x2**21x2**21x2**21: empty, too big a shape for numpy
        raise DataError(f"{path} claims dimensions {shape}, far larger than any real IDX file even though one is 0.")

    if file_size is not None:
        present = file_size - 4 - 4 * ndim  # known before reading anything
        _check_size(path, shape, expected, present, exact=True)
        data = np.empty(expected, np.uint8)
        data = data[: stream.readinto(data)]  # type: ignore[attr-defined]
    else:
        # A gzip stream does not tell its length: read at most one byte past the claim, so memory
        # grows only with data that is really there, and an extra byte proves trailing garbage.
        buf = bytearray()
        while len(buf) <= expected:
            chunk = stream.read(min(_CHUNK, expected + 1 - len(buf)))
            if not chunk:
                break
            buf += chunk
        _check_size(path, shape, expected, len(buf), exact=False)
        data = np.frombuffer(buf, np.uint8)
    if len(data) != expected:  # the file changed under us
        raise DataError(f"{path} is truncated: its header claims {expected} bytes of data ({shape}).")
    return data.reshape(dims)


def _check_size(path: Path, shape: str, expected: int, present: int, exact: bool) -> None:
    """``exact``: ``present`` is the true count (plain file), not a read stopped one byte past."""
    if present < expected:
        raise DataError(
            f"{path} is truncated: its header claims {expected} bytes of data ({shape}) but only {present} are present."
        )
    if present > expected:
        extra = f"{present - expected} bytes of " if exact else ""
        raise DataError(f"{path} has {extra}trailing data after the {expected} bytes its header claims ({shape}).")

