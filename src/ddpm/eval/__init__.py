"""Evaluating samples: feature extractors, feature statistics and the metrics computed on them.

A typical FID evaluation::

    from ddpm.eval import (download_inception_weights, inception_extractor, compute_statistics,
                           frechet_distance, kernel_distance, precision_recall)

    extractor = inception_extractor(download_inception_weights("~/.cache/ddpm"), device="cuda")
    mu_r, sigma_r, real = compute_statistics(extractor, real_batches)    # images in [0, 1]
    mu_g, sigma_g, fake = compute_statistics(extractor, sample_batches)
    fid = frechet_distance(mu_r, sigma_r, mu_g, sigma_g)
    kid, kid_err = kernel_distance(real, fake)
    precision, recall = precision_recall(real, fake, k=3)

Offline, or for small images (8x8 digits, 28x28 MNIST), train a small classifier on the data
set's labelled training split and use its features instead (numbers comparable only with
other runs that use the same classifier)::

    model = train_classifier(train_images_uint8, train_labels, num_classes=10)
    save_classifier(model, "runs/classifier", accuracy=classifier_accuracy(model, test_x, test_y))
    model, info = load_classifier("runs/classifier")
    extractor = classifier_extractor(model)

Real-data statistics can be cached with :func:`save_statistics` / :func:`load_statistics`
(a pickle-free ``.npz`` tagged with ``extractor.name``).

Modules: :mod:`.metrics` (pure float64 math), :mod:`.inception` (FID's Inception-v3 in plain
torch, its weights file and downloader), :mod:`.classifier` (the small CNN), :mod:`.features`
(the common extractor interface and the statistics cache).
"""

# ``classifier.features`` is exported as ``classifier_features``: the bare name would clash
# with the submodule ``ddpm.eval.features``.
from .classifier import features as classifier_features
from .classifier import (
    SmallClassifier,
    classifier_accuracy,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from .features import (
    BatchedExtractor,
    FeatureExtractor,
    classifier_extractor,
    compute_statistics,
    inception_extractor,
    load_statistics,
    save_statistics,
)
from .inception import FID_WEIGHTS_URL, InceptionFeatures, download_inception_weights
from .metrics import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kernel_distance,
    precision_recall,
)

__all__ = [
    "BatchedExtractor",
    "FID_WEIGHTS_URL",
    "FeatureExtractor",
    "InceptionFeatures",
    "SmallClassifier",
    "classifier_accuracy",
    "classifier_extractor",
    "classifier_features",
    "compute_statistics",
    "download_inception_weights",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_extractor",
    "kernel_distance",
    "load_classifier",
    "load_statistics",
    "predict",
    "precision_recall",
    "save_classifier",
    "save_statistics",
    "train_classifier",
]
