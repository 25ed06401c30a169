"""What a run needs before its first step: its data (and what the data implies for the config),
a check that a resumed run is the same run, and a polite way to stop."""

from __future__ import annotations

import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..config import RunConfig, resolved_guidance
from ..data import ImageDataset, get_dataset
from ..data.stream import STREAM_ABOVE_BYTES, FolderStream, open_folder_stream
from ..errors import CheckpointError, ConfigError
from ..runs.checkpoint import Checkpoint, list_checkpoints
from .distributed import Distributed

RESUME_MAY_CHANGE = {("data", "data_dir"), ("data", "cache_dir"), ("data", "download"), ("model", "grad_checkpoint"),
                     ("model", "attn_impl"), ("data", "num_workers"), ("data", "cache_resized")}
"""Settings that do not change what is trained (where files are, how memory is spent)."""


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def resolved_class_conditional(d) -> bool:
    """``class_conditional`` with auto (None) decided: on for the MNIST digits (mnist10k, the
    default data set, and mnist), which take shape far sooner with their labels (measured in
    benchmarks/README.md); off for the other data sets, whose gain was not measured."""
    if d.class_conditional is None:
        return d.dataset in ("mnist10k", "mnist") and not d.text_conditional
    return d.class_conditional


def resolve_data(config: RunConfig, dist: Distributed, log: Callable[[str], None]) -> tuple[ImageDataset | FolderStream, RunConfig]:
    """Load the training images and write what they imply (size, channels, classes) into the
    config, with paths made absolute so that a resumed run reads the same files from anywhere."""
    d = config.data
    dataset = d.dataset
    if dataset.startswith("folder:"):
        dataset = "folder:" + _absolute(dataset[len("folder:"):])
    d = replace(d, dataset=dataset, data_dir=_absolute(d.data_dir), cache_dir=_absolute(d.cache_dir),
                class_conditional=resolved_class_conditional(d))

    size = (d.image_size[0] if len(d.image_size) == 1 else tuple(d.image_size)) if d.image_size else None
    is_folder = d.dataset.startswith("folder:")
    if d.stream and not is_folder:
        raise ConfigError(f"--stream applies to folder:PATH data sets; {d.dataset!r} is read into memory (use --no-stream)")

    def load() -> ImageDataset | FolderStream:
        if is_folder and d.stream is not False and size is not None:
            hw = (size, size) if isinstance(size, int) else size
            # auto: a folder small enough to hold is read into memory below, and only that is logged
            stream = open_folder_stream(d.dataset[len("folder:"):], hw, d.channels or 3, class_labels=d.class_conditional,
                                        cache_resized=d.cache_resized, cache_dir=d.cache_dir or None, log=log,
                                        stream_above=None if d.stream else STREAM_ABOVE_BYTES)
            if stream is not None:
                return stream
        return get_dataset(
            d.dataset,
            split="train",
            data_dir=d.data_dir or None,
            download=d.download,
            cache_dir=d.cache_dir or None,
            image_size=size,
            channels=d.channels or None,
            class_labels=d.class_conditional or d.text_conditional,  # label-derived captions need the labels
            log=log,
        )

    if dist.enabled and d.download:  # rank 0 downloads; the others read what it fetched
        data = load() if dist.is_main else None
        dist.barrier()
        data = data if data is not None else load()
    else:
        data = load()
    if d.class_conditional and data.labels is None and config.train.init_from:
        raise ConfigError(f"the run being fine-tuned ({config.train.init_from}) is class-conditional, and data set "
                          f"{d.dataset!r} has no class labels; give a folder with one sub-folder per class")
    if d.class_conditional and data.labels is None:
        raise ConfigError(f"--class-conditional needs class labels, and data set {d.dataset!r} has none")
    d = replace(
        d,
        image_size=tuple(data.image_shape[-2:]),
        channels=int(data.image_shape[0]),
        num_classes=int(data.num_classes or 0) if d.class_conditional else 0,
    )
    sample = replace(config.sample, guidance_scale=resolved_guidance(config.sample.guidance_scale, d.class_conditional))
    return data, replace(config, data=d, sample=sample)


def check_resume(saved: RunConfig, wanted: RunConfig, checkpoint: Checkpoint,
                 sections: tuple[str, ...] = ("model", "diffusion", "data")) -> None:
    """Only run-time settings may change on resume; the model, the process and the data (the
    ``sections``) must not; and the run must continue from its latest checkpoint."""
    if saved.distill.teacher and "distill" not in sections:  # ddpm train on a student
        raise CheckpointError(
            f"{checkpoint.path} belongs to a student distilled from {saved.distill.teacher}; continue it with "
            f"ddpm distill --resume {checkpoint.path.parent.parent}"
        )
    for section in sections:
        a, b = getattr(saved, section), getattr(wanted, section)
        for name in a.__dataclass_fields__:
            if getattr(a, name) != getattr(b, name) and (section, name) not in RESUME_MAY_CHANGE:
                raise CheckpointError(
                    f"the checkpoint in {checkpoint.path} was trained with {section}.{name} = {getattr(a, name)!r}, "
                    f"not {getattr(b, name)!r}; resume with the run's own settings"
                )
    latest = list_checkpoints(checkpoint.path.parent.parent)
    if latest and latest[-1] != checkpoint.path:
        raise CheckpointError(
            f"{checkpoint.path} is not the run's latest checkpoint ({latest[-1].name}); resuming from it would "
            "mix two histories in one run: resume the run itself, or copy that checkpoint into a new run directory"
        )


class StopRequest:
    """Ctrl-C or SIGTERM asks training to stop at the end of the current step, after a
    checkpoint; a second Ctrl-C stops at once (without one). Only in the main thread."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
