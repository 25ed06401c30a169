import math

import numpy as np
import pytest
import torch

from ddpm.errors import DataError
from ddpm.eval.metrics import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kernel_distance,
    knn_radii_squared,
    precision_recall,
)


def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q


# ---------------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    std1, std2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    expected = ((mu1 - mu2) ** 2).sum() + ((std1 - std2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(std1**2), mu2, np.diag(std2**2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_commuting_full_covariances():
    # Same eigenvectors: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(a) - sqrt(b))^2 over eigenvalues.
    rng = np.random.default_rng(1)
    q = _random_orthogonal(5, rng)
    a, b = rng.uniform(0.2, 3, 5), rng.uniform(0.2, 3, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_non_commuting_2x2_closed_form():
    # For 2x2 matrices, Tr((S1 S2)^1/2) = sqrt(Tr(S1 S2) + 2 sqrt(det S1 det S2)):
    # (sqrt(l1) + sqrt(l2))^2 = l1 + l2 + 2 sqrt(l1 l2) for the eigenvalues l of S1 S2.
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.0])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 0.25 + 4.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    # symmetric in its arguments
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_with_a_singular_covariance():
    # sigma1 has rank 1 (no Cholesky factor): det = 0, so Tr((S1 S2)^1/2) = sqrt(Tr(S1 S2)).
    s1 = np.array([[1.0, 1.0], [1.0, 1.0]])
    s2 = np.array([[2.0, 0.5], [0.5, 1.0]])
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(s1)
    expected = np.trace(s1) + np.trace(s2) - 2 * math.sqrt(np.trace(s1 @ s2))
    # sqrt amplifies rounding of the zero eigenvalue (sqrt(1e-16) = 1e-8): agreement to ~1e-7
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(expected, abs=1e-6)
    # and the other way round, where the factorised matrix is the regular one
    assert frechet_distance(np.zeros(2), s2, np.zeros(2), s1) == pytest.approx(expected, abs=1e-6)


def test_frechet_distance_zero_for_identical_sets_even_rank_deficient():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(5, 12))  # 5 samples in 12 dims: a singular covariance
    mu, sigma = feature_statistics(f)
    assert np.linalg.matrix_rank(sigma) == 4
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(fid_from_features(f, f.copy())) < 1e-6


def test_feature_statistics_matches_numpy_in_chunks():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(103, 7)).astype(np.float32) * 3 + 1
    mu, sigma = feature_statistics(torch.from_numpy(f), chunk=10)
    assert mu.dtype == np.float64 and sigma.shape == (7, 7)
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-10)


def test_fid_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(4)
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -0.5])
    q = _random_orthogonal(d, rng)
    s1 = np.diag([1.0, 0.5, 2.0])
    s2 = q @ np.diag([1.5, 0.3, 1.0]) @ q.T
    exact = frechet_distance(mu1, s1, mu2, s2)
    n = 40_000
    f1 = rng.multivariate_normal(mu1, s1, size=n)
    f2 = rng.multivariate_normal(mu2, s2, size=n)
    assert fid_from_features(f1, f2) == pytest.approx(exact, abs=0.03)
    small = fid_from_features(f1[:200], f2[:200])
    assert abs(small - exact) > abs(fid_from_features(f1, f2) - exact)  # the estimate converges


def test_fid_refuses_mismatched_dimensions():
    with pytest.raises(DataError) as err:
        fid_from_features(np.zeros((4, 3)), np.zeros((4, 5)))
    assert str(err.value) == (
        "the two feature sets have different dimensions (3 and 5); compute both with the same feature extractor"
    )
    with pytest.raises(DataError, match=r"^sigma2 has shape \[3, 3\] but mu1 has 2 dimensions"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
    with pytest.raises(DataError, match="at least 2 samples; got 1"):
        feature_statistics(np.zeros((1, 3)))


# ---------------------------------------------------------------------------------- KID


def _brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_single_whole_set_subset_equals_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 4)), rng.normal(1.0, 1.0, size=(6, 4))
    mean, err = kernel_distance(x, y, num_subsets=1, subset_size=100)
    assert mean == pytest.approx(_brute_force_mmd2(x, y), rel=1e-12)
    assert math.isnan(err)  # a standard error from one subset is undefined
    # several subsets that each hold the whole set agree exactly: zero spread
    mean3, err3 = kernel_distance(x, y, num_subsets=3, subset_size=6)
    assert mean3 == pytest.approx(mean, rel=1e-12) and err3 == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_for_the_same_distribution_and_positive_otherwise():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, err = kernel_distance(a, b, num_subsets=50, subset_size=200, seed=1)
    assert err > 0 and abs(mean) < 3 * err
    shifted = rng.normal(0.5, 1.0, size=(1000, 16))
    mean2, err2 = kernel_distance(a, shifted, num_subsets=50, subset_size=200, seed=1)
    assert mean2 > 20 * err2 and mean2 > 0.1
    # deterministic for a seed
    assert kernel_distance(a, shifted, num_subsets=5, subset_size=50, seed=3) == kernel_distance(
        a, shifted, num_subsets=5, subset_size=50, seed=3
    )


def test_kid_clips_the_subset_size_to_the_smaller_set():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(9, 3))
    # with subset_size clipped to 5, every subset of x is all of x
    mean, _ = kernel_distance(x, y, num_subsets=1, subset_size=1000, seed=0)
    chosen = np.random.default_rng(0)
    chosen.choice(5, 5, replace=False)
    y_rows = chosen.choice(9, 5, replace=False)
    assert mean == pytest.approx(_brute_force_mmd2(x, y[y_rows]), rel=1e-12)


# ---------------------------------------------------------------------- precision / recall


def test_precision_recall_identical_and_far_apart():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(300, 5))
    assert precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_one_dimensional_by_hand():
    # real: two clusters {0, 1, 2} and {10, 11, 12}; with k = 2 the real radii are
    # 2, 1, 2 and 2, 1, 2. fake: 0.5, 1.5, 2.5 inside the first cluster and an outlier at 6.
    real = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0]])
    fake = np.array([[0.5], [1.5], [2.5], [6.0]])
    np.testing.assert_array_equal(knn_radii_squared(real, 2).numpy(), np.array([2.0, 1, 2, 2, 1, 2]) ** 2)
    # fake radii (k = 2): 0.5 -> 2, 1.5 -> 1, 2.5 -> 2, 6 -> 4.5 (its 2nd nearest fake is 1.5)
    np.testing.assert_array_equal(knn_radii_squared(fake, 2).numpy(), np.array([2.0, 1.0, 2.0, 4.5]) ** 2)
    # precision: 0.5, 1.5, 2.5 lie within a real ball; 6 is 4 away from 2 and 10 (radii 2): 3/4.
    # recall: 0, 1, 2 are covered; 10 is 4 <= 4.5 from the outlier 6; 11 and 12 are not: 4/6.
    precision, recall = precision_recall(real, fake, k=2)
    assert precision == 0.75
    assert recall == pytest.approx(4 / 6, abs=0)
    assert precision_recall(real, fake, k=2, chunk=1) == (precision, recall)


def test_precision_recall_chunked_equals_brute_force():
    gen = torch.Generator().manual_seed(9)
    real = torch.randn(700, 6, generator=gen, dtype=torch.float64)
    fake = torch.randn(500, 6, generator=gen, dtype=torch.float64) * 1.3 + 0.4
    k = 5

    def radii(x):
        d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
        return d.sort(dim=1).values[:, k]  # column 0 is the point itself

    def covered(q, s, r):
        d = torch.cdist(q, s, compute_mode="donot_use_mm_for_euclid_dist")
        return (d <= r[None, :]).any(dim=1).double().mean().item()

    expected = (covered(fake, real, radii(real)), covered(real, fake, radii(fake)))
    got = precision_recall(real, fake, k=k, chunk=64)
    assert 0.2 < expected[0] < 1 and 0.2 < expected[1] < 1
    assert got == pytest.approx(expected, abs=1.5 / 500)  # at most one boundary point may differ


def test_precision_recall_refuses_too_large_k():
    with pytest.raises(DataError) as err:
        precision_recall(np.zeros((3, 2)), np.ones((10, 2)), k=3)
    assert str(err.value) == "k must lie in [1, 2] for 3 samples; got 3"
