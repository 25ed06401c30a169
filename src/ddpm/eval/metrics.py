"""Sample-quality metrics computed on feature vectors: FID, KID and precision/recall.

Every function takes features as arrays ``[N, D]`` (numpy or torch, any float dtype) and
computes in float64. None of them knows where the features came from (Inception, a small
classifier, raw pixels); see :mod:`ddpm.eval.features` for the extractors.

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two sets.
- KID (Binkowski et al. 2018): an unbiased estimate of the squared MMD under a cubic
  polynomial kernel, averaged over random subsets.
- Precision and recall (Kynkaanniemi et al. 2019): how much of each set falls inside the
  k-nearest-neighbour balls of the other.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError

# Rows processed at a time when streaming over features: [chunk, N] float64 distance blocks stay
# at chunk * N * 8 bytes (80 MB for N = 10,000 with the default).
DEFAULT_CHUNK = 1024


def _as_float64(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_features(x: object, name: str) -> np.ndarray:
    """Features as a numpy [N, D] array (dtype kept; callers upcast chunk by chunk), else DataError."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty [N, D] array of features; got shape {list(x.shape)}")
    return x


def _check_same_dim(f1: np.ndarray, f2: np.ndarray) -> None:
    if f1.shape[1] != f2.shape[1]:
        raise DataError(
            f"the two feature sets have different dimensions ({f1.shape[1]} and {f2.shape[1]}); "
            "compute both with the same feature extractor"
        )


def _row_chunks(n: int, chunk: int) -> Iterator[slice]:
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


# --------------------------------------------------------------------------------------------
# FID


def feature_statistics(features: object, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (as ``numpy.cov``) of features ``[N, D]``.

    Two passes over row chunks in float64, so a float32 ``[50000, 2048]`` array is never copied
    whole to float64.
    """
    f = _as_features(features, "features")
    n, d = f.shape
    if n < 2:
        raise DataError(f"the covariance of features needs at least 2 samples; got {n}")
    mu = np.zeros(d, dtype=np.float64)
    for rows in _row_chunks(n, chunk):
        mu += f[rows].astype(np.float64).sum(axis=0)
    mu /= n
    sigma = np.zeros((d, d), dtype=np.float64)
    for rows in _row_chunks(n, chunk):
        centred = f[rows].astype(np.float64) - mu
        sigma += centred.T @ centred
    sigma /= n - 1
    return mu, sigma


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; tiny negative eigenvalues clamp to 0."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^{1/2}) for symmetric PSD ``[D, D]`` matrices, without scipy.

    sigma1 sigma2 = sqrt(s1) (sqrt(s1) sigma2) has the same eigenvalues as the symmetric PSD
    matrix sqrt(s1) sigma2 sqrt(s1), so the trace of the principal square root is the sum of
    the square roots of that matrix's eigenvalues (all real and >= 0 up to rounding). When
    sigma1 is positive definite its Cholesky factor L (sigma1 = L L^T) serves the same purpose
    (L^T sigma2 L is similar to sigma1 sigma2) and is several times cheaper than an
    eigendecomposition at D = 2048; a singular sigma1 falls back to the symmetric square root.
    """
    try:
        factor = np.linalg.cholesky((sigma1 + sigma1.T) / 2)
        inner = factor.T @ sigma2 @ factor
    except np.linalg.LinAlgError:
        root1 = _sqrt_psd(sigma1)
        inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: object, sigma1: object, mu2: object, sigma2: object) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})  (Heusel et al. 2017).
    ``mu*`` are ``[D]``, ``sigma*`` are ``[D, D]``. Returns a float >= 0 (up to rounding).
    """
    mu1, mu2 = _as_float64(mu1).reshape(-1), _as_float64(mu2).reshape(-1)
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    d = mu1.shape[0]
    for name, value, want in (("mu2", mu2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
        if value.shape != want:
            raise DataError(
                f"{name} has shape {list(value.shape)} but mu1 has {d} dimensions, so {list(want)} "
                "was expected; compare statistics computed with the same feature extractor"
            )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


def fid_from_features(features1: object, features2: object) -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    _check_same_dim(f1, f2)
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


# --------------------------------------------------------------------------------------------
# KID


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for rows of ``x [M, D]`` and ``y [K, D]`` -> ``[M, K]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples ``x [m, D]`` and ``y [n, D]`` (Gretton et al. 2012, eq. 3).

    Within-set sums leave out the diagonal (k(x_i, x_i)), which is what makes it unbiased.
    """
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def kernel_distance(
    features1: object,
    features2: object,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and standard error of MMD^2 over random subsets.

    Each of ``num_subsets`` rounds draws ``subset_size`` rows without replacement from each set
    (clipped to the smaller set's size) and computes :func:`mmd2_unbiased`. Returns
    ``(mean, std / sqrt(num_subsets))`` with the sample standard deviation (ddof = 1); the error
    is NaN for a single subset, where it is undefined. Deterministic given ``seed``.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    _check_same_dim(f1, f2)
    if num_subsets < 1:
        raise DataError(f"num_subsets must be at least 1; got {num_subsets}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise DataError(f"KID needs subsets of at least 2 samples; got a subset size of {m}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)].astype(np.float64)
        y = f2[rng.choice(f2.shape[0], m, replace=False)].astype(np.float64)
        values[i] = mmd2_unbiased(x, y)
    err = float(values.std(ddof=1) / math.sqrt(num_subsets)) if num_subsets > 1 else float("nan")
    return float(values.mean()), err


# --------------------------------------------------------------------------------------------
# Precision and recall


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 for ``a [M, D]``, ``b [K, D]`` -> ``[M, K]``, clamped at 0."""
    return ((a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * a @ b.T).clamp_min_(0.0)


def knn_radii_squared(
    features: object, k: int = 3, *, chunk: int = DEFAULT_CHUNK, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Squared distance from each row of ``features [N, D]`` to its k-th nearest other row, ``[N]``."""
    f = torch.as_tensor(_as_features(features, "features"), dtype=torch.float64, device=device)
    return _knn_radii_squared(f, k, chunk)


def _knn_radii_squared(f: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    # The row itself is at distance 0 and sorts first, so the (k+1)-th smallest distance over all
    # rows is the k-th nearest neighbour excluding the point itself (also with duplicates).
    if not 1 <= k < f.shape[0]:
        raise DataError(f"k must lie in [1, {f.shape[0] - 1}] for {f.shape[0]} samples; got {k}")
    sq = (f * f).sum(1)
    radii = torch.empty(f.shape[0], dtype=torch.float64, device=f.device)
    for rows in _row_chunks(f.shape[0], chunk):
        d2 = _squared_distances(f[rows], f, sq)
        self_cols = torch.arange(rows.start, rows.stop, device=f.device)
        d2[torch.arange(d2.shape[0], device=f.device), self_cols] = 0.0  # exact self-distance
        radii[rows] = d2.kthvalue(k + 1, dim=1).values
    return radii


def _fraction_covered(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of ``query`` rows inside at least one ball (support_j, radius_j) (squared radii)."""
    sq = (support * support).sum(1)
    inside = 0
    for rows in _row_chunks(query.shape[0], chunk):
        d2 = _squared_distances(query[rows], support, sq)
        inside += int((d2 <= radii[None, :]).any(dim=1).sum())
    return inside / query.shape[0]


def precision_recall(
    real: object, fake: object, *, k: int = 3, chunk: int = DEFAULT_CHUNK, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of ``fake [M, D]`` vs ``real [N, D]``.

    Each set's manifold is the union of balls around its points, of radius the distance to the
    k-th nearest neighbour in the same set. Precision = fraction of fake samples inside the real
    manifold; recall = fraction of real samples inside the fake manifold (boundary counts as
    inside). Distances are computed in float64 in ``chunk``-row blocks on ``device``, so memory
    stays O(chunk * N) beyond the features themselves.
    """
    r, g = _as_features(real, "real"), _as_features(fake, "fake")
    _check_same_dim(r, g)
    r = torch.as_tensor(r, dtype=torch.float64, device=device)
    g = torch.as_tensor(g, dtype=torch.float64, device=device)
    precision = _fraction_covered(g, r, _knn_radii_squared(r, k, chunk), chunk)
    recall = _fraction_covered(r, g, _knn_radii_squared(g, k, chunk), chunk)
    return precision, recall
