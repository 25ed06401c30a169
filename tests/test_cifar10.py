import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import CIFAR_NAMES, Mirror, cifar_batch, cifar_members, md5, tar_gz

from ddpm.data import get_dataset
from ddpm.data.cifar10 import ARCHIVE, load_cifar10
from ddpm.data.download import FileSpec
from ddpm.errors import DataError

FOLDER = "cifar-10-batches-bin"


def _noop(line):
    pass


def _extracted(root, members):
    folder = root / FOLDER
    folder.mkdir(parents=True)
    for name, blob in members.items():
        (folder / name).write_bytes(blob)
    return folder


def _check(ds, expected, split):
    hwc, labels = expected[split]
    assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == torch.uint8
    # channel order: plane 0 is red, 1 green, 2 blue, each row-major
    assert np.array_equal(ds.images.numpy().transpose(0, 2, 3, 1), hwc)
    assert ds.labels.tolist() == labels.tolist() and ds.class_names == CIFAR_NAMES and ds.name == "cifar10"


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_the_extracted_folder(tmp_path, split):
    members, expected = cifar_members()
    folder = _extracted(tmp_path, members)
    _check(get_dataset("cifar10", split=split, data_dir=tmp_path), expected, split)
    # data_dir may also be the batches folder itself
    _check(get_dataset("cifar10", split=split, data_dir=folder), expected, split)


@pytest.mark.parametrize("split", ["train", "test"])
def test_reads_straight_from_the_archive_without_extracting(tmp_path, split):
    members, expected = cifar_members(records_per_batch=2)
    (tmp_path / ARCHIVE.name).write_bytes(tar_gz({f"{FOLDER}/{n}": b for n, b in members.items()}))
    _check(get_dataset("cifar10", split=split, data_dir=tmp_path), expected, split)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE.name]


def test_class_names_come_from_the_meta_file_or_the_defaults(tmp_path):
    members, _ = cifar_members(1)
    members["batches.meta.txt"] = "\n".join(f"c{i}" for i in range(10)).encode()
    folder = _extracted(tmp_path, members)
    assert get_dataset("cifar10", split="test", data_dir=tmp_path).class_names == [f"c{i}" for i in range(10)]
    (folder / "batches.meta.txt").unlink()
    assert get_dataset("cifar10", split="test", data_dir=tmp_path).class_names == CIFAR_NAMES
    (folder / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="batches.meta.txt lists 2 class names; CIFAR-10 has 10."):
        get_dataset("cifar10", split="test", data_dir=tmp_path)


def test_conversions(tmp_path):
    members, expected = cifar_members(1)
    _extracted(tmp_path, members)
    ds = get_dataset("cifar10", split="test", data_dir=tmp_path, channels=1, image_size=16, class_labels=False)
    assert ds.images.shape == (1, 1, 16, 16) and ds.labels is None


@pytest.mark.parametrize("size", [0, 3072, 3074, 2 * 3073 + 1])
def test_a_bin_file_of_the_wrong_size_is_refused(tmp_path, size):
    members, _ = cifar_members(1)
    members["test_batch.bin"] = bytes(size)
    _extracted(tmp_path, members)
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", split="test", data_dir=tmp_path)
    path = tmp_path / FOLDER / "test_batch.bin"
    assert str(err.value) == f"{path} is {size} bytes, which is not a positive multiple of the 3073-byte CIFAR-10 record."
    (tmp_path / FOLDER / "test_batch.bin").unlink()
    (tmp_path / ARCHIVE.name).write_bytes(tar_gz({f"{FOLDER}/{n}": b for n, b in members.items()}))
    with pytest.raises(DataError, match=f"test_batch.bin is {size} bytes, which is not a positive multiple"):
        get_dataset("cifar10", split="test", data_dir=tmp_path)


def test_bad_labels_and_missing_members(tmp_path):
    members, _ = cifar_members(1)
    blob = bytearray(members["test_batch.bin"])
    blob[0] = 10
    members["test_batch.bin"] = bytes(blob)
    _extracted(tmp_path / "a", members)
    with pytest.raises(DataError, match="test_batch.bin holds label 10; CIFAR-10 labels are 0 to 9."):
        get_dataset("cifar10", split="test", data_dir=tmp_path / "a")
    del members["data_batch_3.bin"]
    archive = tmp_path / ARCHIVE.name
    archive.write_bytes(tar_gz({f"{FOLDER}/{n}": b for n, b in members.items()}))
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", data_dir=tmp_path)
    assert str(err.value) == f"{archive} has no member {FOLDER}/data_batch_3.bin; is it the binary version of CIFAR-10?"
    archive.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(DataError, match="is not a readable tar archive or is damaged"):
        get_dataset("cifar10", data_dir=tmp_path)
    good = tar_gz({f"{FOLDER}/{n}": b for n, b in cifar_members(1)[0].items()})
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="is not a readable tar archive or is damaged"):
        get_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize(
    "evil, links, reason",
    [
        ("/tmp/evil", {}, "points outside the archive's own folder"),
        ("../evil", {}, "points outside the archive's own folder"),
        (f"{FOLDER}/../../evil", {}, "points outside the archive's own folder"),
        (None, {f"{FOLDER}/data_batch_1.bin": "/etc/passwd"}, "is a symbolic link"),
        (None, {"evil": "../outside"}, "is a symbolic link"),
        (None, {f"{FOLDER}/data_batch_1.bin": (tarfile.LNKTYPE, f"{FOLDER}/test_batch.bin")}, "is a hard link"),
        (None, {"evil": (tarfile.LNKTYPE, "/etc/passwd")}, "is a hard link"),
        (None, {"evil": (tarfile.CHRTYPE, "")}, "is a device or pipe"),
        (None, {"evil": (tarfile.BLKTYPE, "")}, "is a device or pipe"),
        (None, {"evil": (tarfile.FIFOTYPE, "")}, "is a device or pipe"),
    ],
)
def test_malicious_members_are_refused_and_nothing_is_written(tmp_path, evil, links, reason):
    members, _ = cifar_members(1)
    files = {f"{FOLDER}/{n}": b for n, b in members.items()}
    if links:
        files.pop(next(iter(links)), None)
    if evil:
        files[evil] = b"gotcha"
    data_dir = tmp_path / "data" / "deep"
    data_dir.mkdir(parents=True)
    archive = data_dir / ARCHIVE.name
    archive.write_bytes(tar_gz(files, links))
    before = sorted(p for p in tmp_path.rglob("*"))
    outside = [tmp_path / "evil", tmp_path / "data" / "evil", tmp_path / "outside", Path("/tmp/evil")]
    existed = [p.exists() for p in outside]
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", data_dir=data_dir)
    name = evil or next(iter(links))
    assert str(err.value).startswith(f"refusing {archive}: member {name!r} {reason}")
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert [p.exists() for p in outside] == existed


def test_missing_data_and_download(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("cifar10", data_dir=tmp_path)
    assert str(err.value) == (
        f"CIFAR-10 (cifar-10-binary.tar.gz or {FOLDER}/) is missing from {tmp_path}; "
        "pass --download (download=True) to fetch it, or put the file there by hand."
    )
    members, expected = cifar_members(1)
    blob = tar_gz({f"{FOLDER}/{n}": b for n, b in members.items()})
    with Mirror({"/kriz/cifar-10-binary.tar.gz": [503, blob]}) as mirror:
        images, labels, names = load_cifar10(
            "test", tmp_path / "dl", download=True, mirrors=[mirror.url + "/kriz/"],
            archive=FileSpec(ARCHIVE.name, md5(blob)), backoff=0, log=_noop,
        )
        assert mirror.hits["/kriz/cifar-10-binary.tar.gz"] == 2
        # the real checksum does not match the fake archive: refused, nothing kept
        with pytest.raises(DataError, match=f"checksum mismatch for cifar-10-binary.tar.gz from .*expected {ARCHIVE.md5}"):
            get_dataset("cifar10", data_dir=tmp_path / "other", download=True, mirrors=[mirror.url + "/kriz"], log=_noop)
    assert np.array_equal(images.transpose(0, 2, 3, 1), expected["test"][0]) and names == CIFAR_NAMES
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [ARCHIVE.name]
    assert list((tmp_path / "other").iterdir()) == []


def test_record_layout_helper_is_independent():
    # cifar_batch writes the planes by hand; check one value against the documented offsets
    blob, hwc, labels = cifar_batch(2, seed=7)
    record = 1 + 3072
    assert blob[record] == labels[1]
    row, col = 5, 9
    assert blob[record + 1 + 1024 + row * 32 + col] == hwc[1, row, col, 1]  # green plane
