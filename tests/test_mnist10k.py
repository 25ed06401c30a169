"""The embedded 28x28 set: its size, balance, licence file, and (where real MNIST is at hand)
pixels equal to the MNIST images it names."""

from pathlib import Path

import numpy as np
import pytest

from ddpm.data import get_dataset
from ddpm.data.mnist10k import MNIST10K_FILE, load_mnist10k

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"  # ../shared beside the project


def test_splits_are_balanced_28x28_digits_and_the_file_stays_small():
    for split, per_class in (("train", 1000), ("test", 100)):
        images, labels = load_mnist10k(split)
        assert images.shape == (10 * per_class, 1, 28, 28) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [per_class] * 10
        assert 25 < images.mean() < 45 and images.max() == 255  # MNIST's ink: mostly black background
    ds = get_dataset("mnist10k", split="test", log=lambda m: None)
    assert ds.class_names == [str(d) for d in range(10)] and ds.name == "mnist10k" and len(ds) == 1000
    assert MNIST10K_FILE.stat().st_size < 2_000_000
    licence = (MNIST10K_FILE.parent / "MNIST10K_LICENSE.txt").read_text()
    assert "CC BY-SA 3.0" in licence and "yann.lecun.com/exdb/mnist" in licence and "default_rng(0)" in licence


@pytest.mark.needs(not REAL_MNIST.is_dir(), f"the real MNIST files are not at {REAL_MNIST}")
def test_the_images_are_the_mnist_images_they_name():
    real = REAL_MNIST
    with np.load(MNIST10K_FILE) as archive:
        index = {s: archive[f"{s}_index"].astype(np.int64) for s in ("train", "test")}
    for split in ("train", "test"):
        full = get_dataset("mnist", split=split, data_dir=real, log=lambda m: None)
        images, labels = load_mnist10k(split)
        assert np.array_equal(full.images.numpy()[index[split]], images)
        assert np.array_equal(full.labels.numpy()[index[split]], labels)
