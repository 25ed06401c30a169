"""Property-based tests of the data readers on random and damaged bytes (hypothesis).

Whatever the bytes, a reader returns data consistent with what the file says, or raises the
project's own DataError: no other exception escapes, nothing hangs (an alarm interrupts any
example that runs for seconds), and a header claiming more data than the file holds is refused
before anything of the claimed size is allocated (tracemalloc). The examples are derandomized,
so a run is reproducible and CI cannot flake; `--hypothesis-seed` explores further by hand.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import shutil
import signal
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from datafiles import cifar_batch, idx_bytes, tar_gz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ddpm.data.cifar10 import ARCHIVE, FOLDER, RECORD, load_cifar10
from ddpm.data.folder import load_folder
from ddpm.data.idx import MAX_BYTES, read_idx
from ddpm.errors import DataError, DDPMError

FUZZ = settings(max_examples=60, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_S = 10  # far above any example's real time (milliseconds); only a hang reaches it
# What a refused claim may cost: the readers' fixed buffers (a 1 MiB read chunk and the like),
# nothing that grows with the size a header claims (up to gigabytes here).
SMALL = 4 * 2**20


class Hang(Exception):
    pass


@contextlib.contextmanager
def no_hang(seconds: float = HANG_S):
    """Interrupt the block with Hang if it runs longer than ``seconds`` (SIGALRM, main thread)."""

    def alarm(signum, frame):
        raise Hang(f"a reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def peak_allocation():
    """Yields a list that receives the peak traced allocation (bytes) of the block."""
    out = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def attempt(read):
    """``read()``'s result, or None when it raised one of the project's errors (anything else escapes)."""
    with no_hang():
        try:
            return read()
        except DDPMError:
            return None


@st.composite
def mutated(draw, valid: bytes) -> bytes:
    """``valid`` after a few random edits: flipped or overwritten bytes, cuts, insertions, appends."""
    blob = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "append", "delete"]))
        at = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "truncate":
            del blob[at:]
        elif op == "insert":
            blob[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "append":
            blob += draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del blob[at : at + draw(st.integers(1, 16))]
    return bytes(blob)


_ROOT: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _scratch_root(tmp_path_factory):
    _ROOT.append(tmp_path_factory.mktemp("fuzz"))
    yield
    _ROOT.clear()


def _scratch(name: str) -> Path:
    """An empty folder, emptied again for each example (pytest's tmp_path is per test, and
    hypothesis runs a test many times)."""
    path = _ROOT[0] / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


# ---- IDX --------------------------------------------------------------------------------------

VALID_IDX = [idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 5, 4)), idx_bytes(np.arange(10, dtype=np.uint8))]
COMPRESSIONS = {"plain": lambda b: b, "gzip": lambda b: gzip.compress(b, mtime=0)}


def _check_idx(blob: bytes, path: Path) -> None:
    """If read_idx accepts the file, what it returns is exactly what the header and data say."""
    out = attempt(lambda: read_idx(path))
    if out is not None:
        ndim = blob[3]
        dims = struct.unpack(f">{ndim}I", blob[4 : 4 + 4 * ndim])
        assert blob[:3] == b"\x00\x00\x08" and out.shape == dims and out.dtype == np.uint8
        assert out.tobytes() == blob[4 + 4 * ndim :]


@FUZZ
@given(blob=st.binary(max_size=200) | st.builds(lambda b: b"\x00\x00\x08" + b, st.binary(max_size=100)))
def test_idx_random_bytes(blob):
    folder = _scratch("idx")
    for name, compress in COMPRESSIONS.items():
        (folder / name).write_bytes(compress(blob))
        _check_idx(blob, folder / name)


@FUZZ
@given(data=st.data(), which=st.sampled_from(range(len(VALID_IDX))))
def test_idx_mutations(data, which):
    blob = data.draw(mutated(VALID_IDX[which]))
    folder = _scratch("idx")
    for name, compress in COMPRESSIONS.items():
        (folder / name).write_bytes(compress(blob))
        _check_idx(blob, folder / name)
    # the compressed stream itself damaged
    packed = data.draw(mutated(gzip.compress(VALID_IDX[which], mtime=0)))
    (folder / "damaged.gz").write_bytes(packed)
    out = attempt(lambda: read_idx(folder / "damaged.gz"))
    if out is not None:  # a damaged gzip may still decompress (e.g. a flipped mtime byte)
        assert out.tobytes() == gzip.decompress(packed)[4 + 4 * out.ndim :]


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4), present=st.integers(0, 300),
       compression=st.sampled_from(sorted(COMPRESSIONS)))
def test_idx_header_claiming_more_than_the_file_holds_allocates_nothing_large(dims, present, compression):
    claimed = math.prod(dims)
    blob = bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + bytes(present)
    path = _scratch("idx") / "claim"
    path.write_bytes(COMPRESSIONS[compression](blob))
    with peak_allocation() as peak:
        out = attempt(lambda: read_idx(path))
    shapeable = math.prod(d for d in dims if d) <= MAX_BYTES  # else even an empty array is refused
    assert (out is not None) == (claimed == present and shapeable)
    assert peak[0] < SMALL, f"claimed {claimed} bytes, {present} present: peak {peak[0]} bytes"


def test_idx_two_to_the_31_items_on_a_tiny_file_fails_fast_without_allocating():
    folder = _scratch("idx")
    for name, compress in COMPRESSIONS.items():
        path = folder / name
        path.write_bytes(compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2**31) + bytes(16)))
        with peak_allocation() as peak, pytest.raises(DataError) as err:
            read_idx(path)
        assert "claims 2147483648 bytes of data (2147483648) but only 16 are present" in str(err.value)
        assert peak[0] < SMALL


# ---- CIFAR-10 binary ------------------------------------------------------------------------------

VALID_BIN = cifar_batch(2, seed=3)[0]


def _check_cifar(result, records: bytes | None) -> None:
    if result is None:
        return
    images, labels, names = result
    assert images.shape == (len(labels), 3, 32, 32) and labels.max() < 10 and len(names) == 10
    if records is not None:  # the data were read from this blob
        table = np.frombuffer(records, np.uint8).reshape(-1, RECORD)
        assert np.array_equal(images.reshape(len(labels), -1), table[:, 1:]) and np.array_equal(labels, table[:, 0])


def _load_bin(blob: bytes):
    folder = _scratch("cifar") / FOLDER
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(blob)
    return attempt(lambda: load_cifar10("test", folder.parent, log=lambda line: None))


@FUZZ
@given(blob=st.binary(max_size=4 * RECORD) | st.builds(lambda k, b: bytes(k * RECORD - len(b)) + b if k * RECORD >= len(b) else b,
                                                        st.integers(1, 3), st.binary(max_size=64)))
def test_cifar_bin_random_bytes(blob):
    _check_cifar(_load_bin(blob), blob)


@FUZZ
@given(data=st.data())
def test_cifar_bin_mutations(data):
    blob = data.draw(mutated(VALID_BIN))
    _check_cifar(_load_bin(blob), blob)


def _archive(blob: bytes):
    folder = _scratch("cifar")
    (folder / ARCHIVE.name).write_bytes(blob)
    result = attempt(lambda: load_cifar10("test", folder, log=lambda line: None))
    assert sorted(p.name for p in folder.rglob("*")) == [ARCHIVE.name]  # nothing is ever extracted
    return result


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


VALID_TAR = _tar({f"{FOLDER}/test_batch.bin": VALID_BIN})
MAGICS = [b"", b"\x1f\x8b\x08", b"BZh91AY&SY", b"\xfd7zXZ\x00", b"\x5d\x00\x00\x80"]  # gzip, bzip2, xz, lzma


@FUZZ
@given(magic=st.sampled_from(MAGICS), rest=st.binary(max_size=1500))
def test_cifar_archive_random_bytes(magic, rest):
    _check_cifar(_archive(magic + rest), None)


@FUZZ
@given(data=st.data(), layer=st.sampled_from(["tar", "tar inside gzip", "gzip"]))
def test_cifar_archive_mutations(data, layer):
    if layer == "tar":
        blob = data.draw(mutated(VALID_TAR))
    elif layer == "tar inside gzip":
        blob = gzip.compress(data.draw(mutated(VALID_TAR)), mtime=0)
    else:
        blob = data.draw(mutated(gzip.compress(VALID_TAR, mtime=0)))
    _check_cifar(_archive(blob), None)


def _claim_size(tar: bytes, size: int) -> bytes:
    """The tar with its first member's header claiming ``size`` bytes (checksum fixed up)."""
    header = bytearray(tar[:512])
    if size < 8**11:
        header[124:136] = b"%011o\x00" % size
    else:  # GNU base-256 for sizes beyond 8 GiB
        header[124:136] = b"\x80" + size.to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + tar[512:]


@FUZZ
@given(records=st.integers(1, 2**40), gz=st.booleans())
def test_cifar_archive_member_claiming_more_than_the_file_holds_allocates_nothing_large(records, gz):
    blob = _claim_size(VALID_TAR, records * RECORD)
    if gz:
        blob = gzip.compress(blob, mtime=0)
    with peak_allocation() as peak:
        result = _archive(blob)
    # claiming fewer records than present reads those (tar then meets junk where the next
    # header should be, which it takes for the end); claiming more is refused
    assert (result is not None) == (records <= 2)
    assert peak[0] < SMALL, f"{records} records claimed: peak {peak[0]} bytes"


def test_cifar_decompression_bomb_is_refused_from_its_header():
    # 70,000 records of zeros compress to a few hundred KB; the member header alone gives it away
    blob = tar_gz({f"{FOLDER}/test_batch.bin": bytes(70_000 * RECORD)})
    assert len(blob) < 2**20
    folder = _scratch("cifar")
    (folder / ARCHIVE.name).write_bytes(blob)
    with peak_allocation() as peak, pytest.raises(DataError) as err:
        load_cifar10("test", folder, log=lambda line: None)
    assert str(err.value) == (
        f"{folder / ARCHIVE.name}:{FOLDER}/test_batch.bin is {70_000 * RECORD} bytes (70000 records); "
        "a CIFAR-10 batch file holds 10,000 and at most 60,000 are accepted."
    )
    assert peak[0] < SMALL


# ---- image folders ---------------------------------------------------------------------------------


def _image_bytes(fmt: str, mode: str = "RGB", size=(12, 10), **save) -> bytes:
    rng = np.random.default_rng(0)
    bands = len(Image.new(mode, (1, 1)).getbands())
    pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, "L" if bands == 1 else ("RGBA" if bands == 4 else "RGB"))
    if mode not in image.mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


VALID_IMAGES = {
    "png": _image_bytes("PNG"),
    "palette.png": _image_bytes("PNG", "P", transparency=3),
    "rgba.png": _image_bytes("PNG", "RGBA"),
    "jpg": _image_bytes("JPEG", quality=90),
    "cmyk.jpg": _image_bytes("JPEG", "CMYK"),
    "gif": _image_bytes("GIF", "P"),
    "bmp": _image_bytes("BMP"),
    "webp": _image_bytes("WEBP", lossless=True),
}


def _check_folder(blob: bytes, suffix: str) -> None:
    """One file in a folder: it loads as one 8x8 RGB image, or is skipped with a log line and the
    folder, holding nothing readable, is a DataError."""
    folder = _scratch("folder")
    (folder / f"x.{suffix}").write_bytes(blob)
    lines: list[str] = []
    result = attempt(lambda: load_folder(folder, "train", (8, 8), 3, class_labels=False, log=lines.append))
    if result is None:
        assert any(line.startswith(f"skipping {folder / f'x.{suffix}'}: ") for line in lines), lines
    else:
        images, labels, names = result
        assert images.shape == (1, 3, 8, 8) and images.dtype == np.uint8 and labels is None


@FUZZ
@given(blob=st.binary(max_size=600) | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF"]).flatmap(
    lambda magic: st.binary(max_size=400).map(lambda rest: magic + rest)), suffix=st.sampled_from(["png", "jpg"]))
def test_image_folder_random_bytes(blob, suffix):
    _check_folder(blob, suffix)


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(VALID_IMAGES)))
def test_image_folder_mutations(data, kind):
    blob = data.draw(mutated(VALID_IMAGES[kind]))
    _check_folder(blob, kind.rsplit(".", 1)[-1])


def _png_with_size(width: int, height: int) -> bytes:
    """A valid small PNG whose IHDR claims ``width`` x ``height`` (CRC recomputed, so only the size lies)."""
    blob = bytearray(VALID_IMAGES["png"])
    assert blob[12:16] == b"IHDR"
    blob[16:24] = struct.pack(">II", width, height)
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    return bytes(blob)


@FUZZ
@given(size=st.sampled_from([(10_000, 10_000), (9_000, 12_000), (2**16, 2**16), (2**20, 2**16), (2**31 - 1, 2**31 - 1)]))
def test_image_claiming_huge_dimensions_is_refused_as_a_bomb(size):
    """Up to twice PIL's MAX_IMAGE_PIXELS (89 M) PIL only warns, and would allocate the image."""
    width, height = size
    folder = _scratch("folder")
    (folder / "x.png").write_bytes(_png_with_size(width, height))
    lines: list[str] = []
    with pytest.raises(DataError, match="holds no readable image"):
        load_folder(folder, "train", (8, 8), 3, log=lines.append)
    assert "DecompressionBomb" in lines[1], lines


def test_files_of_other_formats_are_never_decoded(tmp_path):
    """A TGA, TIFF or PPM named .png is refused: only the decoders of the accepted formats run."""
    for fmt, name in (("TGA", "a.png"), ("TIFF", "b.jpg"), ("PPM", "c.png"), ("PCX", "d.gif")):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name, fmt)
        assert Image.open(tmp_path / name).format == fmt  # PIL itself would open it
    (tmp_path / "e.png").write_bytes(_image_bytes("PNG"))
    lines: list[str] = []
    images, _, _ = load_folder(tmp_path, "train", (8, 8), 3, log=lines.append)
    assert len(images) == 1
    assert [line.split(":")[0] for line in lines[1:5]] == [f"skipping {tmp_path / n}" for n in ("a.png", "b.jpg", "c.png", "d.gif")]
    assert all("cannot identify image file" in line for line in lines[1:5]), lines
