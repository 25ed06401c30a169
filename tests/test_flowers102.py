"""Oxford Flowers-102 from its three files, fetched from a local mirror, read from the archive
or an extracted folder; labels and splits through the MAT-file reader."""

import io

import numpy as np
import pytest
from datafiles import Mirror, mat_file, md5, tar_gz
from PIL import Image

from ddpm.data import FLOWER_NAMES, get_dataset
from ddpm.data.download import FileSpec
from ddpm.data.flowers102 import CLASS_NAMES, load_flowers102
from ddpm.data.folder import load_image
from ddpm.errors import DataError

N = 9
LABELS = np.array([[3, 1, 102, 7, 7, 50, 2, 9, 1]], np.float64)  # labels 1..102 of images 1..9
SETID = {"trnid": np.array([[4, 1]], np.uint16), "valid": np.array([[2, 9]], np.uint16),
         "tstid": np.array([[8, 3, 5, 6, 7]], np.uint16)}


def _jpeg(i):
    rng = np.random.default_rng(i)
    size = (40 + 3 * i, 30 + 5 * i)  # every photograph has its own size
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


JPEGS = {f"jpg/image_{i:05d}.jpg": _jpeg(i) for i in range(1, N + 1)}
BLOBS = {"102flowers.tgz": tar_gz(JPEGS), "imagelabels.mat": mat_file({"labels": LABELS}, stored_as={"labels": np.uint8}),
         "setid.mat": mat_file(SETID)}
SPECS = tuple(FileSpec(name, md5(blob)) for name, blob in BLOBS.items())


def _expected(ids, size=(16, 16)):
    images = np.stack([load_image(io.BytesIO(JPEGS[f"jpg/image_{i:05d}.jpg"]), size, 3) for i in ids])
    return images, LABELS[0, np.array(ids) - 1].astype(np.int64) - 1


def test_download_then_both_splits_from_the_archive(tmp_path):
    lines = []
    with Mirror({f"/f/{name}": [blob] for name, blob in BLOBS.items()}) as mirror:
        images, labels, names = load_flowers102("train", tmp_path, image_size=(16, 16), download=True,
                                                mirrors=[mirror.url + "/f/"], files=SPECS, log=lines.append)
        assert mirror.hits == {f"/f/{name}": 1 for name in BLOBS}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BLOBS)  # MD5-checked, nothing extracted
    want_images, want_labels = _expected([1, 3, 4, 5, 6, 7, 8])  # trnid and tstid together, in image order
    assert np.array_equal(images, want_images) and labels.tolist() == want_labels.tolist()
    assert names == list(CLASS_NAMES) and names[101] == "blackberry lily"
    assert f"reading 7 Flowers-102 images (train) from {tmp_path / '102flowers.tgz'}" in lines
    test = get_dataset("flowers102", split="test", data_dir=tmp_path, image_size=16, log=lambda m: None)
    want_images, want_labels = _expected([2, 9])
    assert np.array_equal(test.images.numpy(), want_images) and test.labels.tolist() == want_labels.tolist()
    assert test.class_names[want_labels[0]] == "pink primrose" and test.num_classes == 102 and test.name == "flowers102"


def test_an_extracted_folder_gives_the_same_images_and_defaults_are_64_rgb(tmp_path):
    for name in ("imagelabels.mat", "setid.mat"):
        (tmp_path / name).write_bytes(BLOBS[name])
    (tmp_path / "jpg").mkdir()
    for member, blob in JPEGS.items():
        (tmp_path / member).write_bytes(blob)
    images, labels, _ = load_flowers102("test", tmp_path, files=SPECS, log=lambda m: None)
    want_images, want_labels = _expected([2, 9], (64, 64))
    assert images.shape == (2, 3, 64, 64) and np.array_equal(images, want_images)
    gray = get_dataset("flowers102", split="test", data_dir=tmp_path, channels=1, image_size=(8, 12), log=lambda m: None)
    assert gray.images.shape == (2, 1, 8, 12)
    (tmp_path / "jpg" / "image_00009.jpg").unlink()
    with pytest.raises(DataError, match=r"lacks image 9 of the test split \(1 missing\)"):
        load_flowers102("test", tmp_path, files=SPECS, log=lambda m: None)


def test_missing_damaged_and_inconsistent_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="Flowers-102 is missing 102flowers.tgz, imagelabels.mat, setid.mat in .*; pass --download"):
        load_flowers102("train", tmp_path, files=SPECS, log=lambda m: None)
    for name, blob in BLOBS.items():
        (tmp_path / name).write_bytes(blob)
    (tmp_path / "setid.mat").write_bytes(mat_file({**SETID, "valid": np.array([[2, 10]], np.uint16)}))
    with pytest.raises(DataError, match="setid.mat names image 10, but .*imagelabels.mat labels images 1 to 9"):
        load_flowers102("test", tmp_path, files=SPECS, log=lambda m: None)
    (tmp_path / "setid.mat").write_bytes(mat_file({"trnid": SETID["trnid"]}))
    with pytest.raises(DataError, match="has no variable 'tstid'"):
        load_flowers102("train", tmp_path, files=SPECS, log=lambda m: None)
    (tmp_path / "setid.mat").write_bytes(BLOBS["setid.mat"])
    (tmp_path / "imagelabels.mat").write_bytes(mat_file({"labels": LABELS * 2}))
    with pytest.raises(DataError, match="holds labels from 2 to 204; Flowers-102 has 1 to 102"):
        load_flowers102("train", tmp_path, files=SPECS, log=lambda m: None)
    (tmp_path / "imagelabels.mat").write_bytes(BLOBS["imagelabels.mat"])
    (tmp_path / "102flowers.tgz").write_bytes(tar_gz({**JPEGS, "jpg/image_00004.jpg": b"not a jpeg"}))
    with pytest.raises(DataError, match="Flowers-102 image 4 in .*102flowers.tgz cannot be read"):
        load_flowers102("train", tmp_path, files=SPECS, log=lambda m: None)
    (tmp_path / "102flowers.tgz").write_bytes(tar_gz(JPEGS, links={"jpg/evil.jpg": "/etc/passwd"}))
    with pytest.raises(DataError, match="member 'jpg/evil.jpg' is a symbolic link"):
        load_flowers102("train", tmp_path, files=SPECS, log=lambda m: None)


def test_the_102_class_names_are_exposed_for_captions():
    assert FLOWER_NAMES is CLASS_NAMES and len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 102
    assert CLASS_NAMES[0] == "pink primrose" and CLASS_NAMES[53] == "sunflower"
    assert all(name == name.strip().lower() and "?" not in name for name in CLASS_NAMES)
