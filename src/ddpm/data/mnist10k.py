"""11,000 MNIST digits (28x28) shipped with the package: the default data set, no download.

1,000 training images of each digit and 100 test images of each, a fixed random subset of
MNIST (LeCun, Cortes and Burges; CC BY-SA 3.0, see ``MNIST10K_LICENSE.txt``), stored unchanged.
Real 28x28 handwriting, so that the first ``ddpm train`` draws digits that look like digits,
and a labelled test split, so that ``ddpm eval`` works offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import check_split

MNIST10K_FILE = Path(__file__).with_name("mnist10k.npz")
CLASS_NAMES = [str(d) for d in range(10)]


def load_mnist10k(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 1, 28, 28] in 0..255 and uint8 labels [N] of one split (10,000 / 1,000)."""
    check_split(split)
    with np.load(MNIST10K_FILE) as archive:  # allow_pickle stays False: plain arrays only
        return archive[f"{split}_images"][:, None], archive[f"{split}_labels"]
