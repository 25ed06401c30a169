"""The numeric arrays of a MATLAB level-5 MAT-file, and nothing else.

Oxford Flowers-102 ships its labels and splits as two small MAT-files (``imagelabels.mat``:
``labels`` [1, 8189]; ``setid.mat``: ``trnid``, ``valid``, ``tstid``). Reading them needs a few
dozen lines of the published format (MathWorks, "MAT-File Format", level 5), not scipy: a
35 MB dependency for two integer vectors, and a parser of every MATLAB type for a file
downloaded from the internet. This reader understands real numeric matrices, plain or inside
zlib-compressed elements, and skips every other element (cells, structs, text, sparse,
complex). Every size a file claims is checked against the bytes present before anything is
allocated, and decompression stops at :data:`MAX_BYTES`, so a damaged or hostile file is a
:class:`DataError`, never a crash or a memory blow-up.

Layout: a 128-byte header (text, subsystem offset, version 0x0100, endian mark "IM" or "MI"),
then data elements. An element is an 8-byte tag (type, byte count) and its data padded to 8
bytes, or, when the byte count fits in 16 bits, a "small" element with type and count in one
32-bit word and up to 4 data bytes. A matrix (type 14) holds the array flags (its class), the
dimensions, the name and the real part, stored column-major.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import DataError

MAX_BYTES = 64 << 20  # far above the Flowers files (a few kB); a larger claim is damage or a bomb
MI_MATRIX, MI_COMPRESSED = 14, 15
NUMERIC = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}  # mi* types
NUMERIC_CLASSES = set(range(6, 16))  # mxDOUBLE_CLASS .. mxUINT64_CLASS
COMPLEX_FLAG = 0x0800


class _Bad(Exception):
    """Why the file cannot be read (turned into one DataError naming the file)."""


def _elements(blob: bytes, e: str):
    """``(type, data)`` of each top-level element of ``blob`` (``e``: '<' or '>')."""
    pos = 0
    while pos < len(blob):
        if len(blob) - pos < 8:
            raise _Bad(f"{len(blob) - pos} stray bytes at the end")
        first, second = struct.unpack_from(e + "II", blob, pos)
        if first >> 16:  # a small element: count and type in one word, data in the next 4 bytes
            kind, size, start, end = first & 0xFFFF, first >> 16, pos + 4, pos + 8
            if size > 4:
                raise _Bad(f"a small element claims {size} bytes")
        else:
            kind, size, start = first, second, pos + 8
            end = start + size + ((-size) % 8 if kind != MI_COMPRESSED else 0)
        if start + size > len(blob):
            raise _Bad(f"an element claims {size} bytes where {len(blob) - start} remain")
        yield kind, blob[start : start + size]
        pos = min(end, len(blob)) if kind == MI_COMPRESSED else end


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_BYTES + 1)
    except zlib.error as err:
        raise _Bad(f"a compressed element is damaged ({err})") from None
    if len(out) > MAX_BYTES:
        raise _Bad(f"a compressed element inflates beyond {MAX_BYTES >> 20} MiB")
    return out


def _matrix(data: bytes, e: str) -> tuple[str, np.ndarray] | None:
    """(name, array) of a real numeric matrix element, or None for any other kind of variable."""
    parts = list(_elements(data, e))
    if len(parts) < 3:
        raise _Bad("a matrix lacks its flags, dimensions or name")
    (flag_type, flags), (dim_type, dims_raw), (name_type, name_raw) = parts[:3]
    if flag_type != 6 or len(flags) != 8 or dim_type != 5 or len(dims_raw) % 4 or name_type not in (1, 2):
        raise _Bad("a matrix has malformed flags, dimensions or name")
    word = struct.unpack(e + "I", flags[:4])[0]
    dims = struct.unpack(e + f"{len(dims_raw) // 4}i", dims_raw)
    name = name_raw.decode("ascii", "replace")
    if (word & 0xFF) not in NUMERIC_CLASSES or word & COMPLEX_FLAG or len(parts) < 4:
        return None
    if len(dims) < 2 or min(dims) < 0:
        raise _Bad(f"variable {name!r} has dimensions {list(dims)}")
    kind, real = parts[3]
    if kind not in NUMERIC:
        raise _Bad(f"variable {name!r} stores its values as element type {kind}")
    dtype = np.dtype(NUMERIC[kind]).newbyteorder(e)
    count = int(np.prod(dims, dtype=np.int64))
    if count * dtype.itemsize != len(real):
        raise _Bad(f"variable {name!r} claims {count} values of {dtype.itemsize} bytes in {len(real)} bytes")
    return name, np.frombuffer(real, dtype).reshape(dims, order="F")


def read_mat_arrays(blob: bytes, where: str) -> dict[str, np.ndarray]:
    """The real numeric variables of a level-5 MAT-file's bytes, by name (``where`` names the file
    in errors)."""
    try:
        if len(blob) < 128:
            raise _Bad(f"{len(blob)} bytes is shorter than the 128-byte header")
        mark = blob[126:128]
        if mark not in (b"IM", b"MI"):
            raise _Bad("no level-5 endian mark in the header (an older or newer MATLAB format?)")
        e = "<" if mark == b"IM" else ">"
        if struct.unpack(e + "H", blob[124:126])[0] != 0x0100:
            raise _Bad("the header's version is not 0x0100")
        out: dict[str, np.ndarray] = {}
        for kind, data in _elements(blob[128:], e):
            if kind == MI_COMPRESSED:
                inner = list(_elements(_inflate(data), e))
                if len(inner) != 1:
                    raise _Bad("a compressed element does not hold exactly one element")
                kind, data = inner[0]
            if kind == MI_MATRIX:
                found = _matrix(data, e)
                if found is not None:
                    out[found[0]] = found[1]
        return out
    except (_Bad, struct.error) as err:
        raise DataError(f"{where} is not a MATLAB level-5 MAT-file this reader understands: {err}.") from None


__all__ = ["MAX_BYTES", "read_mat_arrays"]
