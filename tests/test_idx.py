import gzip
import struct
import tracemalloc

import numpy as np
import pytest
from datafiles import idx_bytes

from ddpm.data.idx import read_idx
from ddpm.errors import DataError


def _write(tmp_path, blob, gz, name="f-idx3-ubyte"):
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_arrays_of_each_rank(tmp_path, gz):
    rng = np.random.default_rng(0)
    for shape in [(7,), (3, 5, 4), (2, 3, 4, 5)]:
        array = rng.integers(0, 256, shape, dtype=np.uint8)
        out = read_idx(_write(tmp_path, idx_bytes(array), gz))
        assert out.dtype == np.uint8 and out.shape == shape and np.array_equal(out, array)
        assert out.flags.writeable


def test_gzip_is_told_by_content_not_by_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "plain-name"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    assert np.array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True])
def test_header_errors(tmp_path, gz):
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    cases = {
        b"\x01\x00" + good[2:]: "is not an IDX file: it does not start with the IDX magic bytes 00 00.",
        b"\x00": "is not an IDX file",
        good[:2] + b"\x0d" + good[3:]: "stores float values (type code 0x0d); only unsigned bytes (0x08) are supported.",
        good[:2] + b"\x42" + good[3:]: "stores an unknown type values (type code 0x42)",
        good[:3] + b"\x00": "claims 0 dimensions in its IDX header; 1 to 4 are accepted.",
        good[:3] + b"\x09": "claims 9 dimensions",
        good[:9]: "is truncated inside its IDX header.",
    }
    for blob, message in cases.items():
        path = _write(tmp_path, blob, gz)
        with pytest.raises(DataError) as err:
            read_idx(path)
        assert str(err.value).startswith(str(path)) and message in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data_and_trailing_garbage(tmp_path, gz):
    blob = idx_bytes(np.ones((4, 5), np.uint8))
    path = _write(tmp_path, blob[:-3], gz)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(err.value) == f"{path} is truncated: its header claims 20 bytes of data (4x5) but only 17 are present."
    path = _write(tmp_path, blob + b"junk", gz)
    with pytest.raises(DataError) as err:
        read_idx(path)
    extra = "" if gz else "4 bytes of "
    assert str(err.value) == f"{path} has {extra}trailing data after the 20 bytes its header claims (4x5)."


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_sizes_are_refused_before_allocating(tmp_path, gz):
    huge = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 10) + b"\x00" * 100
    path = _write(tmp_path, huge, gz)
    with pytest.raises(DataError, match=r"claims dimensions 2147483648x2147483648x10 \(\d+ bytes\), more than"):
        read_idx(path)
    # 1000**3 bytes claimed (below the hard cap) but 100 present: must fail without reserving 1 GB.
    big = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1000, 1000, 1000) + b"\x00" * 100
    path = _write(tmp_path, big, gz)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="claims 1000000000 bytes of data .* only 100 are present"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_damaged_gzip_is_a_data_error(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8)
    packed = gzip.compress(idx_bytes(array))
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError) as err:
        read_idx(truncated)
    assert str(err.value).startswith(f"{truncated} is a damaged or truncated gzip file (")
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 40] = bytes(40)
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="is a damaged or truncated gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=f"cannot read {tmp_path / 'nope'}: No such file or directory."):
        read_idx(tmp_path / "nope")
