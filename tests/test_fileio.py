import os

import pytest

from ddpm.fileio import atomic_write, atomic_write_text


def test_atomic_write_replaces_whole_files_only(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "first")
    assert path.read_text() == "first"

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]  # no temporary file left behind
    atomic_write_text(path, "second")
    assert path.read_text() == "second"


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_sha256_of_a_file_read_in_blocks_equals_hashlib_on_its_bytes(tmp_path):
    import hashlib

    from ddpm.fileio import sha256_of

    data = bytes(range(256)) * 9000  # 2.3 MB: three blocks, the last one partial
    (tmp_path / "w.bin").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_of(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()
    assert sha256_of(str(tmp_path / "empty")) == hashlib.sha256(b"").hexdigest()


def test_first_line_quotes_another_library_s_error_in_one_line():
    from ddpm.errors import first_line

    assert first_line(ValueError("bad block type\nTraceback detail")) == "bad block type"
    assert first_line(KeyError()) == "KeyError"  # no message: the type's name, not an IndexError
    assert first_line(OSError("  x" * 150), 200) == ("x  " * 100)[:200]
