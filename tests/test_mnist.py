import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import Mirror, idx_bytes, md5, write_mnist
from PIL import Image

from ddpm.data import get_dataset
from ddpm.data.download import FileSpec
from ddpm.data.mnist import FASHION_MNIST, MNIST, load_idx_dataset
from ddpm.errors import DataError

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _noop(line):
    pass


@pytest.mark.parametrize("gz", [True, False])
def test_reads_both_splits(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = get_dataset("mnist", split=split, data_dir=tmp_path, log=_noop)
        images, labels = arrays[prefix]
        assert ds.images.shape == (len(images), 1, 28, 28) and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == torch.int64
        assert ds.class_names == [str(d) for d in range(10)] and ds.name == "mnist"


def test_fashion_names_and_conversions(tmp_path):
    arrays = write_mnist(tmp_path, n_train=4)
    ds = get_dataset("fashion-mnist", data_dir=tmp_path, image_size=32, channels=3, log=_noop)
    assert ds.class_names == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
    ]
    assert ds.name == "fashion-mnist" and ds.images.shape == (4, 3, 32, 32)
    first = Image.fromarray(arrays["train"][0][0], "L").resize((32, 32), Image.Resampling.BICUBIC)
    for c in range(3):
        assert np.array_equal(ds.images[0, c].numpy(), np.asarray(first))
    assert get_dataset("fashion-mnist", data_dir=tmp_path, class_labels=False, log=_noop).labels is None


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        get_dataset("mnist", data_dir=tmp_path / "nowhere")
    assert str(err.value) == (
        f"MNIST file train-images-idx3-ubyte[.gz] is missing: {tmp_path / 'nowhere'} does not exist; "
        "pass --download (download=True) to fetch it, or put the file there by hand."
    )
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        get_dataset("fashion-mnist", split="test", data_dir=tmp_path)
    assert str(err.value).startswith(f"Fashion-MNIST file t10k-labels-idx1-ubyte[.gz] is missing from {tmp_path}; pass --download")
    # Without data_dir the files are looked for in <cache_dir>/<name>.
    with pytest.raises(DataError, match=f"is missing: {tmp_path / 'cache' / 'mnist'} does not exist"):
        get_dataset("mnist", cache_dir=tmp_path / "cache")


def _put(path: Path, array: np.ndarray):
    path.write_bytes(gzip.compress(idx_bytes(array)))


def test_inconsistent_files(tmp_path):
    write_mnist(tmp_path, n_train=6)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    _put(labels, np.zeros(5, np.uint8))
    with pytest.raises(DataError) as err:
        get_dataset("mnist", data_dir=tmp_path)
    assert str(err.value) == f"{tmp_path / 'train-images-idx3-ubyte.gz'} holds 6 images but {labels} holds 5 labels."
    _put(labels, np.array([0, 1, 2, 3, 4, 10], np.uint8))
    with pytest.raises(DataError, match="holds label 10; MNIST labels are 0 to 9."):
        get_dataset("mnist", data_dir=tmp_path)
    _put(labels, np.zeros((6, 1), np.uint8))
    with pytest.raises(DataError, match=r"should hold labels \[N\] but has 2 dimensions"):
        get_dataset("mnist", data_dir=tmp_path)
    _put(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((6, 784), np.uint8))
    with pytest.raises(DataError, match=r"should hold images \[N, H, W\] but has 2 dimensions"):
        get_dataset("mnist", data_dir=tmp_path)


def test_download_fetches_the_missing_files_of_the_split(tmp_path):
    served = tmp_path / "served"
    arrays = write_mnist(served)
    blobs = {p.name: p.read_bytes() for p in served.iterdir()}
    source = dataclasses.replace(MNIST, files=tuple(FileSpec(n, md5(b)) for n, b in blobs.items()))
    target = tmp_path / "cache"
    target.mkdir()
    (target / "train-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["train"][1]))  # already there, plain
    with Mirror({f"/mnist/{n}": [b] for n, b in blobs.items()}) as mirror:
        images, labels = load_idx_dataset(
            source, "train", target, download=True, mirrors=[mirror.url + "/mnist/"], backoff=0, log=_noop
        )
        assert dict(mirror.hits) == {"/mnist/train-images-idx3-ubyte.gz": 1}
    assert sorted(p.name for p in target.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"]
    assert np.array_equal(images[:, 0], arrays["train"][0]) and np.array_equal(labels, arrays["train"][1])


def test_download_with_the_real_checksums_refuses_other_bytes(tmp_path):
    write_mnist(tmp_path / "served")
    blob = (tmp_path / "served" / "t10k-images-idx3-ubyte.gz").read_bytes()
    with Mirror({"/t10k-images-idx3-ubyte.gz": [blob]}) as mirror:
        with pytest.raises(DataError) as err:
            get_dataset("fashion-mnist", split="test", data_dir=tmp_path / "d", download=True, mirrors=[mirror.url], log=_noop)
    assert str(err.value) == (
        f"checksum mismatch for t10k-images-idx3-ubyte.gz from {mirror.url}/t10k-images-idx3-ubyte.gz: "
        f"expected {FASHION_MNIST.spec('t10k-images-idx3-ubyte').md5}, got {md5(blob)}."
    )
    assert list((tmp_path / "d").iterdir()) == []


def test_known_checksums():
    assert MNIST.spec("train-images-idx3-ubyte").md5 == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert FASHION_MNIST.spec("t10k-labels-idx1-ubyte").md5 == "bb300cfdad3c16e7a12a480ee83cd310"
    assert len(MNIST.mirrors) == 2 and len(FASHION_MNIST.mirrors) == 2


@pytest.mark.needs(not REAL_MNIST.is_dir(), f"the real MNIST files are not at {REAL_MNIST}")
def test_real_mnist_test_split():
    ds = get_dataset("mnist", split="test", data_dir=REAL_MNIST, log=_noop)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.labels.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    header = bytes([0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0, 0, 28, 0, 0, 0, 28])
    # md5 of the decompressed official file, from the folder's README
    assert hashlib.md5(header + ds.images.numpy().tobytes()).hexdigest() == "2646ac647ad5339dbf082846283269ea"
