"""Captions of image folders (every format and every bad input) and the CaptionSet the trainer draws from."""

import json

import pytest
import torch
from PIL import Image

from ddpm.data import get_dataset
from ddpm.errors import DataError
from ddpm.text.captions import MAX_CAPTION_CHARS, CaptionSet, dataset_captions, drop_long_captions, read_folder_captions


def _images(root, names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), (len(name) * 20 % 255, 0, 0)).save(path)


def _read(root, names, lines=None):
    lines = [] if lines is None else lines
    return read_folder_captions(root, names, log=lines.append), lines


def test_metadata_jsonl_csv_and_txt(tmp_path):
    _images(tmp_path, ["a.png", "b.jpg", "sub/c.png", "sub/d.png", "e.png"])
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "  a red\nsquare "}) + "\n\n"
        + json.dumps({"file_name": "sub/c.png", "caption": "from the caption column", "extra": 3}) + "\n", encoding="utf-8")
    (tmp_path / "sub" / "metadata.csv").write_text("file_name,text\nd.png,\"a csv caption, with a comma\"\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeffa text file caption\n", encoding="utf-8")  # a BOM is not part of it
    (tmp_path / "a.txt").write_text("ignored: metadata wins", encoding="utf-8")
    found, lines = _read(tmp_path, ["a.png", "b.jpg", "sub/c.png", "sub/d.png", "e.png"])
    assert found == ["a red square", "a text file caption", "from the caption column", "a csv caption, with a comma", None]
    assert lines[-1] == ("captions for 4 of 5 images (3 from metadata files, 1 from .txt files); "
                         "skipped: 1 images without a caption")
    assert f"image without a caption, skipped: {tmp_path / 'e.png'}" in lines


def test_every_bad_input_is_named_counted_and_skipped(tmp_path):
    names = [f"{i}.png" for i in range(9)]
    _images(tmp_path, names)
    rows = [
        '{"file_name": "0.png", "text": "good"}',
        '{"file_name": "1.png", "text": "unterminated',  # malformed JSON
        '["1.png", "a list"]',  # not an object
        '{"file_name": "2.png"}',  # no text
        '{"file_name": "missing.png", "text": "no such image"}',
        '{"file_name": "3.png", "text": "   "}',  # empty
        json.dumps({"file_name": "4.png", "text": "x" * (MAX_CAPTION_CHARS + 1)}),  # over-long
        '{"file_name": "5.png", "text": 7}',  # not text
        '{"file_name": "0.png", "text": "a second caption"}',
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "6.txt").write_bytes(b"\xff\xfe not utf-8 \xff")
    (tmp_path / "7.txt").write_text("\n \n", encoding="utf-8")
    found, lines = _read(tmp_path, names)
    assert found == ["good"] + [None] * 8
    meta = tmp_path / "metadata.jsonl"
    for expected in (f"{meta}:2: not JSON", f"{meta}:3: not an object with a file_name string", f"{meta}:4: no text or caption field",
                     f"{meta}:5: 'missing.png' is not an image of the data set", f"{meta}:6: the caption is empty",
                     f"{meta}:7: the caption has {MAX_CAPTION_CHARS + 1} characters", f"{meta}:8: the caption is int, not text",
                     f"{meta}:9: '0.png' already has a caption", f"{tmp_path / '6.txt'}:", f"{tmp_path / '7.txt'}: the caption is empty"):
        assert any(expected in line for line in lines), expected
    assert lines[-1] == ("captions for 1 of 9 images (1 from metadata files, 0 from .txt files); skipped: 3 malformed lines, "
                         "1 rows naming no image, 2 empty captions, 1 over-long captions, 1 non-text captions, "
                         "1 second captions, 1 unreadable .txt files, 8 images without a caption")


def test_bad_csv_files(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "metadata.csv").write_text("name,words\na.png,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no image in .* has a caption: add a metadata.jsonl .*1 malformed metadata files"):
        _read(tmp_path, ["a.png", "b.png"])
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,hello,surplus\nb.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 malformed lines"):
        _read(tmp_path, ["a.png", "b.png"])


def test_only_the_first_problems_of_a_kind_are_listed(tmp_path):
    names = [f"{i:02d}.png" for i in range(12)]
    _images(tmp_path, names)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "00.png", "text": "ok"}\n' + "garbage\n" * 20, encoding="utf-8")
    _, lines = _read(tmp_path, names)
    assert sum("not JSON" in line for line in lines) == 5 and sum("without a caption, skipped" in line for line in lines) == 5
    assert "20 malformed lines" in lines[-1] and "11 images without a caption" in lines[-1]


def test_folder_data_set_keeps_captioned_images_in_order(tmp_path):
    _images(tmp_path, ["x/1.png", "x/2.png", "y/3.png", "broken.png"])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for n in ("1", "3"):
        (tmp_path / ("x" if n == "1" else "y") / f"{n}.txt").write_text(f"caption {n}", encoding="utf-8")
    data = get_dataset(f"folder:{tmp_path}", image_size=4, log=lambda m: None)
    assert data.files == ["x/1.png", "x/2.png", "y/3.png"]  # the unreadable file is not among them
    captions, keep = dataset_captions(f"folder:{tmp_path}", data, log=lambda m: None)
    assert keep.tolist() == [True, False, True] and captions.texts == ["caption 1", "caption 3"]
    kept = data.subset(keep)
    assert kept.files == ["x/1.png", "y/3.png"] and torch.equal(kept.images, data.images[[0, 2]])
    assert torch.equal(kept.labels, data.labels[[0, 2]])


def test_label_captions_of_a_built_in_set():
    data = get_dataset("digits", log=lambda m: None)
    captions, keep = dataset_captions("digits", data)
    assert bool(keep.all()) and len(captions) == len(data)
    seven = int((data.labels == 7).nonzero()[0])
    mine = [captions.texts[i] for i in captions.choices[seven, : int(captions.counts[seven])]]
    assert mine == ["a handwritten seven", "the digit seven", "a picture of the number seven", "a drawing of a seven",
                    "an image of a seven", "a handwritten 7", "the digit 7", "a picture of the number 7", "a drawing of a 7",
                    "an image of a 7"]
    assert len(captions.texts) == 100  # 10 classes x 10 phrasings, each stored once


def test_pick_chooses_uniformly_among_an_image_s_captions():
    cs = CaptionSet.from_lists([["a", "b", "c"], ["d"], ["b", "e"]])
    assert cs.texts == ["a", "b", "c", "d", "e"] and cs.counts.tolist() == [3, 1, 2]
    u = torch.tensor([0.0, 0.34, 0.999, 0.5, 0.49, 0.5])
    assert cs.pick(torch.tensor([0, 0, 0, 1, 2, 2]), u).tolist() == [0, 1, 2, 3, 1, 4]
    many = cs.pick(torch.zeros(30000, dtype=torch.long), torch.rand(30000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(many, minlength=3).float() / 30000
    assert (freq - 1 / 3).abs().max() < 0.01


def test_long_captions_are_dropped_and_images_left_without_one_removed():
    cs = CaptionSet.from_lists([["short", "a much longer caption"], ["a much longer caption"], ["tiny"]])
    lines = []
    out, keep = drop_long_captions(cs, lambda texts: [len(t.split()) for t in texts], 2, lines.append)
    assert keep.tolist() == [True, False, True]
    assert [[out.texts[i] for i in row[:n]] for row, n in zip(out.choices.tolist(), out.counts.tolist())] == [["short"], ["tiny"]]
    assert "has 4 tokens, more than --text-max-tokens 2" in lines[0] and "1 image left without a caption" in lines[-1]
    with pytest.raises(DataError, match="every caption is longer than --text-max-tokens 1"):
        drop_long_captions(CaptionSet.from_lists([["two words"]]), lambda t: [2], 1, lambda m: None)
