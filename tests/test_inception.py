import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddpm.errors import CheckpointError, ConfigError, DataError
from ddpm.eval.inception import (
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_URL,
    InceptionFeatures,
    _tf_avg_pool,
    download_inception_weights,
)


def _random_network(seed: int) -> InceptionFeatures:
    """Random weights and random BatchNorm statistics, so that a load is visible in the output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = InceptionFeatures()
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A state dict with random weights in the pytorch-fid file's layout, and its network."""
    net = _random_network(0)
    path = tmp_path_factory.mktemp("inception") / FID_WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path, net


def test_architecture_matches_pytorch_fid_inception():
    net = InceptionFeatures()
    n_params = sum(p.numel() for p in net.parameters())
    n_fc = sum(p.numel() for p in net.fc.parameters())
    assert n_fc == 2048 * 1008 + 1008
    assert n_params == 23_850_960
    # torchvision's Inception-v3 is the same trunk plus AuxLogits (768->128 1x1, 128->768 5x5,
    # each with BatchNorm, and a 768->1000 linear) and a 1000-way fc; its documented size is
    # 27,161,264 parameters.
    aux = 768 * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000
    assert n_params - n_fc + aux + 2048 * 1000 + 1000 == 27_161_264
    keys = list(net.state_dict())
    assert len(keys) == 94 * 6 + 2  # 94 conv+BN units (weight, 4 BN entries, counter) and fc
    assert keys[:6] == [
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_1a_3x3.bn.weight",
        "Conv2d_1a_3x3.bn.bias",
        "Conv2d_1a_3x3.bn.running_mean",
        "Conv2d_1a_3x3.bn.running_var",
        "Conv2d_1a_3x3.bn.num_batches_tracked",
    ]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    sd = net.state_dict()
    assert sd["Mixed_6b.branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)
    assert sd["Mixed_7a.branch3x3_2.conv.weight"].shape == (320, 192, 3, 3)
    assert sd["Mixed_7c.branch3x3dbl_1.conv.weight"].shape == (448, 2048, 1, 1)
    assert net.Conv2d_1a_3x3.bn.eps == 0.001


def test_tf_average_pool_ignores_padding():
    # TF's average pool divides by the number of real pixels, so a constant image stays constant
    # at the border (torch's default would give 4/9 in the corners).
    x = torch.ones(1, 2, 5, 5)
    assert torch.equal(_tf_avg_pool(x), x)
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    assert _tf_avg_pool(x)[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 3 + 4) / 4)


def test_preprocess_resizes_and_scales():
    img = torch.full((2, 1, 28, 28), 0.25)
    x = InceptionFeatures.preprocess(img)
    assert x.shape == (2, 3, 299, 299)
    assert torch.allclose(x, torch.full_like(x, -0.5))
    rgb = torch.rand(1, 3, 32, 32)
    expected = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.equal(InceptionFeatures.preprocess(rgb), expected)
    with pytest.raises(ConfigError) as err:
        InceptionFeatures.preprocess(torch.rand(1, 2, 8, 8))
    assert str(err.value) == "Inception features need images of shape [N, 1 or 3, H, W]; got [1, 2, 8, 8]"


def test_from_file_loads_the_weights_and_gives_pool3_features(weights):
    path, original = weights
    net = InceptionFeatures.from_file(path)
    assert not net.training
    for key, value in original.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    gen = torch.Generator().manual_seed(1)
    rgb = torch.rand(2, 3, 32, 32, generator=gen)
    gray = torch.rand(2, 1, 28, 28, generator=gen)
    with torch.inference_mode():
        feats = net(rgb)
        gray_feats = net(gray)
        gray_as_rgb = net(gray.repeat(1, 3, 1, 1))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert (feats >= 0).all()  # pool3 averages ReLU outputs
    assert gray_feats.shape == (2, 2048) and gray_feats.dtype == torch.float32
    assert torch.equal(gray_feats, gray_as_rgb)


def test_from_file_tolerates_missing_batchnorm_counters(weights, tmp_path):
    path, original = weights
    state = {k: v for k, v in original.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    InceptionFeatures.from_file(tmp_path / "old.pth")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.__setitem__("Mixed_6b.branch7x7_2.conv.weight", torch.zeros(128, 128, 7, 1)),
            "does not match FID's Inception network: 'Mixed_6b.branch7x7_2.conv.weight' has shape "
            "[128, 128, 7, 1] where [128, 128, 1, 7] is needed",
        ),
        (lambda s: s.pop("fc.bias"), "does not match FID's Inception network: key 'fc.bias' is missing"),
        (
            lambda s: s.__setitem__("AuxLogits.fc.weight", torch.zeros(1000, 768)),
            "does not match FID's Inception network: unexpected key 'AuxLogits.fc.weight'",
        ),
    ],
)
def test_from_file_refuses_mismatched_state_dicts(weights, tmp_path, change, message):
    _, original = weights
    state = dict(original.state_dict())
    change(state)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(CheckpointError) as err:
        InceptionFeatures.from_file(bad)
    assert str(err.value) == f"{bad} {message}"


class _Payload:
    """Unpickling this object opens (and so creates) the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_from_file_never_unpickles_code(tmp_path):
    # The payload is live: an ordinary unpickle would create the marker.
    probe = tmp_path / "probe-marker"
    pickle.loads(pickle.dumps({"x": _Payload(probe)}))
    assert probe.exists()

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048), "x": _Payload(marker)}, evil)
    with pytest.raises(CheckpointError) as err:
        InceptionFeatures.from_file(evil)
    assert str(err.value) == (
        f"{evil} cannot be read as a weights-only PyTorch state dict (UnpicklingError); "
        f"expected the pytorch-fid file {FID_WEIGHTS_NAME}"
    )
    assert not marker.exists()


def test_from_file_refuses_other_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read as a weights-only PyTorch state dict"):
        InceptionFeatures.from_file(garbage)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(CheckpointError) as err:
        InceptionFeatures.from_file(listed)
    assert str(err.value) == f"{listed} does not hold a state dict of tensors; expected {FID_WEIGHTS_NAME}"
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError) as err:
        InceptionFeatures.from_file(missing)
    assert str(err.value) == (
        f"the Inception weights file {missing} does not exist; download {FID_WEIGHTS_URL} to it "
        "(or let download_inception_weights fetch it)"
    )


# ------------------------------------------------------------------------------ downloader


@pytest.fixture
def server(weights):
    """A local HTTP server: /weights.pth serves the test's weights file, anything else is 404."""
    body = weights[0].read_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/weights.pth":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", body, hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_caches_and_loads(server, tmp_path):
    base, body, hits = server
    sha = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    path = download_inception_weights(cache, url=f"{base}/weights.pth", sha256_prefix=sha[:8], retry_wait=0)
    assert path == cache / "weights.pth"
    assert path.read_bytes() == body
    assert sorted(p.name for p in cache.iterdir()) == ["weights.pth"]  # no temporary file left
    assert hits == ["/weights.pth"]
    again = download_inception_weights(cache, url=f"{base}/weights.pth", sha256_prefix=sha, retry_wait=0)
    assert again == path and hits == ["/weights.pth"]  # reused, not fetched again
    InceptionFeatures.from_file(path)


def test_download_refuses_a_hash_mismatch(server, tmp_path):
    base, body, hits = server
    wrong = "0" * 8 if not hashlib.sha256(body).hexdigest().startswith("0" * 8) else "f" * 8
    cache = tmp_path / "cache"
    url = f"{base}/weights.pth"
    with pytest.raises(DataError) as err:
        download_inception_weights(cache, url=url, sha256_prefix=wrong, retries=2, retry_wait=0)
    actual = hashlib.sha256(body).hexdigest()
    assert str(err.value) == (
        f"could not fetch the FID Inception weights: the downloaded file has SHA-256 {actual[:16]}..., "
        f"not one starting with {wrong}; download {url} yourself and put it at {cache / 'weights.pth'}"
    )
    assert len(hits) == 2  # retried
    assert list(cache.iterdir()) == []  # nothing under the real name, no temporary file


def test_download_reports_http_errors_and_bad_cached_files(server, tmp_path):
    base, body, hits = server
    url = f"{base}/missing.pth"
    with pytest.raises(DataError) as err:
        download_inception_weights(tmp_path, url=url, retries=3, retry_wait=0)
    assert str(err.value).startswith("could not fetch the FID Inception weights: the download failed (HTTP Error 404")
    assert str(err.value).endswith(f"download {url} yourself and put it at {tmp_path / 'missing.pth'}")
    assert len(hits) == 3
    (tmp_path / "weights.pth").write_bytes(b"truncated")
    with pytest.raises(DataError, match=r"weights.pth has SHA-256 [0-9a-f]{16}\.\.\., not one starting with"):
        download_inception_weights(tmp_path, url=f"{base}/weights.pth", sha256_prefix="6726825d")
    assert len(hits) == 3
