"""A run's directory: creating it without clobbering, one writer at a time, and metrics.csv."""

from __future__ import annotations

import csv
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from ..fileio import atomic_write

METRICS = ("step", "loss", "lr", "grad_norm", "images_per_s", "elapsed_s", "nonfinite_skipped")


def new_run_dir(runs_dir: str | Path, name: str, dataset: str, *, overwrite: bool = False) -> Path:
    """``runs_dir/name`` (a name made from the data set and the time if empty), created empty.

    An existing run is never replaced unless ``overwrite`` is set.
    """
    if not name:
        base = dataset.split(":")[0].replace("/", "-")
        name = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        candidate, n = name, 1
        while (Path(runs_dir) / candidate).exists():
            n += 1
            candidate = f"{name}-{n}"
        name = candidate
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"run name {name!r} must be a plain directory name")
    path = Path(runs_dir) / name
    if path.exists():
        if not overwrite:
            raise ConfigError(
                f"run directory {path} already exists; choose another --name, continue it with "
                f"--resume {path}, or replace it with --overwrite"
            )
        if path.is_dir():
            # never delete a run that a live process is training in (ConfigError if it is)
            RunLock(path).acquire().release()
            shutil.rmtree(path)
        else:
            path.unlink()
    path.mkdir(parents=True)
    return path


class RunLock:
    """An exclusive lock on a run directory, held while a process trains in it.

    It is an OS file lock (flock) on ``.lock``: the kernel releases it when the process ends,
    however it ends, so a crash never leaves the run locked.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> "RunLock":
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()}")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class MetricsLog:
    """Rows of metrics.csv, appended and flushed one at a time (also kept in memory for plots)."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    try:
                        parsed = {k: float(row[k]) for k in METRICS if row.get(k) not in (None, "")}
                    except ValueError:
                        continue  # a line cut short by a crash
                    if len(parsed) == len(METRICS) and parsed["step"] <= resume_step:
                        self.rows.append(parsed)
        # rewrite: rows after the checkpoint we resume from are dropped, they will be redone;
        # atomically, so that a crash right now cannot lose the rows before it
        atomic_write(self.path, self._write_rows)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._fh, fieldnames=METRICS)

    def _write_rows(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow(_formatted(row))

    def append(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        self._writer.writerow(_formatted(row))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _formatted(row: dict[str, float]) -> dict[str, str]:
    out = {}
    for k in METRICS:
        v = row[k]
        out[k] = str(int(v)) if k in ("step", "nonfinite_skipped") else f"{v:.6g}"
    return out
