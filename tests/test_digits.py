import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm.data
from ddpm.data import get_dataset
from ddpm.data.digits import DIGITS_FILE

# The first row of scikit-learn's digits.csv.gz (a "0"), pixel values 0..16.
FIRST_DIGIT = [
    [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0],
]


def test_packaged_file_holds_the_1797_digits():
    with np.load(DIGITS_FILE) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 16
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 1797 and len(counts) == 10 and counts.min() >= 174 and counts.max() <= 183
    assert images[0].tolist() == FIRST_DIGIT and labels[0] == 0
    license_text = (Path(ddpm.data.__file__).parent / "DIGITS_LICENSE.txt").read_text()
    assert "CC BY 4.0" in license_text and "10.24432/C50P49" in license_text and "optdigits" in license_text


def test_values_are_scaled_to_0_255_with_rounding():
    ds = get_dataset("digits")
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 8, 8)
    expected = [[round(v * 255 / 16) for v in row] for row in FIRST_DIGIT]  # index 0 is in train
    assert ds.images[0, 0].tolist() == expected
    allowed = {round(v * 255 / 16) for v in range(17)}
    assert set(ds.images.unique().tolist()) <= allowed and {0, 255} <= set(ds.images.unique().tolist())
    assert ds.name == "digits" and ds.class_names == [str(d) for d in range(10)] and ds.num_classes == 10


def test_split_is_fixed_disjoint_and_complete():
    train, test = get_dataset("digits"), get_dataset("digits", split="test")
    assert len(test) == 299 and len(train) == 1498  # index % 6 == 5 is test
    with np.load(DIGITS_FILE) as f:
        raw, labels = f["images"], f["labels"]
    scaled = torch.from_numpy(np.rint(raw.astype(np.float64) * 255 / 16).astype(np.uint8))[:, None]
    is_test = np.arange(1797) % 6 == 5
    assert torch.equal(test.images, scaled[is_test]) and torch.equal(train.images, scaled[~is_test])
    assert test.labels.tolist() == labels[is_test].tolist() and train.labels.tolist() == labels[~is_test].tolist()
    assert train.labels.dtype == torch.int64
    for split in (train, test):
        assert set(split.labels.tolist()) == set(range(10))


def test_loading_needs_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the digits loader opened a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert len(get_dataset("digits", download=True)) == 1498


def test_loading_is_fast():
    best = min(_timed(lambda: get_dataset("digits")) for _ in range(3))
    assert best < 0.1


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_resize_channels_and_no_labels():
    plain = get_dataset("digits", split="test")
    big = get_dataset("digits", split="test", image_size=16, channels=3, class_labels=False)
    assert big.images.shape == (299, 3, 16, 16) and big.labels is None and big.class_names is None
    assert big.num_classes is None
    first = Image.fromarray(plain.images[0, 0].numpy(), "L").resize((16, 16), Image.Resampling.BICUBIC)
    for c in range(3):
        assert big.images[0, c].tolist() == np.asarray(first).tolist()


@pytest.mark.parametrize("split", ["train", "test"])
def test_to_float_range(split):
    x = get_dataset("digits", split=split).to_float(torch.arange(10))
    assert x.min().item() == -1.0 and x.max().item() == 1.0
