"""Captions of training images: read from an image folder, or made from class labels.

An image folder (``folder:PATH``) gives captions in Hugging Face's imagefolder convention, or
beside each image:

- ``metadata.jsonl``: one JSON object per line with ``file_name`` (the image's path relative to
  the metadata file's folder) and ``text`` (or ``caption``);
- ``metadata.csv``: the same two columns, with a header row;
- ``NAME.txt`` beside ``NAME.png`` (any image suffix): the whole file is the caption.

Metadata files may sit in any folder of the tree; an image named by metadata keeps that caption
even if a ``.txt`` exists. Every problem is named (the first few of each kind), counted in one
summary line and skipped, before training starts: a malformed line, a row naming a missing
image, a second caption for one image, an empty caption or one over :data:`MAX_CAPTION_CHARS`
characters, an image without a caption; a caption longer than the text encoder takes is found
when it is tokenized (:func:`drop_long_captions`). A folder without a single usable caption is
refused with one sentence.

:class:`CaptionSet` holds the result as the trainer uses it: the distinct captions once, and
for each image the captions it may take (one for a folder, its class's phrasings for labels).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..errors import DataError
from .base import clean_caption
from .label_captions import label_phrasings

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
TEXT_COLUMNS = ("text", "caption")  # the first one present is the caption
MAX_CAPTION_CHARS = 2000
SHOWN = 5  # problems of one kind named in full; the rest are counted

Log = Callable[[str], None]


@dataclass
class CaptionSet:
    """texts: the distinct captions. choices: [N, K] int64 indices into ``texts`` per image (-1
    pads); counts: [N] how many of an image's K entries are real (>= 1)."""

    texts: list[str]
    choices: Tensor
    counts: Tensor

    def __len__(self) -> int:
        return self.choices.shape[0]

    def pick(self, images: Tensor, u: Tensor) -> Tensor:
        """Caption indices [B] for data-set indices ``images`` [B], choosing among each image's
        captions with uniform numbers ``u`` [B] in [0, 1)."""
        counts = self.counts[images]
        j = (u * counts).long().clamp(max=counts - 1)
        return self.choices[images, j]

    def subset(self, keep: Tensor) -> "CaptionSet":
        return CaptionSet(self.texts, self.choices[keep], self.counts[keep])

    @staticmethod
    def from_lists(per_image: Sequence[Sequence[str]]) -> "CaptionSet":
        index: dict[str, int] = {}
        for caps in per_image:
            for c in caps:
                index.setdefault(c, len(index))
        k = max(len(c) for c in per_image)
        choices = torch.full((len(per_image), k), -1, dtype=torch.long)
        for i, caps in enumerate(per_image):
            choices[i, : len(caps)] = torch.tensor([index[c] for c in caps])
        counts = torch.tensor([len(c) for c in per_image], dtype=torch.long)
        return CaptionSet(list(index), choices, counts)


class _Problems:
    """Problems of each kind: the first few named through ``log``, all counted."""

    def __init__(self, log: Log):
        self.log, self.counts = log, {}

    def add(self, kind: str, detail: str) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if n <= SHOWN:
            self.log(f"caption skipped: {detail}")

    def summary(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.counts.items())


def _check_text(value: object, where: str, problems: _Problems) -> str | None:
    if not isinstance(value, str):
        problems.add("non-text captions", f"{where}: the caption is {type(value).__name__}, not text")
        return None
    text = clean_caption(value)
    if not text:
        problems.add("empty captions", f"{where}: the caption is empty")
        return None
    if len(text) > MAX_CAPTION_CHARS:
        problems.add("over-long captions", f"{where}: the caption has {len(text)} characters, more than {MAX_CAPTION_CHARS}")
        return None
    return text


def _metadata_rows(path: Path, problems: _Problems) -> list[tuple[str, object, str]]:
    """(file_name, caption, where) of each usable row of a metadata file."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        problems.add("unreadable metadata files", f"{path}: {err}")
        return rows
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problems.add("malformed lines", f"{where}: not JSON ({err.msg})")
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("file_name"), str):
                problems.add("malformed lines", f"{where}: not an object with a file_name string")
                continue
            key = next((k for k in TEXT_COLUMNS if k in obj), None)
            if key is None:
                problems.add("malformed lines", f"{where}: no {' or '.join(TEXT_COLUMNS)} field")
                continue
            rows.append((obj["file_name"], obj[key], where))
    else:
        reader = csv.DictReader(text.splitlines())
        fields = reader.fieldnames or []
        key = next((k for k in TEXT_COLUMNS if k in fields), None)
        if "file_name" not in fields or key is None:
            problems.add("malformed metadata files", f"{path}: the header needs file_name and {' or '.join(TEXT_COLUMNS)}")
            return rows
        try:
            for record in reader:
                where = f"{path}:{reader.line_num}"
                if record.get("file_name") is None or record.get(key) is None or None in record:
                    problems.add("malformed lines", f"{where}: not one value per column")
                    continue
                rows.append((record["file_name"], record[key], where))
        except csv.Error as err:
            problems.add("malformed lines", f"{path}:{reader.line_num}: {err}")
    return rows


def read_folder_captions(root: str | Path, files: Sequence[str | Path], log: Log = print) -> list[str | None]:
    """The caption of each of ``files`` (images below ``root``, absolute or relative), or None."""
    root = Path(root).expanduser().resolve()
    problems = _Problems(log)
    wanted = {}
    for f in files:
        p = Path(f)
        wanted[(p if p.is_absolute() else root / p).resolve()] = None
    captions: dict[Path, str] = {}
    from_meta = 0
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for meta in METADATA_FILES:
            if meta not in names:
                continue
            for file_name, value, where in _metadata_rows(Path(directory, meta), problems):
                image = (Path(directory) / file_name).resolve()
                if image not in wanted:
                    problems.add("rows naming no image", f"{where}: {file_name!r} is not an image of the data set")
                    continue
                if image in captions:
                    problems.add("second captions", f"{where}: {file_name!r} already has a caption")
                    continue
                text = _check_text(value, where, problems)
                if text is not None:
                    captions[image] = text
                    from_meta += 1
    from_txt = 0
    for image in wanted:
        side = image.with_suffix(".txt")
        if image in captions or not side.is_file():
            continue
        try:
            value: object = side.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            problems.add("unreadable .txt files", f"{side}: {err}")
            continue
        text = _check_text(value, str(side), problems)
        if text is not None:
            captions[image] = text
            from_txt += 1
    out = [captions.get(p) for p in wanted]
    missing = [p for p, c in zip(wanted, out) if c is None]
    for p in missing[:SHOWN]:
        log(f"image without a caption, skipped: {p}")
    if missing:
        problems.counts["images without a caption"] = len(missing)
    if not captions:
        raise DataError(
            f"no image in {root} has a caption: add a metadata.jsonl (file_name, text), a metadata.csv or a .txt file "
            "beside each image" + (f" ({problems.summary()})" if problems.counts else "")
        )
    log(f"captions for {len(captions)} of {len(out)} images ({from_meta} from metadata files, {from_txt} from .txt files)"
        + (f"; skipped: {problems.summary()}" if problems.counts else ""))
    return out


def drop_long_captions(captions: CaptionSet, count_tokens: Callable[[Sequence[str]], list[int]], max_tokens: int,
                       log: Log = print) -> tuple[CaptionSet, Tensor]:
    """Remove captions over ``max_tokens``; returns the set and the images that keep one (bool [N])."""
    counts = count_tokens(captions.texts)
    long = [i for i, n in enumerate(counts) if n > max_tokens]
    if not long:
        return captions, torch.ones(len(captions), dtype=torch.bool)
    for i in long[:SHOWN]:
        log(f"caption skipped: {captions.texts[i][:60]!r}... has {counts[i]} tokens, more than --text-max-tokens {max_tokens}")
    bad = torch.zeros(len(captions.texts), dtype=torch.bool)
    bad[long] = True
    choices = captions.choices.clone()
    valid = choices >= 0
    choices[valid & bad[choices.clamp(min=0)]] = -1
    # keep each image's remaining captions at the front of its row
    order = torch.argsort((choices < 0).to(torch.int8), dim=1, stable=True)
    choices = torch.gather(choices, 1, order)
    counts_left = (choices >= 0).sum(1)
    keep = counts_left > 0
    log(f"skipped {len(long)} caption{'s' if len(long) > 1 else ''} over {max_tokens} tokens; "
        f"{int((~keep).sum())} image{'s' if int((~keep).sum()) != 1 else ''} left without a caption")
    if not bool(keep.any()):
        raise DataError(f"every caption is longer than --text-max-tokens {max_tokens}; raise it or shorten the captions")
    return CaptionSet(captions.texts, choices[keep], counts_left[keep]), keep


def dataset_captions(dataset: str, data, log: Log = print) -> tuple[CaptionSet, Tensor]:
    """The CaptionSet of a loaded data set and the images that have a caption (bool [N]).

    Folders: their caption files (``data.files`` names the images). The built-in labelled sets:
    their label-derived phrasings (see :mod:`ddpm.text.label_captions`)."""
    if dataset.startswith("folder:"):
        if data.files is None:  # pragma: no cover - every folder data set records its files
            raise DataError(f"data set {dataset!r} does not say which file each image came from")
        found = read_folder_captions(dataset[len("folder:"):], data.files, log)
        keep = torch.tensor([c is not None for c in found], dtype=torch.bool)
        return CaptionSet.from_lists([[c] for c in found if c is not None]), keep
    if data.labels is None:
        raise DataError(f"label-derived captions need the class labels of {dataset!r}, and it has none")
    per_class = label_phrasings(dataset, data.class_names, int(data.num_classes))
    labels = data.labels.tolist()
    return CaptionSet.from_lists([per_class[y] for y in labels]), torch.ones(len(labels), dtype=torch.bool)


__all__ = ["CaptionSet", "METADATA_FILES", "MAX_CAPTION_CHARS", "dataset_captions", "drop_long_captions",
           "read_folder_captions"]
