"""The 8x8 handwritten digits shipped with the package (UCI optdigits via scikit-learn, CC BY 4.0).

1,797 images of 10 classes with pixel values 0..16 (see ``DIGITS_LICENSE.txt``). No download,
no network: the file is package data. The split is fixed: every sixth image (index % 6 == 5,
299 images) is the test set, the other 1,498 are the training set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import check_split

DIGITS_FILE = Path(__file__).with_name("digits.npz")
CLASS_NAMES = [str(d) for d in range(10)]


def load_digits(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 1, 8, 8] in 0..255 and uint8 labels [N] of one split."""
    check_split(split)
    with np.load(DIGITS_FILE) as archive:  # allow_pickle stays False: plain arrays only
        raw, labels = archive["images"], archive["labels"]
    # 0..16 counts of "on" pixels -> round(v * 255 / 16); only v = 8 falls on a half (127.5 -> 128).
    images = ((raw.astype(np.uint16) * 255 + 8) // 16).astype(np.uint8)[:, None]
    test = np.arange(len(labels)) % 6 == 5
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]
