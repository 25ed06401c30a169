from pathlib import Path

import pytest
from datafiles import Mirror, md5, refused_url

import ddpm.data.download as download
from ddpm.data.download import FileSpec, cache_dir_for, download_file, md5_of
from ddpm.errors import ConfigError, DataError

BODY = b"some bytes of a data file\n" * 100
SPEC = FileSpec("file.gz", md5(BODY))


def _quiet(lines):
    return lines.append


def test_successful_download_writes_only_the_verified_file(tmp_path):
    lines = []
    with Mirror({"/m/file.gz": [BODY]}) as mirror:
        path = download_file(SPEC, [mirror.url + "/m/"], tmp_path / "new" / "dir", log=lines.append)
    assert path == tmp_path / "new" / "dir" / "file.gz" and path.read_bytes() == BODY
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.gz"]  # no temp file left
    assert md5_of(path) == SPEC.md5
    assert lines[0] == f"downloading {mirror.url}/m/file.gz" and "MD5 verified" in lines[-1]


def test_checksum_mismatch_is_an_error_after_trying_every_mirror(tmp_path):
    wrong = BODY[:-1] + b"?"
    with Mirror({"/a/file.gz": [wrong], "/b/file.gz": [wrong]}) as mirror:
        with pytest.raises(DataError) as err:
            download_file(SPEC, [mirror.url + "/a", mirror.url + "/b"], tmp_path, backoff=0, log=_quiet([]))
        assert mirror.hits == {"/a/file.gz": 1, "/b/file.gz": 1}  # a bad checksum is not retried
    assert str(err.value) == (
        f"checksum mismatch for file.gz from {mirror.url}/a/file.gz: expected {SPEC.md5}, got {md5(wrong)}, "
        "and no other mirror had a good copy."
    )
    assert list(tmp_path.iterdir()) == []  # the temp file was deleted, nothing under the final name


def test_a_bad_copy_on_the_first_mirror_falls_back_to_a_good_one(tmp_path):
    with Mirror({"/a/file.gz": [b"stale"], "/b/file.gz": [BODY]}) as mirror:
        path = download_file(SPEC, [mirror.url + "/a", mirror.url + "/b"], tmp_path, backoff=0, log=_quiet([]))
    assert path.read_bytes() == BODY


def test_404_and_refused_mirrors_fall_back_to_the_next(tmp_path):
    with Mirror({"/good/file.gz": [BODY]}) as mirror:
        mirrors = [refused_url(), mirror.url + "/missing/", mirror.url + "/good/"]
        path = download_file(SPEC, mirrors, tmp_path, tries=2, backoff=0, log=_quiet([]))
        assert mirror.hits == {"/missing/file.gz": 1, "/good/file.gz": 1}  # a 404 is not retried
    assert path.read_bytes() == BODY


def test_transient_failures_are_retried_with_backoff(tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    lines = []
    with Mirror({"/m/file.gz": [503, ("cut", BODY[:100]), BODY]}) as mirror:
        path = download_file(SPEC, [mirror.url + "/m"], tmp_path, tries=3, backoff=0.5, log=lines.append)
        assert mirror.hits["/m/file.gz"] == 3
    assert path.read_bytes() == BODY and sleeps == [0.5, 1.0]
    assert "(try 3 of 3)" in lines[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.gz"]


def test_every_mirror_failing_says_where_to_put_the_file(tmp_path):
    with Mirror({"/a/file.gz": [500]}) as mirror:
        with pytest.raises(DataError) as err:
            download_file(SPEC, [mirror.url + "/a/"], tmp_path, tries=2, backoff=0, log=_quiet([]))
        assert mirror.hits["/a/file.gz"] == 2
    assert str(err.value) == (
        f"could not download file.gz from any mirror ({mirror.url}/a/file.gz: HTTP 500 Internal Server Error); "
        f"download it by hand from {mirror.url}/a/file.gz and put it into {tmp_path}."
    )
    assert list(tmp_path.iterdir()) == []


def test_no_network_at_all(tmp_path):
    mirrors = [refused_url(), refused_url()]
    with pytest.raises(DataError, match=r"could not download file.gz from any mirror \(.*refused.*put it into"):
        download_file(SPEC, mirrors, tmp_path, tries=1, log=_quiet([]))


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="no mirror to download file.gz from"):
        download_file(SPEC, [], tmp_path)
    with pytest.raises(ConfigError, match="tries must be at least 1, got 0."):
        download_file(SPEC, ["http://127.0.0.1:1/"], tmp_path, tries=0)


def test_cache_dir():
    assert cache_dir_for("mnist") == Path.home() / ".cache" / "torch-ddpm" / "mnist"
    assert cache_dir_for("cifar10", "/tmp/c") == Path("/tmp/c/cifar10")
