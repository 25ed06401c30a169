import numpy as np
import pytest
import torch

from ddpm.errors import CheckpointError
from ddpm.eval.classifier import SmallClassifier, features
from ddpm.eval.features import (
    BatchedExtractor,
    FeatureExtractor,
    classifier_extractor,
    compute_statistics,
    inception_extractor,
    load_statistics,
    save_statistics,
)
from ddpm.eval.inception import InceptionFeatures


def pixels(batch_size: int = 3) -> BatchedExtractor:
    """Raw pixels as features: an extractor whose output is known exactly."""
    return BatchedExtractor(lambda x: x.flatten(1), 2 * 2 * 2, name="pixels", batch_size=batch_size)


def test_batched_extractor_returns_known_features_in_batches():
    seen = []

    def fn(x):
        seen.append(x.shape[0])
        return x.flatten(1) * 2

    ex = BatchedExtractor(fn, 8, name="twice", batch_size=4)
    assert isinstance(ex, FeatureExtractor)
    images = torch.rand(10, 2, 2, 2, dtype=torch.float64)
    out = ex(images)
    assert seen == [4, 4, 2]
    assert out.dtype == torch.float32 and out.shape == (10, 8)
    assert torch.equal(out, (images.float().flatten(1) * 2))
    as_uint8 = torch.randint(0, 256, (5, 2, 2, 2), dtype=torch.uint8)
    assert torch.equal(ex(as_uint8), as_uint8.float().flatten(1) / 255 * 2)
    assert ex(torch.zeros(0, 2, 2, 2)).shape == (0, 8)


def test_compute_statistics_from_a_tensor_or_batches():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(50, 2, 2, 2, generator=gen)
    flat = images.flatten(1).double().numpy()
    mu, sigma, feats = compute_statistics(pixels(), images)
    assert mu.dtype == np.float64 and sigma.shape == (8, 8) and feats.dtype == np.float32
    np.testing.assert_allclose(mu, flat.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(flat, rowvar=False), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(feats, images.flatten(1).numpy())
    # the same from a stream of batches, including (images, labels) pairs from a data loader
    stream = [images[:20], (images[20:35], torch.zeros(15)), [images[35:], torch.zeros(15)]]
    mu2, sigma2, feats2 = compute_statistics(pixels(), iter(stream))
    np.testing.assert_array_equal(feats2, feats)
    np.testing.assert_allclose(mu2, mu, rtol=1e-12)
    np.testing.assert_allclose(sigma2, sigma, rtol=1e-12)


def test_classifier_extractor_uses_the_penultimate_features():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SmallClassifier(1, 3, 8)
    ex = classifier_extractor(model, batch_size=7)
    assert ex.dim == 128 and ex.name.startswith("classifier-") and len(ex.name) == len("classifier-") + 16
    x = torch.rand(20, 1, 8, 8)
    assert torch.allclose(ex(x), features(model, x), atol=1e-6)
    assert classifier_extractor(model).name == ex.name  # a function of the weights
    with torch.no_grad():
        model.head.bias += 1
    assert classifier_extractor(model).name != ex.name


def test_inception_extractor_loads_a_weights_file(tmp_path):
    path = tmp_path / "inception.pth"
    torch.save(InceptionFeatures().state_dict(), path)
    ex = inception_extractor(path, batch_size=2)
    assert ex.dim == 2048 and ex.name == "inception-2015-12-05-pool3"
    assert ex(torch.rand(4, 1, 8, 8)).shape == (4, 2048)  # two batches of 2 (one shape: fast on CPU)


def test_statistics_cache_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(30, 4)).astype(np.float32)
    mu, sigma = feats.mean(0).astype(np.float64), np.cov(feats, rowvar=False)
    path = tmp_path / "stats" / "real.npz"
    save_statistics(path, mu, sigma, feats, extractor="pixels")
    assert sorted(p.name for p in path.parent.iterdir()) == ["real.npz"]  # no temporary file left
    mu2, sigma2, feats2 = load_statistics(path, extractor="pixels")
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    np.testing.assert_array_equal(feats2, feats)
    save_statistics(path, mu, sigma)
    assert load_statistics(path)[2] is None
    with np.load(path, allow_pickle=False) as data:  # a plain npz anyone can read
        assert sorted(data.files) == ["extractor", "format", "mu", "sigma", "version"]


def test_statistics_cache_refuses_damaged_or_foreign_files(tmp_path):
    mu, sigma = np.zeros(3), np.eye(3)
    path = tmp_path / "real.npz"
    save_statistics(path, mu, sigma, extractor="inception-2015-12-05-pool3")
    with pytest.raises(CheckpointError) as err:
        load_statistics(path, extractor="classifier-0123")
    assert str(err.value) == (
        f"{path} was computed with the feature extractor 'inception-2015-12-05-pool3', not "
        "'classifier-0123'; delete it to recompute"
    )
    damaged = f"{path} is damaged or not a statistics file written by save_statistics; delete it to recompute"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_statistics(path)
    assert str(err.value) == damaged
    # an npz that needs pickle to read is refused, not unpickled
    np.savez(path, format=np.array("ddpm-feature-statistics"), extractor=np.array(""), mu=np.array([object()]),
             sigma=sigma)
    with pytest.raises(CheckpointError) as err:
        load_statistics(path)
    assert str(err.value) == damaged
    save_statistics(path, mu, np.eye(4))
    with pytest.raises(CheckpointError) as err:
        load_statistics(path)
    assert str(err.value) == f"{path} holds inconsistent statistics (mu [3], sigma [4, 4]); delete it to recompute"
    with pytest.raises(CheckpointError, match="does not exist"):
        load_statistics(tmp_path / "none.npz")
