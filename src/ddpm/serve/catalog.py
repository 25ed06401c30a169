"""What ``ddpm serve`` can show: the runs it may open (by name only), their models, data and uploads.

A run is a direct sub-directory of the runs directory (hidden names and symbolic links are
skipped, as the folder loader skips them), or the one run named on the command line with
``--run``. Requests name runs, never paths: a name is looked up among these and nothing else,
so no request can reach a file outside them. Models are loaded in the job's worker thread and
kept (the latest two); a run that has saved a newer checkpoint since is loaded again.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import UnidentifiedImageError

from ..config import RunConfig
from ..data import ImageDataset, get_dataset
from ..data.folder import EXTENSIONS, load_image
from ..errors import CheckpointError, ConfigError, DataError, DDPMError
from ..facade import GaussianDiffusion
from ..runs.build import image_size_of
from ..runs.checkpoint import Checkpoint, read_checkpoint
from ..runs.load import load_for_sampling
from ..schedules import Schedule, config_schedule
from ..text import WordTokenizer, check_prompts
from ..text.minilm import WordPieceCounter

RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")


class NotFound(DDPMError):
    """A run, image or job that the server does not have (HTTP 404)."""


class TooLarge(DDPMError):
    """An upload over the size limit (HTTP 413)."""


def conditioning_of(config: RunConfig) -> str:
    """``"class"``, ``"text"`` or ``"none"``: what the run's model is conditioned on (the page
    shows a class picker for ``"class"`` and a prompt box for ``"text"``)."""
    if config.data.text_conditional:
        return "text"
    return "class" if config.data.class_conditional and config.data.num_classes else "none"


@dataclass
class RunInfo:
    """One usable run: its name, directory, latest checkpoint and noise schedule."""

    name: str
    path: Path
    checkpoint: Checkpoint
    schedule: Schedule

    @property
    def config(self) -> RunConfig:
        return self.checkpoint.config

    @property
    def num_classes(self) -> int | None:
        return (self.config.data.num_classes or None) if self.config.data.class_conditional else None

    @property
    def conditioning(self) -> str:
        return conditioning_of(self.config)

    def summary(self) -> dict[str, Any]:
        """What the page's run picker shows, as JSON."""
        c = self.config
        h, w = image_size_of(c)
        return {
            "name": self.name,
            "dataset": c.data.dataset,
            "image_size": [h, w],
            "channels": c.data.channels,
            "step": self.checkpoint.step,
            "conditioning": self.conditioning,
            "num_classes": self.num_classes,
            # the prompt box says the limit the server checks, in the encoder's own tokens
            "text": {"encoder": c.model.text_encoder, "max_tokens": c.model.text_max_tokens}
            if self.conditioning == "text" else None,
            "timesteps": self.schedule.num_timesteps,
            "beta_schedule": c.diffusion.beta_schedule,
            "objective": c.diffusion.objective,
            "sample": {"sampler": c.sample.sampler, "steps": c.sample.steps, "eta": c.sample.eta,
                       "guidance_scale": c.sample.guidance_scale},
        }


class Catalog:
    """The runs under ``runs_dir`` (and ``extra_run``), their models, data sets and uploads."""

    def __init__(self, runs_dir: str | Path | None, extra_run: str | Path | None = None, *, device: str = "auto",
                 keep_models: int = 2, keep_uploads: int = 64, log: Callable[[str], None] = print):
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self.extra = Path(extra_run) if extra_run is not None else None
        self.device = device
        self.log = log
        self._keep_models, self._keep_uploads = keep_models, keep_uploads
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, Path], GaussianDiffusion] = OrderedDict()
        self._datasets: OrderedDict[tuple, ImageDataset] = OrderedDict()
        self._data_lock = threading.Lock()
        self._uploads: OrderedDict[str, tuple[tuple, ImageDataset]] = OrderedDict()
        self._schedules: dict[tuple, Schedule] = {}
        self._tokenizers: dict[tuple, Any] = {}
        if self.extra is not None:
            if not self.extra.is_dir():
                raise ConfigError(f"--run {self.extra} is not a run directory")
            clash = self._listed().get(self.extra.name)
            if clash is not None and clash.resolve() != self.extra.resolve():
                raise ConfigError(
                    f"--run {self.extra} has the same name as {clash}; rename one of them or leave out --run"
                )

    # ---- runs ---------------------------------------------------------------------------

    def _listed(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if self.runs_dir is not None and self.runs_dir.is_dir():
            for entry in sorted(self.runs_dir.iterdir()):
                if entry.is_dir() and not entry.is_symlink() and RUN_NAME.match(entry.name):
                    found[entry.name] = entry
        if self.extra is not None:
            found[self.extra.name] = self.extra
        return found

    @property
    def default_run(self) -> str | None:
        return self.extra.name if self.extra is not None else None

    def runs(self) -> list[dict[str, Any]]:
        """Every run's summary; a run that cannot be opened is listed with ``error`` (one sentence)."""
        out = []
        for name in self._listed():
            try:
                out.append(self.get(name).summary())
            except DDPMError as err:
                out.append({"name": name, "error": str(err)})
        return out

    def get(self, name: str) -> RunInfo:
        """The run called ``name``, read afresh (a run still training shows its latest checkpoint)."""
        path = self._listed().get(name) if isinstance(name, str) and RUN_NAME.match(name) else None
        if path is None:
            where = f"in {self.runs_dir}" if self.runs_dir is not None else "here"
            raise NotFound(f"there is no run called {name!r} {where}; GET /api/runs lists the runs")
        ckpt = read_checkpoint(path)
        if not ckpt.path.resolve().is_relative_to(path.resolve()):
            raise CheckpointError(f"run {name!r} has a checkpoint outside its directory ({ckpt.path}); it is not served")
        d = ckpt.config.diffusion
        key = (d.beta_schedule, d.timesteps, d.zero_terminal_snr, d.beta_start, d.beta_end, d.betas)
        if key not in self._schedules:
            self._schedules[key] = config_schedule(d)
        return RunInfo(name=name, path=path, checkpoint=ckpt, schedule=self._schedules[key])

    def model(self, run: RunInfo) -> GaussianDiffusion:
        """The run's model (EMA weights, eval mode) on the server's device; call from a worker thread."""
        key = (run.name, run.checkpoint.path)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        diffusion, _ = load_for_sampling(run.checkpoint.path, device=self.device)
        with self._lock:
            for old in [k for k in self._models if k[0] == run.name]:
                del self._models[old]  # an older checkpoint of the same run
            self._models[key] = diffusion
            while len(self._models) > self._keep_models:
                self._models.popitem(last=False)
        return diffusion

    # ---- prompts ----------------------------------------------------------------------------

    def check_prompt(self, run: RunInfo, prompt: str) -> None:
        """Refuse (ConfigError) a prompt the run's text encoder would refuse: too many tokens, or
        no words for the built-in encoder. Only the tokenizer is loaded (not the model), so a
        request is checked before its job is queued; call from a worker thread."""
        m = run.config.model
        key = (m.text_encoder, m.text_max_tokens, run.config.data.text_vocab)
        with self._lock:
            tokenizer = self._tokenizers.get(key)
        if tokenizer is None:
            try:
                if m.text_encoder == "builtin":
                    tokenizer = WordTokenizer(run.config.data.text_vocab, m.text_max_tokens, m.builtin_text_dim)
                else:
                    tokenizer = WordPieceCounter(m.text_max_tokens)
            except ConfigError as err:  # a missing package or vocabulary: the run, not the prompt, is at fault
                raise CheckpointError(f"run {run.name!r}'s text encoder cannot be used here ({err})") from None
            with self._lock:
                self._tokenizers[key] = tokenizer
        if isinstance(tokenizer, WordTokenizer):
            tokenizer.encode([prompt])  # check_prompts, then the built-in encoder's own "no words" refusal
        else:
            check_prompts([prompt], tokenizer)

    # ---- images for the forward-process view --------------------------------------------

    def dataset(self, run: RunInfo) -> ImageDataset:
        """The run's training images as it trained on them (never downloaded from here)."""
        d = run.config.data
        key = (d.dataset, d.data_dir, d.cache_dir, tuple(d.image_size), d.channels, d.class_conditional)
        with self._data_lock:
            if key in self._datasets:
                self._datasets.move_to_end(key)
                return self._datasets[key]
            try:
                data = get_dataset(d.dataset, split="train", data_dir=d.data_dir or None, download=False,
                                   cache_dir=d.cache_dir or None, image_size=tuple(d.image_size),
                                   channels=d.channels, class_labels=d.class_conditional, log=self.log)
            except DDPMError as err:
                raise DataError(
                    f"run {run.name!r}'s training images cannot be read here ({err}); upload an image instead"
                ) from None
            self._datasets[key] = data
            while len(self._datasets) > 2:
                self._datasets.popitem(last=False)
            return data

    def add_upload(self, run: RunInfo, data: bytes) -> tuple[str, ImageDataset]:
        """Decode an uploaded file with the folder loader's rules, at the run's size and channels;
        returns its token and the image (uint8, as a one-image data set)."""
        d, size = run.config.data, image_size_of(run.config)
        kinds = ", ".join(e.lstrip(".") for e in EXTENSIONS)
        try:
            array = load_image(io.BytesIO(data), size, d.channels)
        except UnidentifiedImageError:
            raise ConfigError(f"the upload is not an image in a format the folder loader reads ({kinds})") from None
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files; each is one answer
            raise ConfigError(
                f"the upload is not a readable image ({type(err).__name__}: {err}); send a {kinds} file"
            ) from None
        image = ImageDataset(images=torch.from_numpy(np.array(array)[None]), labels=None,
                             class_names=None, name="upload")
        token = secrets.token_hex(8)
        with self._lock:
            self._uploads[token] = ((size, d.channels), image)
            while len(self._uploads) > self._keep_uploads:
                self._uploads.popitem(last=False)
        return token, image

    def image(self, run: RunInfo, ref: str) -> tuple[ImageDataset, int]:
        """``train:INDEX`` (the run's training images) or ``upload:TOKEN`` as (data set, index)."""
        kind, _, key = ref.partition(":") if isinstance(ref, str) else ("", "", "")
        if kind == "train":
            data = self.dataset(run)
            if not (key.isdigit() and int(key) < len(data)):
                raise ConfigError(f"image {ref!r} does not exist; training images run from train:0 to train:{len(data) - 1}")
            return data, int(key)
        if kind == "upload":
            d, size = run.config.data, image_size_of(run.config)
            with self._lock:
                found = self._uploads.get(key)
            if found is None:
                raise NotFound(f"upload {key!r} is not (or no longer) held by the server; upload the image again")
            if found[0] != (size, d.channels):
                raise ConfigError(
                    f"upload {key!r} was decoded for another image size or colour; upload it again for run {run.name!r}"
                )
            return found[1], 0
        raise ConfigError(f"image must be 'train:INDEX' or 'upload:TOKEN'; got {ref!r}")
