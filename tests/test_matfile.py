"""The MAT-file reader against files written from the format's description (tests/datafiles.py)."""

import struct
import zlib

import numpy as np
import pytest
from datafiles import _mat_element, mat_file
from hypothesis import given, settings
from hypothesis import strategies as st

import ddpm.data.matfile as matfile
from ddpm.data.matfile import read_mat_arrays
from ddpm.errors import DataError


@pytest.mark.parametrize("compress", [True, False])
def test_numeric_arrays_come_back_with_their_values_and_shape(compress):
    labels = np.array([[1, 77, 102, 5]], np.float64)
    grid = np.arange(6, dtype=np.uint16).reshape(2, 3)  # column-major on disk: 0 3 1 4 2 5
    blob = mat_file({"labels": labels, "grid": grid, "ids": np.array([[8189]], np.int32)}, compress=compress,
                    stored_as={"labels": np.uint8})
    out = read_mat_arrays(blob, "x.mat")
    assert set(out) == {"labels", "grid", "ids"}
    assert out["labels"].tolist() == [[1, 77, 102, 5]] and out["labels"].dtype == np.uint8
    assert out["grid"].tolist() == grid.tolist() and out["ids"].tolist() == [[8189]]


def test_other_variables_are_skipped_and_big_endian_files_read():
    # a char matrix (class 4) between two numeric ones
    body = (_mat_element(6, struct.pack("<II", 4, 0)) + _mat_element(5, struct.pack("<2i", 1, 2))
            + _mat_element(1, b"txt") + _mat_element(4, "hi".encode("utf-16-le")))
    char = struct.pack("<II", 14, len(body)) + body
    blob = mat_file({"a": np.ones((1, 2))}, compress=False) + char + mat_file({"b": np.zeros((1, 1))})[128:]
    assert sorted(read_mat_arrays(blob, "x.mat")) == ["a", "b"]
    be = bytearray(b" " * 116 + b"\0" * 8 + struct.pack(">H", 0x0100) + b"MI")
    payload = (struct.pack(">II", 6, 8) + struct.pack(">II", 9, 0) + struct.pack(">II", 5, 8) + struct.pack(">2i", 1, 2)
               + struct.pack(">HH", 1, 1) + b"v\0\0\0" + struct.pack(">HH", 2, 2) + b"\x07\x09\0\0")
    be += struct.pack(">II", 14, len(payload)) + payload
    assert read_mat_arrays(bytes(be), "be.mat")["v"].tolist() == [[7, 9]]


def test_damaged_files_are_one_clear_error(monkeypatch):
    good = mat_file({"labels": np.arange(40, dtype=np.float64).reshape(1, 40)}, compress=False)
    cases = {
        b"short": "shorter than the 128-byte header",
        good[:126] + b"XX" + good[128:]: "no level-5 endian mark",
        good[:-9]: "an element claims",
        good[:124] + struct.pack("<H", 0x0200) + good[126:]: "version is not 0x0100",
        good[:128] + struct.pack("<II", 15, 5) + b"12345": "a compressed element is damaged",
    }
    for blob, reason in cases.items():
        with pytest.raises(DataError, match=f"^bad.mat is not a MATLAB level-5 MAT-file this reader understands: .*{reason}"):
            read_mat_arrays(blob, "bad.mat")
    wrong_count = bytearray(good)
    wrong_count[128 + 8 + 16 + 8 + 4] = 9  # the dimensions now claim 1 x 9 values in a 40-value buffer
    with pytest.raises(DataError, match="claims 9 values of 8 bytes in 320 bytes"):
        read_mat_arrays(bytes(wrong_count), "bad.mat")
    monkeypatch.setattr(matfile, "MAX_BYTES", 100)
    bomb = good[:128] + struct.pack("<II", 15, len(zlib.compress(b"\0" * 10_000))) + zlib.compress(b"\0" * 10_000)
    with pytest.raises(DataError, match="inflates beyond"):
        read_mat_arrays(bomb, "bomb.mat")


GOOD = mat_file({"trnid": np.arange(1, 30, dtype=np.uint16).reshape(1, -1), "labels": np.ones((1, 9))})


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_files_fail_only_with_data_errors(data):
    blob = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        out = read_mat_arrays(bytes(blob[:cut]), "fuzz.mat")
    except DataError:
        return
    assert all(isinstance(v, np.ndarray) for v in out.values())
