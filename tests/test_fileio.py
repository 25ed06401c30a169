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
