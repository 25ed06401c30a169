"""One interface over the feature extractors, feature statistics, and their on-disk cache.

A :class:`FeatureExtractor` maps images ``[N, C, H, W]`` in [0, 1] to features ``[N, D]``.
Two are provided: :func:`inception_extractor` (FID's Inception-v3, 2048-d, comparable with
published numbers) and :func:`classifier_extractor` (a :class:`SmallClassifier` trained on the
data set, offline and suited to small images). :func:`compute_statistics` runs one over a
tensor or a stream of batches and returns the mean, covariance and features that
:mod:`ddpm.eval.metrics` needs.

Real-data statistics are worth caching: :func:`save_statistics` writes a plain ``.npz``
(no pickled objects; read back with ``allow_pickle=False``) tagged with the extractor's name,
and :func:`load_statistics` refuses a damaged file or one made by another extractor with a
:class:`CheckpointError` rather than recomputing silently; the caller decides (the usual
answer: delete the file and compute again).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import CheckpointError, DataError
from ..fileio import atomic_write
from .classifier import SmallClassifier
from .inception import InceptionFeatures
from .metrics import feature_statistics

STATS_FORMAT = "ddpm-feature-statistics"
STATS_VERSION = 1


@runtime_checkable
class FeatureExtractor(Protocol):
    """``extractor(images [N, C, H, W] in [0, 1]) -> features [N, dim]`` (float32, CPU)."""

    dim: int
    name: str

    def __call__(self, images: Tensor) -> Tensor: ...


class BatchedExtractor:
    """Applies ``fn`` (one batch on ``device`` -> ``[B, dim]``) in batches under inference mode.

    Accepts float images in [0, 1] or uint8 images in [0, 255]; returns float32 on the CPU.
    ``name`` identifies the extractor in cached statistics.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], dim: int, *, name: str, device: str | torch.device = "cpu",
                 batch_size: int = 64):
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1; got {batch_size}")
        self.fn, self.dim, self.name = fn, dim, name
        self.device, self.batch_size = torch.device(device), batch_size

    def __call__(self, images: Tensor) -> Tensor:
        images = torch.as_tensor(images)
        if images.ndim != 4:
            raise DataError(f"feature extraction needs images of shape [N, C, H, W]; got {list(images.shape)}")
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                x = images[start : start + self.batch_size].to(self.device)
                x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
                out.append(self.fn(x).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)


def inception_extractor(weights_path: str | Path, *, device: str | torch.device = "cpu",
                        batch_size: int = 50) -> BatchedExtractor:
    """FID's Inception-v3 pool3 features (2048-d) from the pytorch-fid weights file."""
    model = InceptionFeatures.from_file(weights_path).to(device)
    return BatchedExtractor(model, model.dim, name="inception-2015-12-05-pool3", device=device, batch_size=batch_size)


def classifier_extractor(model: SmallClassifier, *, device: str | torch.device = "cpu",
                         batch_size: int = 256) -> BatchedExtractor:
    """The penultimate features of a trained :class:`SmallClassifier`.

    Its name carries a hash of the weights, so statistics cached with one classifier are not
    taken for another's.
    """
    digest = hashlib.sha256()
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    model = model.to(device).eval()
    return BatchedExtractor(model.embed, model.feature_dim, name=f"classifier-{digest.hexdigest()[:16]}",
                            device=device, batch_size=batch_size)


def compute_statistics(
    extractor: FeatureExtractor, images: Tensor | Iterable[Tensor]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of ``images`` and their statistics: ``(mu [D], sigma [D, D], features [N, D])``.

    ``images`` is one tensor ``[N, C, H, W]`` or an iterable of such batches; a batch that is a
    tuple or list (as from a labelled data loader) contributes its first element. ``mu`` and
    ``sigma`` (unbiased, as ``numpy.cov``) are float64; the features are float32.
    """
    batches = [images] if isinstance(images, Tensor) else images
    chunks = []
    for batch in batches:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        chunks.append(extractor(batch).numpy().astype(np.float32, copy=False))
    if not chunks:
        raise DataError("no images were given to compute feature statistics from")
    feats = np.concatenate(chunks)
    mu, sigma = feature_statistics(feats)
    return mu, sigma, feats


def save_statistics(
    path: str | Path, mu: np.ndarray, sigma: np.ndarray, features: np.ndarray | None = None, *, extractor: str = ""
) -> Path:
    """Write statistics (and optionally the features) to the ``.npz`` file ``path``, atomically.

    ``extractor`` (a :class:`FeatureExtractor`'s ``name``) is stored so that
    :func:`load_statistics` can refuse statistics made with a different network.
    """
    arrays = {
        "format": np.array(STATS_FORMAT),
        "version": np.array(STATS_VERSION),
        "extractor": np.array(extractor),
        "mu": np.asarray(mu, dtype=np.float64),
        "sigma": np.asarray(sigma, dtype=np.float64),
    }
    if features is not None:
        arrays["features"] = np.asarray(features)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def load_statistics(
    path: str | Path, *, extractor: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read statistics written by :func:`save_statistics` -> ``(mu, sigma, features or None)``.

    With ``extractor`` given, the stored name must equal it. A missing, damaged, inconsistent
    or foreign file raises :class:`CheckpointError` (never unpickles anything).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the statistics file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            fmt, stored = str(data["format"]), str(data["extractor"])
            mu, sigma = data["mu"], data["sigma"]
            features = data["features"] if "features" in data.files else None
    except Exception:  # zip, format and key errors all mean the same thing here
        raise CheckpointError(
            f"{path} is damaged or not a statistics file written by save_statistics; delete it to recompute"
        ) from None
    d = mu.shape[0] if mu.ndim == 1 else -1
    consistent = (
        fmt == STATS_FORMAT
        and d > 0
        and sigma.shape == (d, d)
        and (features is None or (features.ndim == 2 and features.shape[1] == d))
        and bool(np.isfinite(mu).all() and np.isfinite(sigma).all())
    )
    if not consistent:
        raise CheckpointError(
            f"{path} holds inconsistent statistics (mu {list(mu.shape)}, sigma {list(sigma.shape)}); "
            "delete it to recompute"
        )
    if extractor is not None and stored != extractor:
        raise CheckpointError(
            f"{path} was computed with the feature extractor {stored!r}, not {extractor!r}; delete it to recompute"
        )
    return mu, sigma, features
