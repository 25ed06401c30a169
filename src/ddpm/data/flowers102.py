"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 8,189 photographs of 102 kinds of flowers.

The files of https://www.robots.ox.ac.uk/~vgg/data/flowers/102/: ``102flowers.tgz`` (the
JPEGs as ``jpg/image_00001.jpg`` ...), ``imagelabels.mat`` (``labels``, 1..102 per image) and
``setid.mat`` (the image numbers of the official ``trnid``, ``valid`` and ``tstid`` splits),
read with the small MAT-file reader of :mod:`ddpm.data.matfile`. ``download=True`` fetches the
missing ones, MD5 checked.

Splits: a generative model wants the images, and the official training split (1,020, ten per
class) is meant for classifiers; so ``train`` is the official train and test splits together
(7,169 images) and ``test`` the official validation split (1,020), held out for FID.

The photographs have many sizes (500 pixels on the short side, mostly); ``image_size`` (default
64) resizes the short side and center-crops, as for image folders. The archive is never
extracted: members are read one at a time and each decoded as it arrives (members that
extraction could abuse are refused, as for CIFAR-10); an extracted ``jpg/`` folder is read if
present. :data:`CLASS_NAMES` gives each label a name, for captions.
"""

from __future__ import annotations

import io
import re
import tarfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from .base import check_split
from .cifar10 import _check_member, _decompressed
from .download import FileSpec, download_file
from .folder import load_image
from .matfile import read_mat_arrays

ARCHIVE = FileSpec("102flowers.tgz", "52808999861908f626f3c1f4e79d11fa")
LABELS = FileSpec("imagelabels.mat", "e0620be6f572b9609742df49c70aed4d")
SETID = FileSpec("setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c")
FILES = (ARCHIVE, LABELS, SETID)
MIRRORS = ("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",)
DEFAULT_SIZE = 64
SPLIT_KEYS = {"train": ("trnid", "tstid"), "test": ("valid",)}
MAX_IMAGES = 100_000  # the real set has 8,189 images
MAX_JPEG = 64 << 20  # bytes per member: the real photographs are well under 1 MB
_MEMBER = re.compile(r"^jpg/image_(\d{5})\.jpg$")

# The names of labels 1..102 in order (label k is CLASS_NAMES[k - 1]), as the data set's
# category list gives them.
CLASS_NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon",
    "colt's foot", "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower",
    "peruvian lily", "balloon flower", "giant white arum lily", "fire lily", "pincushion flower",
    "fritillary", "red ginger", "grape hyacinth", "corn poppy", "prince of wales feathers",
    "stemless gentian", "artichoke", "sweet william", "carnation", "garden phlox", "love in the mist",
    "mexican aster", "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort",
    "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia",
    "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium", "frangipani",
    "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia", "cyclamen",
    "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss", "foxglove", "bougainvillea",
    "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower", "trumpet creeper",
    "blackberry lily",
)


def _vector(arrays: dict[str, np.ndarray], key: str, where: Path) -> np.ndarray:
    if key not in arrays:
        raise DataError(f"{where} has no variable {key!r}; is it the Flowers-102 {where.name}?")
    values = arrays[key].reshape(-1)
    if values.size == 0 or values.size > MAX_IMAGES or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"{where}: {key!r} must hold between 1 and {MAX_IMAGES:,} whole numbers")
    return values.astype(np.int64)


def read_labels_and_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(image numbers of ``split``, sorted, 1-based; labels 0..101 of every image [N])."""
    labels_path, setid_path = folder / LABELS.name, folder / SETID.name
    labels = _vector(read_mat_arrays(labels_path.read_bytes(), str(labels_path)), "labels", labels_path)
    if labels.min() < 1 or labels.max() > len(CLASS_NAMES):
        raise DataError(f"{labels_path} holds labels from {labels.min()} to {labels.max()}; Flowers-102 has 1 to 102")
    splits = read_mat_arrays(setid_path.read_bytes(), str(setid_path))
    ids = np.unique(np.concatenate([_vector(splits, key, setid_path) for key in SPLIT_KEYS[split]]))
    if ids.min() < 1 or ids.max() > len(labels):
        raise DataError(f"{setid_path} names image {ids.max() if ids.max() > len(labels) else ids.min()}, "
                        f"but {labels_path} labels images 1 to {len(labels)}")
    return ids, labels - 1


def load_flowers102(
    split: str,
    folder: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    download: bool = False,
    mirrors: Sequence[str] | None = None,
    files: Sequence[FileSpec] = FILES,
    tries: int = 3,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 images [N, channels (3), H, W] resized to ``image_size`` (default 64x64), labels
    0..101 [N] and the class names. ``files`` replaces the three FileSpecs (for tests)."""
    check_split(split)
    folder = Path(folder).expanduser()
    size = image_size or (DEFAULT_SIZE, DEFAULT_SIZE)
    channels = channels or 3
    archive, *_ = files
    extracted = folder / "jpg"
    needed = [spec for spec in files if not (folder / spec.name).is_file()]
    if extracted.is_dir():
        needed = [spec for spec in needed if spec.name != archive.name]
    if needed:
        if not download:
            raise DataError(f"Flowers-102 is missing {', '.join(s.name for s in needed)} in {folder}; pass --download "
                            "(download=True) to fetch it, or put the files there by hand.")
        for spec in needed:
            download_file(spec, mirrors or MIRRORS, folder, tries=tries, backoff=backoff, log=log)
    ids, labels = read_labels_and_split(folder, split)
    wanted = {int(i): k for k, i in enumerate(ids)}
    images = np.empty((len(ids), channels, *size), np.uint8)
    done = np.zeros(len(ids), bool)
    source = extracted if extracted.is_dir() else folder / archive.name
    log(f"reading {len(ids)} Flowers-102 images ({split}) from {source}")
    for number, read in _jpegs(folder, archive, extracted, wanted):
        k = wanted[number]
        try:
            images[k] = load_image(read(), size, channels)
        except Exception as err:  # noqa: BLE001 - PIL raises many types on a bad file
            raise DataError(f"Flowers-102 image {number} in {source} cannot be read ({type(err).__name__}: {err})") from None
        done[k] = True
    if not done.all():
        raise DataError(f"{source} lacks image {int(ids[~done][0])} of the {split} split ({int((~done).sum())} missing)")
    return images, labels[ids - 1], list(CLASS_NAMES)


def _jpegs(folder: Path, archive: FileSpec, extracted: Path, wanted: dict[int, int]):
    """(image number, a function giving its bytes as a file object) for the wanted images."""
    if extracted.is_dir():
        for number in sorted(wanted):
            path = extracted / f"image_{number:05d}.jpg"
            if path.is_file():
                yield number, (lambda p=path: p)
        return
    path = folder / archive.name
    try:
        with _decompressed(path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                name = _check_member(member, path)
                found = _MEMBER.match(name)
                if not (found and member.isfile() and int(found.group(1)) in wanted):
                    continue
                if member.size > MAX_JPEG:
                    raise DataError(f"{path}:{name} is {member.size} bytes; a Flowers-102 photograph is far smaller")
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has one
                blob = stream.read()
                yield int(found.group(1)), (lambda b=blob: io.BytesIO(b))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataError(f"{path} is not a readable tar archive or is damaged ({err}).") from None


__all__ = ["ARCHIVE", "CLASS_NAMES", "FILES", "LABELS", "MIRRORS", "SETID", "load_flowers102"]
