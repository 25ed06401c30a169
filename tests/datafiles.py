"""Helpers shared by the data tests: tiny IDX and CIFAR-10 files written independently of the
library's readers, and a local HTTP server that plays a download mirror."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """The IDX encoding of a uint8 array: 00 00 code ndim, big-endian uint32 dims, data."""
    array = np.ascontiguousarray(array)
    return bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 5, *, gz: bool = True, seed: int = 0) -> dict:
    """Write the four MNIST-style files (28x28 images, labels 0..9); returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[prefix] = (images, labels)
        for kind, arr, ndim in (("images", images, 3), ("labels", labels, 1)):
            name = f"{prefix}-{kind}-idx{ndim}-ubyte"
            blob = idx_bytes(arr)
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(blob) if gz else blob)
    return arrays


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


# ---- CIFAR-10 -------------------------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` records built pixel by pixel as the CIFAR-10 page describes; returns (bytes, images [n,32,32,3] HWC, labels)."""
    rng = np.random.default_rng(seed)
    hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    out = bytearray()
    for i in range(n):
        out.append(int(labels[i]))
        for channel in range(3):  # the red plane, then green, then blue, each row by row
            for row in range(32):
                out += hwc[i, row, :, channel].tobytes()
    return bytes(out), hwc, labels


def cifar_members(records_per_batch: int = 3) -> tuple[dict[str, bytes], dict]:
    """Member bytes of a tiny binary CIFAR-10 (names without folder) and the expected arrays per split."""
    members, parts = {}, {"train": [], "test": []}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for seed, name in enumerate(names):
        blob, hwc, labels = cifar_batch(records_per_batch, seed)
        members[name] = blob
        parts["test" if name.startswith("test") else "train"].append((hwc, labels))
    members["batches.meta.txt"] = ("\n".join(CIFAR_NAMES) + "\n\n").encode()
    expected = {s: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for s, v in parts.items()}
    return members, expected


def tar_gz(members: dict[str, bytes], links: dict[str, str | tuple[bytes, str]] | None = None) -> bytes:
    """A .tar.gz with the given regular files (full member names) and special members: name ->
    a symbolic link's target, or (tarfile member type, link name) for hard links, devices, pipes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = (tarfile.SYMTYPE, target) if isinstance(target, str) else target
            tar.addfile(info)
    return buf.getvalue()


# ---- a local mirror -------------------------------------------------------------------------


class Mirror:
    """An HTTP server on 127.0.0.1 (random free port) in a thread.

    ``routes`` maps a path ("/a/file.gz") to a list of answers given in turn (the last one
    repeats): bytes (200 with that body), an int status code, or ("cut", bytes) for a response
    that promises more bytes than it sends. ``hits`` counts requests per path.
    """

    def __init__(self, routes: dict[str, list]):
        self.routes = routes
        self.hits: Counter = Counter()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                answers = mirror.routes.get(self.path, [404])
                answer = answers[min(mirror.hits[self.path], len(answers) - 1)]
                mirror.hits[self.path] += 1
                if isinstance(answer, int):
                    self.send_error(answer)
                    return
                cut = isinstance(answer, tuple)
                body = answer[1] if cut else answer
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) + (100 if cut else 0)))
                self.end_headers()
                self.wfile.write(body)
                if cut:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)  # fast shutdown

    def __enter__(self) -> "Mirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---- MATLAB level-5 MAT-files (Oxford Flowers-102's labels and splits) ----------------------

MAT_TYPES = {np.dtype("uint8"): 2, np.dtype("uint16"): 4, np.dtype("int32"): 5, np.dtype("float64"): 9}
MAT_CLASSES = {np.dtype("uint8"): 9, np.dtype("uint16"): 11, np.dtype("int32"): 12, np.dtype("float64"): 6}


def _mat_element(kind: int, data: bytes, small_ok: bool = True) -> bytes:
    """One data element as the MAT-file format page lays it out: a small element (count and type
    in one word) for up to 4 bytes, else an 8-byte tag and the data padded to a multiple of 8."""
    if small_ok and len(data) <= 4:
        return struct.pack("<HH", kind, len(data)) + data.ljust(4, b"\0")
    return struct.pack("<II", kind, len(data)) + data + b"\0" * (-len(data) % 8)


def mat_file(arrays: dict, *, compress: bool = True, stored_as: dict | None = None, extra: bytes = b"") -> bytes:
    """A little-endian level-5 MAT-file holding ``arrays`` (name -> 2-D numpy array), each a
    matrix element, zlib-compressed when ``compress``; ``stored_as`` gives a name a narrower
    storage type than its class (MATLAB stores a double vector of small integers as uint8)."""
    text = b"MATLAB 5.0 MAT-file, written by the torch-ddpm tests".ljust(116, b" ")
    out = text + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM" + extra
    for name, array in arrays.items():
        array = np.asarray(array)
        stored = np.asarray(array, (stored_as or {}).get(name, array.dtype))
        body = (_mat_element(6, struct.pack("<II", MAT_CLASSES[array.dtype], 0))
                + _mat_element(5, struct.pack(f"<{array.ndim}i", *array.shape))
                + _mat_element(1, name.encode())
                + _mat_element(MAT_TYPES[stored.dtype], stored.tobytes(order="F")))
        element = struct.pack("<II", 14, len(body)) + body
        out += struct.pack("<II", 15, len(zlib.compress(element))) + zlib.compress(element) if compress else element
    return out
