"""The Inception-v3 network of FID, in plain torch (no torchvision), and its weights file.

FID numbers are only comparable between papers when they use the same network: the TensorFlow
Inception graph of 2015-12-05 (Heusel et al.'s reference code), which pytorch-fid ported to the
file ``pt_inception-2015-12-05-6726825d.pth``. That graph differs from torchvision's
Inception-v3 in its pooling (TF's average pool ignores padded zeros; the last block max-pools)
and has a 1008-way classifier. :class:`InceptionFeatures` rebuilds it with the same module names
and shapes as that file's state dict, so the file loads with ``strict=True``, and returns the
2048-d pool3 features that FID uses.

The file is never unpickled: :meth:`InceptionFeatures.from_file` loads it with
``torch.load(weights_only=True)``. :func:`download_inception_weights` fetches it once into a
cache directory and checks the SHA-256 prefix that its name carries.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, DataError
from ..fileio import atomic_write, sha256_of

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
# The file name carries the first 8 hex digits of the file's SHA-256 (torch.hub's convention).
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the 2015 TF graph's classifier; FID does not use it
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001, as in TF) -> ReLU. Keys ``conv.*`` and ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 stride-1 average pool that, like TF's, averages only over real (unpadded) pixels."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class MixedA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class ReductionB(nn.Module):
    """Mixed_6a: 35x35 -> 17x17 with 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 768 channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class MixedC(nn.Module):
    """Mixed_6b..6e (17x17): factorized 7x7 convolutions (1x7 then 7x1) -> 768 channels."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            d = layer(d)
        d = self.branch7x7dbl_5(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class ReductionD(nn.Module):
    """Mixed_7a: 17x17 -> 8x8 with 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 1280 channels."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):
    """Mixed_7b/7c (8x8): split 1x3 / 3x1 branches -> 320 + 768 + 768 + 192 = 2048 channels.

    ``pool`` is 'avg' in Mixed_7b and 'max' in Mixed_7c: the 2015 TF graph max-pools in its last
    block (pytorch-fid's FIDInceptionE_2), unlike the paper; FID needs the graph as it is.
    """

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionFeatures(nn.Module):
    """FID's Inception-v3: images ``[N, C, H, W]`` in [0, 1] -> pool3 features ``[N, 2048]`` float32.

    Grayscale (C = 1) is repeated to 3 channels. As pytorch-fid does for FID, images are resized
    to 299x299 (bilinear, ``align_corners=False``) and scaled to [-1, 1]. The state-dict keys
    (``Conv2d_1a_3x3.conv.weight`` ... ``Mixed_7c.branch_pool.bn.running_var``, ``fc.*``) are
    those of ``pt_inception-2015-12-05-6726825d.pth``. Freshly built, the weights are random:
    load real ones with :meth:`from_file`. Call ``.eval()`` (``from_file`` does) before use.
    """

    dim = FEATURE_DIM

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = MixedA(192, pool_features=32)
        self.Mixed_5c = MixedA(256, pool_features=64)
        self.Mixed_5d = MixedA(288, pool_features=64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = MixedC(768, c7=128)
        self.Mixed_6c = MixedC(768, c7=160)
        self.Mixed_6d = MixedC(768, c7=160)
        self.Mixed_6e = MixedC(768, c7=192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = MixedE(1280, pool="avg")
        self.Mixed_7c = MixedE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # stored in the file, unused for FID

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """``[N, 1 or 3, H, W]`` in [0, 1] -> ``[N, 3, 299, 299]`` in [-1, 1] (float32)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(
                f"Inception features need images of shape [N, 1 or 3, H, W]; got {list(images.shape)}"
            )
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def forward(self, images: Tensor) -> Tensor:
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)  # 147 -> 73
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)  # 71 -> 35
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # pool3: [N, 2048]

    @classmethod
    def from_file(cls, path: str | Path) -> "InceptionFeatures":
        """Build the network and load ``path`` (the pytorch-fid weights file), in eval mode.

        The file is read with ``torch.load(weights_only=True)``, so it can hold tensors but no
        code; keys and shapes must match exactly (a missing BatchNorm ``num_batches_tracked``
        counter, unused in eval mode, is tolerated). Any problem is a :class:`CheckpointError`.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"the Inception weights file {path} does not exist; download {FID_WEIGHTS_URL} to it "
                "(or let download_inception_weights fetch it)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # the unpickler raises several types; all mean "not ours"
            raise CheckpointError(
                f"{path} cannot be read as a weights-only PyTorch state dict ({type(exc).__name__}); "
                f"expected the pytorch-fid file {FID_WEIGHTS_NAME}"
            ) from None
        model = cls()
        state = _check_state_dict(path, state, model.state_dict())
        model.load_state_dict(state, strict=True)
        return model.eval()


def _check_state_dict(path: Path, state: object, expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """Return ``state`` if it has exactly the keys and shapes of ``expected``, else raise."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors; expected {FID_WEIGHTS_NAME}")
    state = dict(state)
    for key, want in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):  # only counts training steps
                state[key] = torch.zeros((), dtype=torch.long)
                continue
            raise CheckpointError(f"{path} does not match FID's Inception network: key {key!r} is missing")
        if state[key].shape != want.shape:
            raise CheckpointError(
                f"{path} does not match FID's Inception network: {key!r} has shape "
                f"{list(state[key].shape)} where {list(want.shape)} is needed"
            )
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{path} does not match FID's Inception network: unexpected key {key!r}")
    return state


def download_inception_weights(
    cache_dir: str | Path,
    *,
    url: str = FID_WEIGHTS_URL,
    sha256_prefix: str = FID_WEIGHTS_SHA256_PREFIX,
    filename: str | None = None,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
) -> Path:
    """Return the path of the FID Inception weights in ``cache_dir``, downloading them if needed.

    A file already there is reused when its SHA-256 starts with ``sha256_prefix``. A download is
    streamed to a hidden temporary file in ``cache_dir``, hashed, and renamed into place only
    when the hash matches, so an interrupted or corrupt download never shows up under the real
    name. Failures are retried ``retries`` times in all, ``retry_wait`` seconds apart; then a
    :class:`DataError` says where to put the file by hand.
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    prefix = sha256_prefix.lower()
    by_hand = f"download {url} yourself and put it at {target}"
    if target.is_file():
        actual = sha256_of(target)
        if actual.startswith(prefix):
            return target
        raise DataError(
            f"{target} has SHA-256 {actual[:16]}..., not one starting with {prefix}; delete it or {by_hand}"
        )

    def fetch(tmp: Path) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if not digest.hexdigest().startswith(prefix):
            raise _HashMismatch(digest.hexdigest())

    problem = ""
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(retry_wait)
        try:
            return atomic_write(target, fetch)
        except _HashMismatch as exc:
            problem = f"the downloaded file has SHA-256 {exc.args[0][:16]}..., not one starting with {prefix}"
        except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, cut-offs
            problem = f"the download failed ({exc})"
    raise DataError(f"could not fetch the FID Inception weights: {problem}; {by_hand}")


class _HashMismatch(Exception):
    """A download finished but its content is not the expected file."""
