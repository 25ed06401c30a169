import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import DATASET_NAMES, ImageDataset, get_dataset
from ddpm.data.base import finish, fit_image, parse_image_size, resize_all, to_grayscale
from ddpm.errors import ConfigError, DataError


def _dataset(n=4, labels=True, names=("a", "b", "c")):
    images = torch.arange(n * 2 * 2, dtype=torch.uint8).reshape(n, 1, 2, 2)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = 0, 255
    lab = torch.tensor([0, 2, 1, 2][:n]) if labels else None
    return ImageDataset(images, lab, list(names) if names else None, "toy")


def test_to_float_maps_0_255_onto_minus_one_one():
    ds = _dataset()
    x = ds.to_float([0, 3])
    assert x.dtype == torch.float32 and x.shape == (2, 1, 2, 2)
    assert x[0, 0, 0, 0].item() == -1.0 and x[0, 0, 0, 1].item() == 1.0
    expected = ds.images[[0, 3]].double() / 127.5 - 1
    assert torch.allclose(x.double(), expected, atol=1e-6)
    assert ds.to_float(torch.tensor([1])).shape == (1, 1, 2, 2)
    assert ds.to_float(slice(1, 3)).shape == (2, 1, 2, 2)


def test_length_and_number_of_classes():
    assert len(_dataset()) == 4
    assert _dataset().num_classes == 3
    assert _dataset(labels=False).num_classes is None
    assert _dataset(names=None).num_classes == 3  # from the largest label


def test_dataset_checks_its_tensors():
    with pytest.raises(DataError, match="uint8 tensor"):
        ImageDataset(torch.zeros(2, 1, 2, 2), None, None, "x")
    with pytest.raises(DataError, match=r"int64 tensor \[2\]"):
        ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), None, "x")
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"], "x")


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        get_dataset("foo")
    assert str(err.value) == "unknown data set 'foo'; choose one of mnist10k, digits, mnist, fashion-mnist, cifar10, flowers102, folder:PATH."
    assert DATASET_NAMES == ("mnist10k", "digits", "mnist", "fashion-mnist", "cifar10", "flowers102", "folder:PATH")
    with pytest.raises(ConfigError, match="unknown data set 'folder:'"):
        get_dataset("folder:")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "val"}, "unknown split 'val'; choose 'train' or 'test'."),
        ({"channels": 2}, "channels must be 1 (grayscale) or 3 (RGB), got 2."),
        ({"image_size": 0}, "image_size must hold positive integers, got 0."),
        ({"image_size": (8, 8, 8)}, "image_size must be an integer or a pair (height, width), got (8, 8, 8)."),
        ({"image_size": "8"}, "image_size must be an integer or a pair (height, width), got '8'."),
    ],
)
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        get_dataset("digits", **kwargs)
    assert str(err.value) == message


def test_parse_image_size():
    assert parse_image_size(None) is None
    assert parse_image_size(16) == (16, 16)
    assert parse_image_size((12, 20)) == (12, 20)
    assert parse_image_size([12, 20]) == (12, 20)


def test_fit_image_is_resize_short_side_then_center_crop():
    rng = np.random.default_rng(0)
    wide = Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8), "RGB")  # h=20, w=40
    # The two-step route: shrink the short side to 10 with LANCZOS (40x20 -> 20x10), crop the middle.
    expected = wide.resize((20, 10), Image.Resampling.LANCZOS).crop((5, 0, 15, 10))
    assert np.array_equal(np.asarray(fit_image(wide, (10, 10))), np.asarray(expected))
    # Enlarging uses bicubic; a same-aspect target is a plain resize.
    square = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L")
    up = square.resize((24, 24), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(fit_image(square, (24, 24))), np.asarray(up))
    # A (H, W) target of another aspect keeps the middle rows of a square source.
    assert fit_image(square, (4, 8)).size == (8, 4)
    assert np.array_equal(np.asarray(fit_image(square, (4, 8))), np.asarray(square.crop((0, 2, 8, 6))))
    assert fit_image(square, (8, 8)) is square


def test_to_grayscale_matches_pil_and_the_luma_formula():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    gray = to_grayscale(rgb)
    assert gray.shape == (5, 1, 4, 6)
    for i in range(5):
        one = np.asarray(Image.fromarray(rgb[i].transpose(1, 2, 0), "RGB").convert("L"))
        assert np.array_equal(gray[i, 0], one)
    f = rgb.astype(float)
    luma = (299 * f[:, 0] + 587 * f[:, 1] + 114 * f[:, 2]) / 1000
    assert np.abs(gray[:, 0] - luma).max() <= 0.51


def test_resize_all_and_finish_convert_each_image():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    small = resize_all(rgb, (4, 4))
    for i in range(3):
        pic = Image.fromarray(rgb[i].transpose(1, 2, 0), "RGB").resize((4, 4), Image.Resampling.LANCZOS)
        assert np.array_equal(small[i], np.asarray(pic).transpose(2, 0, 1))
    labels = np.array([0, 1, 1], np.uint8)
    ds = finish(rgb[:, :1], labels, ["x", "y"], "t", image_size=None, channels=3, class_labels=True)
    assert ds.images.shape == (3, 3, 8, 8) and torch.equal(ds.images[:, 0], ds.images[:, 2])
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 1, 1] and ds.class_names == ["x", "y"]
    ds = finish(rgb, labels, ["x", "y"], "t", image_size=(4, 4), channels=1, class_labels=False)
    assert ds.images.shape == (3, 1, 4, 4) and ds.labels is None and ds.class_names is None
