"""Where the training loop's batches come from: images held in memory, or a folder streamed by
DataLoader workers.

The loop asks ``source.get(m)`` for micro-batch ``m``. Which images that is comes from the
:class:`~ddpm.training.batches.BatchPlan`, a function of the seed and ``m`` alone, so every source
gives the same batch for the same ``m`` however the run got there: from the start, resumed from a
checkpoint, or after a worker process died and was replaced.
"""

from __future__ import annotations

import copy
import os
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from ..data.stream import FolderStream, Note, collate
from ..errors import DataError
from .batches import BatchPlan

MAX_WORKER_RESTARTS = 3  # per batch: a worker that keeps dying is a real problem, not bad luck


@dataclass
class Batch:
    images: Tensor  # float32 [B, C, H, W] in [-1, 1], on the device
    labels: Tensor | None  # int64 [B] on the device, when the data set has labels
    indices: Tensor  # int64 [B] on the CPU: the data set's images in the batch (for their captions)


class MemorySource:
    """Batches indexed out of an :class:`~ddpm.data.base.ImageDataset` held in memory."""

    def __init__(self, data, plan: BatchPlan, device: torch.device):
        self.data, self.plan, self.device = data, plan, device

    def get(self, m: int) -> Batch:
        idx = self.plan.indices(m)
        images = self.data.to_float(idx).to(self.device, non_blocking=True)
        labels = self.data.labels[idx].to(self.device) if self.data.labels is not None else None
        return Batch(images, labels, idx)

    def close(self) -> None:
        pass


class PlanBatches(Sampler):
    """The index lists of micro-batches ``start``, ``start + 1``, ... without end (a batch sampler)."""

    def __init__(self, plan: BatchPlan, start: int):
        self.plan, self.start = copy.copy(plan), start  # its own copy: it runs ahead of the loop

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            yield self.plan.indices(m).tolist()
            m += 1


def default_workers(setting: int) -> int:
    """``num_workers`` as set (0: decode in the training process), or for -1 ("auto") half the
    CPU cores this process may use, between 1 and 8: decoding gets cores without starving the
    training step, which also runs on CPU cores (all of them on a machine without a GPU)."""
    if setting >= 0:
        return setting
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus // 2))


class StreamingSource:
    """Batches of a :class:`~ddpm.data.stream.FolderStream`, decoded ahead by worker processes.

    One DataLoader iterator serves the whole run (its batch sampler has no end, so the workers
    persist across epochs). A worker that dies (killed, out of memory) surfaces as an error of
    the next batch; the source then starts new workers at that same micro-batch, so the run goes
    on with exactly the batches it would have had. Unreadable files are named once and counted.
    """

    def __init__(self, data: FolderStream, plan: BatchPlan, device: torch.device, *, num_workers: int,
                 log: Callable[[str], None]):
        self.data, self.plan, self.device, self.log = data, plan, device, log
        self.num_workers = default_workers(num_workers)
        self.skipped = 0
        self._seen: set[tuple[str, str]] = set()
        self._loader: DataLoader | None = None
        self._iter: Iterator | None = None
        self._next = -1

    def _start(self, m: int) -> None:
        self.close()
        workers = self.num_workers
        self._loader = DataLoader(
            self.data, batch_sampler=PlanBatches(self.plan, m), num_workers=workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGCHLD) if in_main else None
        self._iter = iter(self._loader)
        if in_main and workers > 0:
            # DataLoader installs a SIGCHLD handler that raises a worker's death as an exception at
            # whatever line the main thread is running, mid-update perhaps. Without it the death
            # surfaces in next() below, at a batch boundary, where the workers can be restarted
            # (DataLoader's own periodic status check still finds it, within a few seconds).
            signal.signal(signal.SIGCHLD, previous if previous is not None else signal.SIG_DFL)
        self._next = m

    def get(self, m: int) -> Batch:
        restarts = 0
        while True:
            if self._iter is None or m != self._next:
                self._start(m)
            try:
                images, labels, notes, indices = next(self._iter)
                break
            except (RuntimeError, ConnectionError, EOFError) as err:
                # a worker's death shows as DataLoader's RuntimeError, or, when it dies while sending
                # a batch, as the reset of the pipe it was writing to
                if isinstance(err, RuntimeError) and "exited unexpectedly" not in str(err):
                    raise
                if restarts >= MAX_WORKER_RESTARTS:
                    raise DataError(f"data loader workers died {restarts + 1} times on one batch ({err}); "
                                    "lower --num-workers, or use 0 to decode in the training process") from None
                restarts += 1
                self.log(f"warning: a data loader worker stopped ({err}); new workers continue from the same batch")
                self.close()
        self._next = m + 1
        self._report(notes)
        x = images.to(self.device, non_blocking=True).to(torch.float32) / 127.5 - 1.0
        return Batch(x, labels.to(self.device, non_blocking=True) if self.data.labels is not None else None, indices)

    def _report(self, notes: list[Note]) -> None:
        for kind, key, message in notes:
            if (kind, key) in self._seen:
                continue
            self._seen.add((kind, key))
            if kind == "unreadable":
                self.skipped += 1
                self.log(f"skipping unreadable image {key} ({message}); {self.skipped} so far, each replaced in "
                         "its batch by the next readable image")
            else:
                self.log(f"warning: {message}")

    def close(self) -> None:
        it, self._iter, self._loader = self._iter, None, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def open_source(data, plan: BatchPlan, device: torch.device, *, num_workers: int, log: Callable[[str], None]):
    """The source of ``data``'s batches: streamed for a :class:`FolderStream`, else from memory."""
    if isinstance(data, FolderStream):
        return StreamingSource(data, plan, device, num_workers=num_workers, log=log)
    return MemorySource(data, plan, device)


__all__ = ["Batch", "MemorySource", "PlanBatches", "StreamingSource", "default_workers", "open_source"]
