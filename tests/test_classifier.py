import json

import pytest
import torch

from ddpm.errors import CheckpointError, ConfigError, DataError
from ddpm.eval.classifier import (
    INFO_FILE,
    WEIGHTS_FILE,
    SmallClassifier,
    classifier_accuracy,
    features,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)


def toy_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of noisy 8x8 images: a bright 3x3 square top-left, one bottom-right, or a
    horizontal bar across rows 3-4. uint8 [n, 1, 8, 8] and labels [n]."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    x = 60 + 25 * torch.randn(n, 1, 8, 8, generator=gen)
    x[labels == 0, :, 0:3, 0:3] += 120
    x[labels == 1, :, 5:8, 5:8] += 120
    x[labels == 2, :, 3:5, :] += 120
    return x.round().clamp(0, 255).to(torch.uint8), labels


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def trained():
    images, labels = toy_digits(600, seed=0)
    lines = []
    model = train_classifier(images, labels, num_classes=3, epochs=4, batch_size=64, seed=0, log=lines.append)
    return model, lines


def test_training_separates_toy_classes_on_held_out_data(trained):
    model, lines = trained
    test_x, test_y = toy_digits(300, seed=1)
    assert classifier_accuracy(model, test_x, test_y) >= 0.95
    assert len(lines) == 4 and lines[0].startswith("classifier epoch 1/4: loss ")
    assert not model.training


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    images, labels = toy_digits(128, seed=2)
    state = torch.get_rng_state()
    a = train_classifier(images, labels, num_classes=3, epochs=2, batch_size=32, seed=5, log=_quiet)
    assert torch.equal(torch.get_rng_state(), state)
    b = train_classifier(images, labels, num_classes=3, epochs=2, batch_size=32, seed=5, log=_quiet)
    c = train_classifier(images, labels, num_classes=3, epochs=2, batch_size=32, seed=6, log=_quiet)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.head.weight, c.head.weight)


def test_features_and_predict(trained):
    model, _ = trained
    x, _ = toy_digits(37, seed=3)
    unit = x.float() / 255
    f = features(model, x, batch_size=10)
    assert f.shape == (37, 128) and f.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(f, model.embed(unit), atol=1e-6)
        assert torch.equal(predict(model, unit, batch_size=8), model(unit).argmax(1))
    assert torch.allclose(features(model, unit), f)  # uint8 and [0, 1] floats agree


@pytest.mark.parametrize("channels, size, pools", [(1, 8, 1), (1, 28, 2), (3, 32, 2), (3, 64, 2)])
def test_classifier_handles_common_image_sizes(channels, size, pools):
    model = SmallClassifier(channels, 10, size)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.trunk) == pools
    with torch.no_grad():
        logits = model(torch.rand(2, channels, size, size))
    assert logits.shape == (2, 10)
    assert features(model, torch.rand(3, channels, size, size)).shape == (3, model.feature_dim)


def test_input_checks():
    model = SmallClassifier(1, 3, 8)
    with pytest.raises(ConfigError) as err:
        features(model, torch.rand(2, 3, 8, 8))
    assert str(err.value) == "this classifier takes images of shape [N, 1, 8, 8]; got [2, 3, 8, 8]"
    images, labels = toy_digits(10, seed=4)
    with pytest.raises(DataError) as err:
        train_classifier(images, labels + 5, num_classes=3, log=_quiet)
    assert str(err.value).startswith("labels must lie in [0, 2]; got values from 5 to ")
    with pytest.raises(DataError, match="square uint8 images"):
        train_classifier(images.float(), labels, num_classes=3, log=_quiet)


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    save_classifier(model, tmp_path / "clf", accuracy=0.97, meta={"dataset": "toy"})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [INFO_FILE, WEIGHTS_FILE]
    loaded, info = load_classifier(tmp_path / "clf")
    assert info == {
        "format": "ddpm-classifier",
        "version": 1,
        "channels": 1,
        "num_classes": 3,
        "image_size": 8,
        "widths": [32, 64, 128],
        "accuracy": 0.97,
        "meta": {"dataset": "toy"},
    }
    x, _ = toy_digits(20, seed=5)
    assert torch.equal(features(loaded, x), features(model, x))
    assert torch.equal(predict(loaded, x), predict(model, x))


def test_load_refuses_missing_or_damaged_files(trained, tmp_path):
    model, _ = trained
    d = tmp_path / "clf"
    with pytest.raises(CheckpointError) as err:
        load_classifier(d)
    assert str(err.value) == f"{d / INFO_FILE} does not exist; {d} is not a saved classifier directory"

    save_classifier(model, d, accuracy=1.0, meta={})
    weights = (d / WEIGHTS_FILE).read_bytes()
    (d / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CheckpointError) as err:
        load_classifier(d)
    assert str(err.value).startswith(f"{d / WEIGHTS_FILE} is damaged or does not match {d / INFO_FILE} (")

    (d / WEIGHTS_FILE).write_bytes(weights)
    info = json.loads((d / INFO_FILE).read_text())
    (d / INFO_FILE).write_text(json.dumps({**info, "widths": [16, 32, 64]}))
    with pytest.raises(CheckpointError, match="is damaged or does not match"):
        load_classifier(d)

    (d / INFO_FILE).write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        load_classifier(d)
    assert str(err.value) == (
        f"{d / INFO_FILE} is damaged or not a ddpm-classifier file; expected the JSON written by save_classifier"
    )
