import warnings

import numpy as np
import pytest
from PIL import Image

from ddpm.data import get_dataset
from ddpm.errors import ConfigError, DataError

RED = (200, 10, 10)


def _solid(path, color, size=(8, 8), mode="RGB", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save)
    return path


def _load(root, size=8, **kwargs):
    lines = []
    ds = get_dataset(f"folder:{root}", image_size=size, log=lines.append, **kwargs)
    return ds, lines


def _only_pixel(ds, i=0):
    """The colour of image i, asserting it is uniform."""
    img = ds.images[i].numpy().reshape(ds.images.shape[1], -1)
    assert (img == img[:, :1]).all(), img
    return tuple(img[:, 0].tolist())


def test_reads_recursively_in_sorted_order_with_class_labels(tmp_path):
    _solid(tmp_path / "dog" / "b.png", (0, 0, 1))
    _solid(tmp_path / "dog" / "sub" / "a.png", (0, 0, 2))
    _solid(tmp_path / "cat" / "9.png", (0, 0, 3))
    _solid(tmp_path / "cat" / "10.png", (0, 0, 4))
    _solid(tmp_path / "cat" / ".hidden.png", (0, 0, 5))
    _solid(tmp_path / ".cache" / "x.png", (0, 0, 6))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds, lines = _load(tmp_path)
    # sorted by relative path: cat/10, cat/9, dog/b, dog/sub/a
    assert [_only_pixel(ds, i)[2] for i in range(len(ds))] == [4, 3, 1, 2]
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 1, 1] and ds.num_classes == 2
    assert ds.images.shape == (4, 3, 8, 8) and ds.name == f"folder:{tmp_path}"
    assert lines == [f"reading 4 images from {tmp_path}"]
    test, lines = _load(tmp_path, split="test")  # no held-out part: the same images
    assert (test.images == ds.images).all() and "no held-out split" in lines[0]
    assert _load(tmp_path, class_labels=False)[0].labels is None


def test_images_outside_class_folders_mean_no_labels(tmp_path):
    _solid(tmp_path / "a" / "1.png", RED)
    _solid(tmp_path / "loose.png", RED)
    ds, lines = _load(tmp_path)
    assert ds.labels is None and ds.class_names is None and len(ds) == 2
    assert lines[-1] == f"1 image directly in {tmp_path}, not in a class sub-folder, so the data set has no class labels"
    flat = tmp_path / "flat"
    _solid(flat / "x.png", RED)
    ds, lines = _load(flat)
    assert ds.labels is None and len(lines) == 1  # nothing to warn about


def test_resize_center_crop_and_grayscale(tmp_path):
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, :10] = (0, 0, 255)
    wide[:, 10:20] = RED
    wide[:, 20:] = (0, 255, 0)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    ds, _ = _load(tmp_path, size=10)
    assert _only_pixel(ds) == RED  # the middle third survives the crop
    ds, _ = _load(tmp_path, size=(5, 15))
    assert ds.images.shape == (1, 3, 5, 15)
    gray, _ = _load(tmp_path, size=10, channels=1)
    assert gray.images.shape == (1, 1, 10, 10)
    assert _only_pixel(gray) == (round((200 * 299 + 10 * 587 + 10 * 114) / 1000),)


def test_image_modes(tmp_path):
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    pal.save(tmp_path / "01_palette.png")
    pal.save(tmp_path / "02_palette_transparent.png", transparency=1)
    _solid(tmp_path / "03_la.png", (50, 0), mode="LA")
    _solid(tmp_path / "04_rgba_half.png", (255, 0, 0, 128), mode="RGBA")
    Image.fromarray(np.full((8, 8), 51000, np.uint16)).save(tmp_path / "05_sixteen_bit.png")
    _solid(tmp_path / "06_cmyk.jpg", (0, 255, 255, 0), mode="CMYK", quality=100)
    _solid(tmp_path / "07_lossless.webp", RED, lossless=True)
    _solid(tmp_path / "08.bmp", RED)
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, (0, 0, 200))]
    frames[0].save(tmp_path / "09_anim.gif", save_all=True, append_images=frames[1:])
    _solid(tmp_path / "10_bilevel.png", 1, mode="1")
    assert Image.open(tmp_path / "05_sixteen_bit.png").mode.startswith("I")
    ds, lines = _load(tmp_path)
    assert len(ds) == 10 and not any("skip" in line for line in lines)
    assert _only_pixel(ds, 0) == (30, 60, 90)
    assert _only_pixel(ds, 1) == (255, 255, 255)  # transparent -> white page
    assert _only_pixel(ds, 2) == (255, 255, 255)
    r, g, b = _only_pixel(ds, 3)
    assert r == 255 and abs(g - 127) <= 1 and g == b  # half red over white
    assert _only_pixel(ds, 4) == (198,) * 3  # round(51000 * 255 / 65535)
    r, g, b = ds.images[5].float().mean(dim=(1, 2)).tolist()
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    assert _only_pixel(ds, 6) == RED and _only_pixel(ds, 7) == RED
    assert _only_pixel(ds, 8) == RED  # the first GIF frame
    assert _only_pixel(ds, 9) == (255, 255, 255)
    la_gray, _ = _load(tmp_path, channels=1)
    assert _only_pixel(la_gray, 2) == (255,) and _only_pixel(la_gray, 4) == (198,)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20), np.uint8)
    pixels[:, 10:] = 255  # left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.png", exif=exif)
    ds, _ = _load(tmp_path, size=(20, 10), channels=1)
    upright = ds.images[0, 0].numpy()
    assert (upright[:10] == 0).all() and (upright[10:] == 255).all()  # left went to the top


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    _solid(tmp_path / "good.png", RED)
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    blob = (_solid(tmp_path / "tmp.png", RED, size=(64, 64))).read_bytes()
    (tmp_path / "tmp.png").unlink()
    (tmp_path / "truncated.png").write_bytes(blob[: len(blob) // 2])
    ds, lines = _load(tmp_path)
    assert len(ds) == 1 and _only_pixel(ds) == RED
    assert lines[1].startswith(f"skipping {tmp_path / 'garbage.jpg'}: ")
    assert lines[2].startswith(f"skipping {tmp_path / 'truncated.png'}: ")
    assert lines[3] == "skipped 2 of 3 files that could not be read"


def test_decompression_bombs_are_refused_without_changing_pil(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    _solid(tmp_path / "a_small.png", RED, size=(8, 8))  # 64 pixels: fine
    _solid(tmp_path / "b_warning.png", RED, size=(12, 12))  # 144 > 100: PIL only warns
    _solid(tmp_path / "c_error.png", RED, size=(15, 15))  # 225 > 2 * 100: PIL raises
    filters = list(warnings.filters)
    ds, lines = _load(tmp_path)
    assert len(ds) == 1
    assert "b_warning.png: DecompressionBombWarning" in lines[1] and "c_error.png: DecompressionBombError" in lines[2]
    assert lines[3] == "skipped 2 of 3 files that could not be read"
    assert Image.MAX_IMAGE_PIXELS == 100 and warnings.filters == filters


def test_folder_errors(tmp_path):
    with pytest.raises(ConfigError) as err:
        get_dataset(f"folder:{tmp_path}")
    assert str(err.value) == f"data set 'folder:{tmp_path}' needs an image_size, e.g. 64 or (64, 64), to bring its images to one size."
    with pytest.raises(DataError, match=f"image folder {tmp_path / 'missing'} does not exist or is not a folder."):
        _load(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match=f"image folder {tmp_path} holds no image files"):
        _load(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"nope")
    with pytest.raises(DataError) as err:
        _load(tmp_path)
    assert str(err.value) == f"image folder {tmp_path} holds no readable image (1 file could not be read)."
