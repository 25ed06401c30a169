"""Streaming folders: the path index, on-demand decoding equal to the in-memory reader,
replacement of unreadable files, and the resized-image cache."""

import gc
import os
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import get_dataset
from ddpm.data.stream import FolderStream, PathIndex, ResizedCache, collate, index_folder, open_folder_stream
from ddpm.errors import DataError


def _folder(root, n=6, size=(12, 10), classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / classes[i % len(classes)] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return root


def test_the_index_holds_paths_as_bytes_in_the_reader_order_with_its_labels(tmp_path):
    _folder(tmp_path)
    (tmp_path / "dog" / "été ☃.png").write_bytes((tmp_path / "dog" / "01.png").read_bytes())
    index, labels, names = index_folder(tmp_path, class_labels=True, log=lambda m: None)
    memory = get_dataset(f"folder:{tmp_path}", image_size=8, log=lambda m: None)
    assert [index.relative(i) for i in range(len(index))] == [
        "cat/00.png", "cat/02.png", "cat/04.png", "dog/01.png", "dog/03.png", "dog/05.png", "dog/été ☃.png"]
    assert names == memory.class_names == ["cat", "dog"] and labels.tolist() == memory.labels.tolist()
    assert index.buffer.dtype == np.uint8 and index.buffer.nbytes == sum(len(os.fsencode(index.relative(i))) for i in range(7))
    assert index.path(6) == tmp_path / "dog" / "été ☃.png"
    assert len(PathIndex(tmp_path, [])) == 0


def test_streamed_images_equal_the_in_memory_ones(tmp_path):
    _folder(tmp_path)
    for channels in (1, 3):
        memory = get_dataset(f"folder:{tmp_path}", image_size=(6, 8), channels=channels, log=lambda m: None)
        stream = open_folder_stream(tmp_path, (6, 8), channels, class_labels=True, log=lambda m: None)
        assert isinstance(stream, FolderStream) and len(stream) == len(memory) == 6
        assert stream.image_shape == memory.image_shape == (channels, 6, 8)
        assert stream.decoded_bytes == memory.images.numel() and stream.num_classes == 2
        images, labels, notes, indices = collate([stream[i] for i in range(6)])
        assert torch.equal(images, memory.images) and torch.equal(labels, memory.labels) and notes == []
        assert indices.tolist() == list(range(6)) and stream.files == memory.files
    unlabelled = open_folder_stream(tmp_path, (6, 8), 3, class_labels=False, log=lambda m: None)
    assert unlabelled.labels is None and unlabelled[0][1] == -1


def test_an_unreadable_file_is_replaced_by_the_next_readable_one(tmp_path):
    _folder(tmp_path)
    (tmp_path / "cat" / "02.png").write_bytes(b"not a png")  # index 1
    (tmp_path / "dog" / "05.png").write_bytes(b"")  # index 5, the last: wraps to index 0
    stream = open_folder_stream(tmp_path, (6, 8), 3, class_labels=True, log=lambda m: None)
    image, label, notes, j = stream[1]
    assert torch.equal(image, stream[2][0]) and label == 0 and j == 2  # cat/04.png
    assert [(k, key) for k, key, _ in notes] == [("unreadable", str(tmp_path / "cat" / "02.png"))]
    assert "UnidentifiedImageError" in notes[0][2]
    assert stream[1][2] == ()  # known bad in this process: skipped without a second report
    image, label, notes, j = stream[5]
    assert torch.equal(image, stream[0][0]) and label == 0 and j == 0 and notes[0][1].endswith("05.png")
    for p in tmp_path.rglob("*.png"):
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match=f"none of the 6 image files in {tmp_path} can be read"):
        open_folder_stream(tmp_path, (6, 8), 3, class_labels=True, log=lambda m: None)[0]


def test_the_resized_cache_serves_rows_it_can_trust(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images")
    lines = []
    stream = open_folder_stream(root, (6, 8), 3, class_labels=True, cache_resized=True, cache_dir=tmp_path / "cache",
                                log=lines.append)
    cache = stream.cache
    assert cache.directory.parent == tmp_path / "cache" / "resized" and f"cached in {cache.directory}" in lines[0]
    first = [stream[i][0] for i in range(6)]
    calls = []
    import ddpm.data.stream as module

    real = module.load_image
    monkeypatch.setattr(module, "load_image", lambda *a: calls.append(a[0]) or real(*a))
    again = open_folder_stream(root, (6, 8), 3, class_labels=True, cache_resized=True, cache_dir=tmp_path / "cache",
                               log=lambda m: None)
    assert again.cache.directory == cache.directory
    assert all(torch.equal(again[i][0], first[i]) for i in range(6)) and calls == []  # all from the cache
    # a torn row (bad checksum) and an edited source file are decoded again
    with open(cache.directory / "images.u8", "r+b") as fh:
        fh.seek(2 * cache.row)
        fh.write(b"\xff\x00\xff")
    edited = again.index.path(4)
    Image.new("RGB", (12, 10), (1, 2, 3)).save(edited)
    os.utime(edited, ns=(1, 1))
    assert torch.equal(again[2][0], first[2]) and again[4][0].reshape(3, -1)[:, 0].tolist() == [1, 2, 3]
    assert calls == [again.index.path(2), edited]
    assert ResizedCache(cache.directory, 6, (3, 6, 8)).read(0, 12345) is None  # another file's signature


def _held_and_peak(root, n):
    """Bytes traced while a FolderStream over ``n`` empty files lives, and at the peak of building it."""
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        (root / f"c{i % 4}" / f"{i:06d}.png").touch()
    gc.collect()
    tracemalloc.start()
    try:
        stream = open_folder_stream(root, (8, 8), 3, class_labels=True, log=lambda m: None, stream_above=None)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stream) == n and stream.labels[0] == 0 and stream.labels[-1] == 3
    return held, peak


def test_the_index_holds_a_few_bytes_per_image_and_builds_without_an_object_per_file(tmp_path):
    # streaming memory must not grow with the folder: per image only its path's bytes, an offset
    # and a label stay (no Path, str or int object each), and building them passes no Path
    # object per file either (the freed objects would leave the heap fragmented and pathlib's
    # table of interned names grown for good)
    h1, p1 = _held_and_peak(tmp_path / "small", 1000)
    h4, p4 = _held_and_peak(tmp_path / "large", 4000)
    path = len("c0/000000.png")
    held, peak = (h4 - h1) / 3000, (p4 - p1) / 3000
    assert held < path + 8 + 8 + 8, f"{held:.0f} bytes held per image"  # path, offset, label, slack
    assert peak < 250, f"{peak:.0f} bytes per image at the peak of indexing"
